"""Malformed RTP/RTCP inside a valid SRTP session: dropped, counted, logged rarely; calls go on.

A "vandal" joins a real server with a real aiortc publish connection (ICE, DTLS, SRTP
keys all genuine) and then sends, protected with its real SRTP session, RTP and RTCP
that Parley must parse: packets whose header-extension element overruns its block
(issue 12's flood), and random mutations of Chromium's real packets
(``tests/fixtures/chromium_publish_rtp.jsonl``) re-addressed to the vandal's streams:
truncations, bad versions, CSRC counts, extension lengths, padding lengths, VP8
descriptors, RTCP lengths and types, compound garbage. Meanwhile real ``parley bot``
calls go on in another room and in the vandal's own room.

The server must drop every malformed packet where it is parsed, count it (per
participant and reason, and in ``/healthz``), log at most one line per participant per
interval with no traceback, never log an unexpected exception, and leave every call's
good packets flowing. ``PARLEY_MEDIA_FUZZ_PACKETS`` (default 3000) sets how many
mutated packets the fuzz test sends; e.g. 100000 for a long run outside ``make test``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from loadgen.bot import BotConfig, run_bot
from sfu.aiortc_adapter import MediaPort, create_peer_connection, describe_remote_media
from sfu.config import IceConfig, SfuConfig
from sfu.participant import Participant
from sfu.rtp.extensions import AUDIO_LEVEL_URI, MID_URI
from sfu.rtp.packet import RtpView, build_extension_block, build_rtp_header
from signaling.server import ServerConfig
from tests.fakes import load_capture

from .conftest import RunningServer, ServerFactory

CAPTURE = Path(__file__).resolve().parents[1] / "fixtures" / "chromium_publish_rtp.jsonl"
FUZZ_PACKETS = int(os.environ.get("PARLEY_MEDIA_FUZZ_PACKETS", "3000"))
#: the server's malformed-packet log interval in these tests (s)
LOG_INTERVAL = 2.0


class Vandal:
    """A participant with a genuine SRTP publish session that it fills with junk."""

    def __init__(self, server: RunningServer, room: str, name: str) -> None:
        self.server = server
        self.room = room
        self.name = name
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pc = create_peer_connection(IceConfig())
        self.port: MediaPort | None = None
        #: kind -> (ssrc, payload type, {extension uri: id})
        self.streams: dict[str, tuple[int, int, dict[str, int]]] = {}
        self.sent = 0
        self.refused = 0  # libsrtp would not protect it (it checks header lengths too)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(f"{self.server.url}/ws")
        await self.ws.send_json({"type": "join", "room": self.room, "name": self.name})
        assert (await self._next("joined"))["type"] == "joined"
        self.pc.addTransceiver("audio", direction="sendonly")
        self.pc.addTransceiver("video", direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.ws.send_json({"type": "publish_offer", "sdp": self.pc.localDescription.sdp})
        answer = await self._next("publish_answer")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        offered = {m.kind: m for m in describe_remote_media(self.pc.localDescription.sdp)}
        for media in aiortc_sdp.SessionDescription.parse(answer["sdp"]).media:
            codec = media.rtp.codecs[0]
            assert codec.payloadType is not None
            extensions = {e.uri: e.id for e in media.rtp.headerExtensions}
            ssrc = offered[media.kind].ssrcs[0][0]
            self.streams[media.kind] = (ssrc, codec.payloadType, extensions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while self.pc.connectionState != "connected":
            assert loop.time() < deadline, "the vandal's connection did not come up"
            await asyncio.sleep(0.05)
        transport = self.pc.getTransceivers()[0].sender.transport
        self.port = MediaPort(transport, lambda _d, _t: None, lambda _d, _t: None)
        # keep reading the websocket, as any client does: that is also what answers the
        # server's heartbeat pings
        self._reader = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        assert self.ws is not None
        async for _ in self.ws:
            pass

    async def _next(self, wanted: str) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            message = json.loads((await self.ws.receive(timeout=10)).data)
            if message["type"] in (wanted, "error"):
                return message

    def participant(self) -> Participant:
        room = self.server.sfu.rooms[self.room]
        return next(p for p in room.participants.values() if p.name == self.name)

    def send(self, packet: bytes) -> None:
        assert self.port is not None
        if self.port.send(packet):
            self.sent += 1
        else:
            self.refused += 1

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.port is not None:
            self.port.close()
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        await self.pc.close()


# ------------------------------------------------------------------ packets


def capture_packets() -> tuple[list[tuple[str, RtpView]], list[bytes], dict[int, str]]:
    """Chromium's media packets (audio PT 111, VP8 PT 96; RTX left out), its RTCP, and
    the capture's extension ids."""
    header, records = load_capture(CAPTURE)
    extmap = {int(k): v for k, v in header["extmap"].items()}
    rtp: list[tuple[str, RtpView]] = []
    rtcp: list[bytes] = []
    for record in records:
        data = bytes.fromhex(record["hex"])
        if record["kind"] == "rtcp":
            rtcp.append(data)
            continue
        view = RtpView(data)
        if view.payload_type in (111, 96) and view.payload_size:
            rtp.append(("audio" if view.payload_type == 111 else "video", view))
    return rtp, rtcp, extmap


def adopt(view: RtpView, kind: str, vandal: Vandal, extmap: dict[int, str], seq: int) -> bytes:
    """A capture packet re-addressed to the vandal's stream of ``kind``: its SSRC, payload
    type and extension ids, a sequence number of our own. A valid packet."""
    ssrc, pt, ids = vandal.streams[kind]
    elements = [
        (ids[extmap[i]], value)
        for i, value in view.extensions().items()
        if extmap.get(i) in ids and extmap[i] != MID_URI
    ]
    block = build_extension_block(elements)
    return build_rtp_header(view.marker, pt, seq & 0xFFFF, view.timestamp, ssrc, block) + (
        view.payload()
    )


def overrunning(vandal: Vandal, kind: str, uri: str, seq: int, ssrc: int | None = None) -> bytes:
    """Issue 12's packet: a one-byte element of extension ``uri`` claiming 16 bytes of a
    4-byte block. The block fits the packet, so libsrtp passes it on."""
    own_ssrc, pt, ids = vandal.streams[kind]
    block = b"\xbe\xde\x00\x01" + bytes([(ids[uri] << 4) | 0x0F, 0x11, 0x22, 0x33])
    header = build_rtp_header(0, pt, seq & 0xFFFF, 960 * seq, ssrc or own_ssrc, block)
    assert header[0] & 0x10  # the X bit
    return header + b"\x01payload"


def _set_ext_bit(b: bytearray) -> None:
    b[0] |= 0x10


def mutate_rtp(rng: random.Random, packet: bytes, vandal: Vandal) -> bytes:
    b = bytearray(packet)
    csrc_end = 12 + 4 * (b[0] & 0x0F)
    choice = rng.randrange(10)
    if choice == 0:  # truncation
        return bytes(b[: rng.randrange(len(b))])
    if choice == 1:  # another version (never reaches the RTP path: it must be ignored)
        b[0] = (b[0] & 0x3F) | (rng.choice((0, 1, 3)) << 6)
    elif choice == 2:  # a CSRC count the packet may not hold
        b[0] = (b[0] & 0xF0) | rng.randrange(1, 16)
    elif choice == 3:  # an extension block length past the end, or a bogus profile
        if b[0] & 0x10 and len(b) >= csrc_end + 4:
            b[csrc_end + 2 : csrc_end + 4] = rng.randrange(0x10000).to_bytes(2, "big")
        else:
            _set_ext_bit(b)
            b[csrc_end:csrc_end] = rng.choice((b"\xbe\xde", b"\x10\x00", b"\x12\x34")) + bytes(
                (0, rng.randrange(4))
            )
    elif choice == 4:  # an element overrunning its block, one-byte or two-byte form
        ext_id = rng.choice([*vandal.streams["audio"][2].values(), rng.randrange(1, 15)])
        if rng.random() < 0.5:
            element = bytes([(ext_id << 4) | rng.randrange(4, 16)]) + bytes(3)
            block = b"\xbe\xde\x00\x01" + element
        else:
            block = b"\x10\x00\x00\x01" + bytes([ext_id, rng.randrange(3, 256)]) + bytes(2)
        b = bytearray(bytes(b[:12]) + block + bytes(b[12:]))
        b[0] = (b[0] & 0xE0) | 0x10  # no CSRC, the block
    elif choice == 5:  # padding lengths: zero, the whole packet, more
        b[0] |= 0x20
        b[-1] = rng.choice((0, len(b) & 0xFF, 255, rng.randrange(256)))
    elif choice == 6:  # VP8 descriptors cut short or flagged for bytes that are not there
        view = RtpView(packet)
        desc = rng.choice(
            (b"\x80", b"\x90\x80", b"\x90\xc0\x80", b"\x90\xff", b"\x90\x80\x80", b"\x90\x20")
        )
        tail = b"" if rng.random() < 0.5 else bytes(rng.randrange(3))
        b = bytearray(packet[: view.payload_start] + desc + tail)
        b[0] &= 0xDF
    elif choice == 7:  # flipped bits anywhere but in the sequence number: a jump there
        # would put the sender's SRTP index ahead, and libsrtp would then refuse to
        # protect (as a replay) every packet after it
        for _ in range(rng.randrange(1, 5)):
            i = rng.choice((0, 1, *range(4, len(b))))
            b[i] ^= 1 << rng.randrange(8)
    elif choice == 8:  # a payload type of the other stream, or of RTCP's range
        b[1] = (b[1] & 0x80) | rng.choice((vandal.streams["video"][1], rng.randrange(128)))
    else:  # the same payload, no header left but a few bytes
        return bytes(b[: rng.randrange(12, 16)])
    return bytes(b)


def mutate_rtcp(rng: random.Random, packet: bytes, ssrc: int) -> bytes:
    b = bytearray(packet)
    choice = rng.randrange(8)
    if choice == 0:  # truncation (keeping the header and SSRC SRTCP needs)
        return bytes(b[: rng.randrange(8, len(b))]) if len(b) > 8 else bytes(b)
    if choice == 1:  # a length field past (or short of) the end
        b[2:4] = rng.randrange(0x10000).to_bytes(2, "big")
    elif choice == 2:  # another type in RTCP's range
        b[1] = rng.randrange(192, 224)
    elif choice == 3:  # report counts the packet does not hold
        b[0] = (b[0] & 0xE0) | rng.randrange(32)
    elif choice == 4:  # padding
        b[0] |= 0x20
        b[-1] = rng.choice((0, 255, rng.randrange(256)))
    elif choice == 5:  # a valid compound with garbage after it
        b += rng.randbytes(rng.randrange(1, 40))
    elif choice == 6:  # feedback with junk FCI: PLI, FIR, REMB (bad prefix), NACK
        fmt, pt = rng.choice(((1, 206), (4, 206), (15, 206), (1, 205)))
        fci = rng.randbytes(4 * rng.randrange(4))
        if fmt == 15 and rng.random() < 0.5:
            fci = b"REMB" + bytes([rng.randrange(256)]) + rng.randbytes(3 + 4 * rng.randrange(3))
        body = ssrc.to_bytes(4, "big") + rng.randbytes(4) + fci
        b = bytearray(bytes((0x80 | fmt, pt)) + (len(body) // 4).to_bytes(2, "big") + body)
        if rng.random() < 0.3:
            b[2:4] = rng.randrange(0x10000).to_bytes(2, "big")
    else:  # flipped bytes after the SSRC
        for _ in range(rng.randrange(1, 5)):
            i = rng.randrange(8, len(b)) if len(b) > 8 else 0
            b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


# ------------------------------------------------------------------ checks


def _unexpected(records: list[logging.LogRecord]) -> list[str]:
    """Log records no malformed packet may cause: tracebacks, errors."""
    return [
        f"{r.name} {r.levelname} {r.getMessage()[:200]}"
        for r in records
        if r.exc_info is not None or r.levelno >= logging.ERROR
    ]


def _malformed_lines(records: list[logging.LogRecord], who: str) -> list[str]:
    return [
        r.getMessage()
        for r in records
        if r.name == "sfu.participant" and "malformed" in r.getMessage() and who in r.getMessage()
    ]


def _good_call(summary: dict[str, Any], peers: set[str]) -> None:
    """The bot decoded its fellow bots ``peers`` (the vandal's tracks carry junk)."""
    assert summary["errors"] == [], summary["errors"]
    tracks = [t for t in summary["tracks"] if t["participant_name"] in peers]
    assert len(tracks) == 2 * len(peers), summary["tracks"]
    for track in tracks:
        said = {k: track.get(k) for k in ("participant_name", "kind", "packets", "packets_lost")}
        said.update({k: track.get(k) for k in ("frames_decoded", "max_freeze_ms")})
        assert track["frames_decoded"] > 20, said
        if track["kind"] == "video":
            assert track["max_freeze_ms"] < 1500, said


@pytest.fixture
def unretrieved() -> Any:
    """Task exceptions asyncio would report as never retrieved (checked after gc)."""
    loop = asyncio.get_event_loop_policy().get_event_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    yield reported
    loop.set_exception_handler(previous)


# ------------------------------------------------------------------ tests


async def test_overrunning_extensions_are_dropped_counted_and_logged_once_per_interval(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: before, each of these packets logged a full traceback (about 1 KB)."""
    caplog.set_level(logging.INFO)
    server = await server_factory(ServerConfig(sfu=SfuConfig(malformed_log_interval=LOG_INTERVAL)))
    rtp, _, extmap = capture_packets()
    audio = [view for kind, view in rtp if kind == "audio"]
    bots = [
        asyncio.ensure_future(run_bot(BotConfig(url=server.url, room="x", name=n, duration=9.0)))
        for n in ("ann", "bob")
    ]
    await asyncio.sleep(1.5)
    vandal = Vandal(server, "x", "vandal")
    await vandal.start()
    participant = vandal.participant()
    audio_source = next(t for t in participant.tracks.values() if t.kind == "audio").source
    loop = asyncio.get_running_loop()
    started = loop.time()
    bad = good = 0
    seq = 1
    try:
        # 4.5 s at about 1000 packets/s: every fifth packet good audio, the others issue
        # 12's packet on the audio stream (audio level) and on an unknown SSRC (the MID
        # the router learns from)
        while loop.time() - started < 4.5:
            for _ in range(20):
                if seq % 5 == 0:
                    vandal.send(adopt(audio[seq % len(audio)], "audio", vandal, extmap, seq))
                    good += 1
                elif seq % 5 in (1, 2):
                    vandal.send(overrunning(vandal, "audio", AUDIO_LEVEL_URI, seq))
                    bad += 1
                else:
                    vandal.send(overrunning(vandal, "audio", MID_URI, seq, ssrc=0xBAD0 + seq % 7))
                    bad += 1
                seq += 1
            await asyncio.sleep(0.02)
        elapsed = loop.time() - started
        assert vandal.refused == 0  # libsrtp protected them all: they reached Parley
        await asyncio.sleep(0.5)
        counters = participant.counters
        assert counters["rtp_malformed"] == bad, (counters, bad)
        assert participant.malformed.by_reason == {
            ("rtp", "truncated one-byte extension element"): bad
        }
        assert audio_source.malformed == bad * 2 // 5 or audio_source.malformed > 0
        assert audio_source.packets == good  # the good packets went on through
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as resp:
            health = await resp.json()
        assert health["rtp_malformed"] == bad and health["rtcp_malformed"] == 0
        lines = _malformed_lines(caplog.records, "vandal")
        # one line at the first packet, then at most one per interval
        assert 1 <= len(lines) <= 1 + elapsed / LOG_INTERVAL + 1, lines
        assert "truncated one-byte extension element" in lines[0]
        assert sum(len(line) for line in lines) < 2000  # it was ~1 KB per packet
        assert _unexpected(caplog.records) == []
        ann, bob = await asyncio.gather(*bots)
        _good_call(ann, {"bob"})
        _good_call(bob, {"ann"})
    finally:
        await vandal.close()
        for bot in bots:
            bot.cancel()


async def test_media_fuzz_inside_srtp_leaves_every_call_untouched(
    server_factory: ServerFactory, caplog: pytest.LogCaptureFixture, unretrieved: Any
) -> None:
    caplog.set_level(logging.INFO)
    rng = random.Random(int(os.environ.get("PARLEY_MEDIA_FUZZ_SEED", "12")))
    rtp, rtcp, extmap = capture_packets()
    # packets per second; a long run goes slower, so that the in-process bots (which try
    # to decode every junk frame forwarded to them) keep up for minutes
    rate = 1500.0 if FUZZ_PACKETS <= 5000 else 500.0
    duration = 5.0 + FUZZ_PACKETS / rate
    # (the vandal never answers its subscribe offer: in a long run it must not be removed
    # for that)
    sfu = SfuConfig(malformed_log_interval=LOG_INTERVAL, subscribe_answer_timeout=duration + 60)
    server = await server_factory(ServerConfig(sfu=sfu))
    configs = [
        BotConfig(url=server.url, room=room, name=name, duration=duration)
        for room, name in (("calm", "ann"), ("calm", "bob"), ("fuzz", "carol"), ("fuzz", "dave"))
    ]
    bots = [asyncio.ensure_future(run_bot(c)) for c in configs]
    await asyncio.sleep(1.5)
    vandal = Vandal(server, "fuzz", "vandal")
    await vandal.start()
    participant = vandal.participant()
    rtcp_ssrc = vandal.streams["video"][0]
    loop = asyncio.get_running_loop()
    started = loop.time()
    seq = 1
    mutated = 0
    try:
        while mutated < FUZZ_PACKETS:
            for _ in range(int(rate * 0.02)):
                kind, view = rtp[rng.randrange(len(rtp))]
                packet = adopt(view, kind, vandal, extmap, seq)
                seq += 1
                roll = rng.random()
                if roll < 0.2:
                    vandal.send(packet)  # good packets between the bad ones
                    continue
                if roll < 0.8:
                    vandal.send(mutate_rtp(rng, packet, vandal))
                else:
                    vandal.send(mutate_rtcp(rng, rtcp[rng.randrange(len(rtcp))], rtcp_ssrc))
                mutated += 1
            await asyncio.sleep(0.02)
        elapsed = loop.time() - started
        await asyncio.sleep(0.5)
        # junk is dropped, not a reason to close anyone
        assert not participant.closed, participant.close_reason
        counters = participant.counters
        malformed = counters["rtp_malformed"] + counters["rtcp_malformed"]
        # (libsrtp refuses to protect some mutations, e.g. CSRC lists past the end, and
        # some are valid packets still: another payload type, flipped payload bits)
        assert vandal.sent > FUZZ_PACKETS // 2, (vandal.sent, vandal.refused)
        assert counters["rtp_malformed"] > FUZZ_PACKETS // 20, counters
        assert counters["rtcp_malformed"] > FUZZ_PACKETS // 20, counters
        assert malformed == sum(participant.malformed.totals.values())
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/healthz") as resp:
            health = await resp.json()
        assert health["rtp_malformed"] >= counters["rtp_malformed"] > 0
        lines = _malformed_lines(caplog.records, "vandal")
        assert 1 <= len(lines) <= 2 + elapsed / LOG_INTERVAL, lines
        assert _unexpected(caplog.records) == []
        ann, bob, carol, dave = await asyncio.gather(*bots)
        _good_call(ann, {"bob"})
        _good_call(bob, {"ann"})
        _good_call(carol, {"dave"})  # next to the vandal, in its room
        _good_call(dave, {"carol"})
    finally:
        await vandal.close()
        for bot in bots:
            bot.cancel()
    gc.collect()
    await asyncio.sleep(0.1)
    assert [(c.get("message"), repr(c.get("exception"))) for c in unretrieved] == []
