"""Signaling fuzz: seeded mutations of valid client messages against a real server process.

Several websocket clients in several rooms send mutations of valid messages (``join``,
``publish_offer`` with real SDPs from ``tests/fixtures/`` and from aiortc,
``subscribe_answer``, ``set_layer``, ``leave``, ``ping``): fields dropped, retyped or
replaced by odd values, SDP lines deleted, duplicated, swapped, truncated or corrupted,
JSON truncated or wrapped, binary frames, now and then a frame over the size limit. After
each input the client sends a ``ping`` and waits for its ``pong``, so everything in
between answers that input. Every frame the server sends must be a valid server message;
an error must carry a stable code other than ``internal`` and a message that says
something. The server must stay up and log no unexpected exception, and a real call in
another room (an aiortc publisher and subscriber) must go on untouched.

The default run sends ``DEFAULT_INPUTS`` inputs. A long run:

    PARLEY_FUZZ_INPUTS=100000 .venv/bin/python scripts/in_netns.py \\
        .venv/bin/python -m pytest -q tests/integration/test_signaling_fuzz.py

(``PARLEY_FUZZ_SEED`` picks another seed; a failure prints the seed and the input.)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadgen.media.synthetic import PatternTrack, ToneTrack
from sfu.aiortc_adapter import create_peer_connection
from sfu.config import IceConfig
from signaling import messages as m

from ._clients import Client
from ._parley_process import parley_serve

DEFAULT_INPUTS = 3000
INPUTS = int(os.environ.get("PARLEY_FUZZ_INPUTS", DEFAULT_INPUTS))
SEED = int(os.environ.get("PARLEY_FUZZ_SEED", "20261206"))
#: Concurrent fuzzing clients, spread over ROOMS rooms.
CLIENTS = 6
ROOMS = 3
LIMIT = 65_536  # --max-message-bytes for this server: oversized frames stay cheap to send
#: Seconds the server may take to answer one input (and the ping after it).
INPUT_TIMEOUT = 10.0

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

Frame = str | bytes


# --------------------------------------------------------------------------- inputs


async def _aiortc_offer() -> str:
    """A real aiortc publish offer (audio and video), as a bot would send it."""
    pc = create_peer_connection(IceConfig())
    try:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
        pc.addTransceiver(PatternTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


@dataclass
class Corpus:
    offers: list[str]
    answers: list[str]


ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    1.5,
    float("1e308"),
    "",
    " ",
    "x" * 65,
    "x" * 5000,
    "\u0000",
    "\u2028",
    "\ud800",
    "é" * 64,
    "../../etc",
    [],
    [1, 2],
    {},
    {"a": 1},
    "720",
]


@dataclass
class Mutator:
    """Seeded mutations of valid client messages; ``next_frame`` is one input."""

    rng: random.Random
    corpus: Corpus
    #: track ids and the latest subscribe_offer SDP this client has seen
    tracks: list[str] = field(default_factory=list)
    offer_sdp: str | None = None
    #: picks among what the server sent (which depends on timing), so that ``rng`` draws
    #: the same sequence of decisions in every run of a seed
    pick: random.Random = field(default_factory=lambda: random.Random(0))

    def __post_init__(self) -> None:
        self._r = self.rng

    # ---- valid messages

    def _room(self) -> str:
        return f"fuzz-{self.rng.randrange(ROOMS)}"

    def _request_id(self) -> Any:
        return self.rng.choice([self.rng.randrange(10**6), f"r{self.rng.randrange(10**6)}"])

    def _answer_sdp(self) -> str:
        fallback = self.rng.choice(self.corpus.answers)
        if self.rng.random() < 0.7 and self.offer_sdp is not None:
            # the server's own offer turned into a plausible answer
            return (
                self.offer_sdp.replace("a=sendonly", "a=recvonly")
                .replace("a=setup:actpass", "a=setup:active")
                .replace("a=ice-ufrag:", "a=ice-ufrag:x")
            )
        return fallback

    def valid(self) -> dict[str, Any]:
        kind = self.rng.choices(
            ["join", "publish_offer", "subscribe_answer", "set_layer", "leave", "ping"],
            weights=[3, 4, 2, 4, 1, 1],
        )[0]
        message: dict[str, Any] = {"type": kind}
        if kind == "join":
            message.update(room=self._room(), name=f"fuzzer {self.rng.randrange(100)}")
            if self.rng.random() < 0.3:
                message["token"] = "t" * self.rng.randrange(10)
        elif kind == "publish_offer":
            message["sdp"] = self.rng.choice(self.corpus.offers)
        elif kind == "subscribe_answer":
            message["sdp"] = self._answer_sdp()
        elif kind == "set_layer":
            message["track"] = self.pick.choice(self.tracks or ["v-none"])
            for key, top in (("max_width", 7680), ("max_height", 4320)):
                if self.rng.random() < 0.6:
                    message[key] = self.rng.randrange(top + 1)
            if self.rng.random() < 0.5:
                message["paused"] = self.rng.random() < 0.5
        if self.rng.random() < 0.5:
            message["request_id"] = self._request_id()
        return message

    # ---- mutations

    def _mutate_sdp(self, sdp: str) -> str:
        lines = sdp.split("\r\n")
        for _ in range(self._r.randint(1, 4)):
            if not lines:
                break
            i = self._r.randrange(len(lines))
            op = self._r.randrange(9)
            if op == 0:
                del lines[i]
            elif op == 1:
                lines.insert(i, lines[i])
            elif op == 2:
                j = self._r.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            elif op == 3:
                lines[i] = lines[i][: self._r.randrange(len(lines[i]) + 1)]
            elif op == 4:
                lines[i] = "".join(
                    self._r.choice(string.printable) if self._r.random() < 0.2 else c
                    for c in lines[i]
                )
            elif op == 5:
                lines[i] = "".join(
                    str(self._r.choice([0, 1, 65535, 99999999999, -1])) if c.isdigit() else c
                    for c in lines[i]
                )
            elif op == 6:
                lines = [ln for ln in lines if not ln.startswith(self._r.choice(_PREFIXES))]
            elif op == 7:
                lines.insert(i, self._r.choice(_GARBAGE_LINES))
            else:
                return "\r\n".join(lines)[: self._r.randrange(len(sdp) + 1)]
        return "\r\n".join(lines)

    def _mutate_fields(self, message: dict[str, Any]) -> dict[str, Any]:
        message = dict(message)
        for _ in range(self._r.randint(1, 3)):
            op = self._r.randrange(6)
            keys = [k for k in message if k != "type"]
            if op == 0 and keys:
                del message[self._r.choice(keys)]
            elif op == 1 and keys:
                message[self._r.choice(keys)] = self._r.choice(ODD_VALUES)
            elif op == 2:
                message["type"] = self._r.choice(_TYPES)
            elif op == 3:
                message[self._r.choice(_FIELDS)] = self._r.choice(ODD_VALUES)
            elif op == 4 and isinstance(message.get("sdp"), str):
                message["sdp"] = self._mutate_sdp(message["sdp"])
            elif op == 5:
                message.pop("type", None)
        return message

    def _mutate_text(self, text: str) -> Frame:
        op = self._r.randrange(7)
        if op == 0:
            return text[: self._r.randrange(len(text) + 1)]
        if op == 1:
            i = self._r.randrange(len(text) + 1)
            return (
                text[:i] + self._r.choice(["{", "}", '"', "\\", ",", "\x00", "\ufeff"]) + text[i:]
            )
        if op == 2:
            return self._r.choice(["[" + text + "]", '"' + text + '"', "null", "1e999", "NaN"])
        if op == 3:
            return text.encode()  # the same message as a binary frame
        if op == 4:
            return "[" * self._r.randrange(1, 5000) + "]" * self._r.randrange(5000)
        if op == 5:
            return bytes(self._r.randrange(256) for _ in range(self._r.randrange(64)))
        return json.dumps({"type": "ping", "pad": "x" * LIMIT})  # over the limit

    def next_frame(self) -> Frame:
        message = self.valid()
        # a message built from what the server sent is mutated by `pick`, the rest by `rng`
        fixed = message.get("sdp") in self.corpus.offers + self.corpus.answers
        runtime = message["type"] == "set_layer" or ("sdp" in message and not fixed)
        self._r = self.pick if runtime else self.rng
        roll = self.rng.random()
        if roll < 0.15:
            return json.dumps(message)
        if roll < 0.35 and isinstance(message.get("sdp"), str):
            message["sdp"] = self._mutate_sdp(message["sdp"])
            return json.dumps(message)
        if roll < 0.9:
            return json.dumps(self._mutate_fields(message), ensure_ascii=self.rng.random() < 0.5)
        try:
            text = json.dumps(message)
        except ValueError:
            text = "{}"
        return self._mutate_text(text)


_TYPES = [
    "join",
    "publish_offer",
    "subscribe_answer",
    "set_layer",
    "leave",
    "ping",
    "joined",
    "error",
    "",
    "JOIN",
    "x" * 100,
]
_FIELDS = ["room", "name", "token", "sdp", "track", "max_width", "max_height", "paused"]
_FIELDS += ["request_id", "type", "extra"]
_PREFIXES = [
    "a=fingerprint",
    "a=ice-ufrag",
    "a=ice-pwd",
    "a=setup",
    "a=mid",
    "m=",
    "c=",
    "a=rtpmap",
]
_PREFIXES += ["a=group", "a=ssrc", "a=rid", "a=simulcast", "a=extmap", "a=candidate"]
_GARBAGE_LINES = [
    "a=fingerprint:sha-256 00",
    "a=fingerprint:md5",
    "a=setup:nonsense",
    "a=rtpmap:96",
    "a=rid:q send;;;",
    "a=simulcast:send ;;",
    "a=extmap:99999 urn:x",
    "m=video 0 RTP/AVP",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "a=ssrc-group:FID 1",
    "a=candidate:1 1 udp 1 127.0.0.1 0 typ host",
    "c=IN IP4",
    "a=msid:a b c d",
    "\x00\x01",
]


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- checks


def check_server_frame(raw: str) -> m.ServerMessage:
    """A frame the server sent: a valid server message; an error a clear one."""
    message = m.parse_server_message(raw)
    if isinstance(message, m.ErrorMessage):
        text = message.message.strip()
        assert message.code != "internal", raw
        assert text and not text.endswith(":"), raw
    return message


@dataclass
class Stats:
    inputs: int = 0
    replies: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    #: distinct bad replies -> what was sent and the server's log then
    failures: dict[str, str] = field(default_factory=dict)


class Fuzzer:
    """One fuzzing websocket client; reconnects whenever the server closes it."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        mutator: Mutator,
        stats: Stats,
        name: str,
        server_log: Callable[[], list[str]],
    ) -> None:
        self.server_log = server_log
        self.http = http
        self.url = url
        self.mutator = mutator
        self.stats = stats
        self.name = name
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pings = 0

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self.ws is not None:
            self.stats.reconnects += 1
            await self.ws.close()
        self.ws = await self.http.ws_connect(f"{self.url}/ws", max_msg_size=0)
        if self.mutator.rng.random() < 0.8:  # mostly start joined, so stateful paths run
            room = self.mutator._room()
            await self.ws.send_str(json.dumps({"type": "join", "room": room, "name": self.name}))
        return self.ws

    def _note(self, message: m.ServerMessage) -> None:
        self.stats.replies += 1
        self.stats.types[message.type] = self.stats.types.get(message.type, 0) + 1
        if isinstance(message, m.ErrorMessage):
            self.stats.errors[message.code] = self.stats.errors.get(message.code, 0) + 1
        elif isinstance(message, m.SubscribeOffer):
            self.mutator.offer_sdp = message.sdp
            self.mutator.tracks = [t.track for t in message.tracks.values()] or ["v-none"]
        elif isinstance(message, m.TrackPublished):
            self.mutator.tracks.append(message.track.id)

    async def run(self, inputs: int, on_input: Callable[[], None]) -> None:
        ws = await self._connect()
        for _ in range(inputs):
            frame = self.mutator.next_frame()
            if isinstance(frame, str) and not _encodable(frame):
                # a lone surrogate cannot go in a text frame: send its bytes as binary
                frame = frame.encode("utf-8", "surrogatepass")
            on_input()
            self.pings += 1
            marker = f"{self.name}-{self.pings}"
            try:
                async with asyncio.timeout(INPUT_TIMEOUT):
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
                    await ws.send_str(json.dumps({"type": "ping", "request_id": marker}))
                    closed = await self._replies_until(ws, marker, frame)
            except (ConnectionError, aiohttp.ClientError):
                closed = True
            except TimeoutError:
                self.stats.failures[f"timeout {marker}"] = (
                    f"no pong within {INPUT_TIMEOUT} s after {repr(frame)[:4000]}\n"
                    "server log:\n" + "\n".join(self.server_log()[-40:])
                )
                closed = True
            if closed:
                ws = await self._connect()

    async def _replies_until(
        self, ws: aiohttp.ClientWebSocketResponse, marker: str, frame: Frame
    ) -> bool:
        """Check every frame up to our pong; True when the server closed the websocket."""
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                # the server closes only after too_large (1009) or left (1000)
                assert msg.data in (1000, 1009, None), (msg, repr(frame)[:300])
                return True
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg, repr(frame)[:300])
            try:
                message = check_server_frame(msg.data)
            except (AssertionError, m.ProtocolError):
                # keep going: a long run reports every distinct failure it met
                if msg.data not in self.stats.failures:
                    self.stats.failures[msg.data] = (
                        f"bad reply {msg.data[:500]!r} to {repr(frame)[:4000]}\nserver log:\n"
                        + "\n".join(self.server_log()[-40:])
                    )
                continue
            self._note(message)
            if isinstance(message, m.Pong) and message.request_id == marker:
                return False


async def _call(http: aiohttp.ClientSession, url: str) -> tuple[Client, Client]:
    publisher = await Client(http, url).connect()
    subscriber = await Client(http, url, answer=True).connect()
    await publisher.join("call", "publisher")
    await subscriber.join("call", "subscriber")
    await publisher.publish()
    async with asyncio.timeout(20):
        while await subscriber.packets_received() < 50:
            await asyncio.sleep(0.1)
    return publisher, subscriber


async def test_fuzzed_messages_get_valid_replies_and_harm_nobody() -> None:
    corpus = Corpus(
        offers=[
            (FIXTURES / "chromium_simulcast_offer.sdp").read_text(),
            (FIXTURES / "gstreamer_webrtcbin_publish_offer.sdp").read_text(),
            await _aiortc_offer(),
        ],
        answers=[
            (FIXTURES / "chromium_publish_answer.sdp").read_text(),
            (FIXTURES / "parley_answer_to_webrtcbin_offer.sdp").read_text(),
        ],
    )
    stats = Stats()
    async with (
        # the fuzzers flood on purpose: no join or message rate limit (tests/integration/
        # test_limits.py tests those)
        parley_serve(
            "--log-level",
            "WARNING",
            "--max-message-bytes",
            str(LIMIT),
            "--join-rate",
            "0",
            "--message-rate",
            "0",
        ) as server,  # fmt: skip
        aiohttp.ClientSession() as http,
    ):
        publisher, subscriber = await _call(http, server.url)
        try:
            started = time.monotonic()
            fuzzers = [
                Fuzzer(
                    http,
                    server.url,
                    Mutator(random.Random(SEED * 1000 + i), corpus, pick=random.Random(SEED + i)),
                    stats,
                    f"fuzzer-{i}",
                    lambda: server.stderr,
                )
                for i in range(CLIENTS)
            ]
            share = [INPUTS // CLIENTS + (i < INPUTS % CLIENTS) for i in range(CLIENTS)]

            def counted() -> None:
                stats.inputs += 1
                if stats.inputs % 10_000 == 0:
                    print(
                        f"fuzz: {stats.inputs} inputs, {time.monotonic() - started:.0f} s, "
                        f"{len(stats.failures)} bad replies",
                        flush=True,
                    )

            await asyncio.gather(*(f.run(n, counted) for f, n in zip(fuzzers, share, strict=True)))
            took = time.monotonic() - started
            print(
                f"\nfuzz: {stats.inputs} inputs in {took:.1f} s (seed {SEED}), "
                f"{stats.replies} replies, {stats.reconnects} reconnects, "
                f"{len(stats.failures)} bad replies, "
                f"errors {dict(sorted(stats.errors.items()))}, "
                f"types {dict(sorted(stats.types.items()))}"
            )
            for fuzzer in fuzzers:
                if fuzzer.ws is not None:
                    await fuzzer.ws.close()

            # the call in the other room went on, untouched
            before = await subscriber.packets_received()
            await asyncio.sleep(1.0)
            assert await subscriber.packets_received() > before + 20, "the call lost its media"
            for client in (publisher, subscriber):
                assert not client.ended.is_set()
                kinds = {msg["type"] for msg in client.messages}
                assert kinds <= {
                    "joined",
                    "participant_joined",
                    "track_published",
                    "publish_answer",
                    "subscribe_offer",
                    "layer",
                    "active_speaker",
                }, client.messages
            async with http.get(f"{server.url}/healthz") as resp:
                assert resp.status == 200
        finally:
            await publisher.close()
            await subscriber.close()
        assert not stats.failures, f"seed {SEED}: {len(stats.failures)} bad replies:\n" + (
            "\n\n".join(list(stats.failures.values())[:10])
        )
        assert stats.inputs == INPUTS
        assert server.proc.returncode is None, "the server died"
        assert server.problems() == [], "\n".join(server.problems()[:50])
        # the mix reached the server's deeper paths, not just its validator
        for kind in ("joined", "publish_answer", "subscribe_offer", "pong", "left"):
            assert stats.types.get(kind, 0) > 0, (kind, stats.types)
        for code in ("bad_json", "invalid_field", "bad_sdp", "wrong_state", "too_large"):
            assert stats.errors.get(code, 0) > 0, (code, stats.errors)
