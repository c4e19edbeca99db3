"""Forwarding benchmark: one VP8 publisher, K subscribers, SFU CPU per packet.

    python bench/forwarding.py --fanouts 1,4,16 --json out.json
    python bench/forwarding.py --sweep --fanouts 1,4,16       # also find saturation
    python bench/forwarding.py --profile --fanouts 4,16       # also py-spy the SFU
    python bench/forwarding.py --target parley,janus --isolated --fanouts 4,16   # vs Janus

Runs everything itself, inside a network namespace that has only ``lo`` (it re-executes
itself under ``unshare --net --map-root-user`` unless it already is in one): the Parley
server (``create_app``, as ``parley serve`` runs it) in its own process, pinned to core 0,
and the load clients in other processes, pinned to core 1 (``--no-pin`` to let the
scheduler place them).

The clients never encode or decode media. The publisher is an aiortc peer connection
whose track-less video sender is hooked (``sfu.aiortc_adapter.hook_sender``) so aiortc
sends nothing; the script writes its own 1000-byte RTP packets through a ``MediaPort``
on the connection's DTLS transport: the negotiated VP8 payload type, the SSRC announced
in the offer, a one-byte header extension with the MID, a VP8 payload descriptor
(15-bit picture id) and filler. Every frame is a keyframe (its first packet starts a VP8
key frame), so the SFU never gates anything. The last 4 bytes of each payload are a
packet index, which the SFU forwards untouched: subscribers mark the indexes they get,
so loss is counted exactly over the packets the publisher sent in the window, whatever
the SFU does to sequence numbers.

Subscribers are aiortc peer connections that answer the server's subscribe offers with
hooked receivers (no decoder thread, no RTCP task) and count packets in a ``MediaPort``
callback. They live in ``--client-procs`` processes (the publisher in its own).

Per fan-out K: wait until every subscriber receives media, warm up, then measure over a
fixed window: packets sent, packets received per subscriber, CPU time (utime + stime
from /proc/PID/stat) of the SFU and of every client process, and per-socket UDP drops
from /proc/net/udp (to tell drops at the SFU's sockets from drops at the clients').
Results go to a table on stdout and to JSON (``--json``).

``--target janus`` drives Janus's VideoRoom (Debian ``janus``) with the same publisher,
subscribers, packets, pinning, windows and formulas; ``--target parley,janus`` measures
both, fan-out by fan-out, and reports the Parley / Janus ratios. Janus skips loopback when
it gathers ICE candidates, so it runs in a network namespace of its own joined to the
bench's by a veth pair (``bench/janus_server.py``: server 10.77.0.2, clients 10.77.0.1);
its CPU is read from /proc/PID/stat of the janus process (all threads), its socket drops
from /proc/PID/net/udp. ``--isolated`` runs Parley the same way (``parley serve`` in its
own namespace over the veth), so both servers pay the same network path.

This is a benchmark, not a test: it is not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import linecache
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from loadgen import netns, procfs, server_process  # noqa: E402

PACKET_SIZE = 1000
SERVER_CPU = 0
CLIENT_CPU = 1
SRTP_PROFILE_NAMES = {
    "aes256gcm": b"SRTP_AEAD_AES_256_GCM",
    "aes128gcm": b"SRTP_AEAD_AES_128_GCM",
    "aes128cm": b"SRTP_AES128_CM_SHA1_80",
}
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
TARGETS = ("parley", "parley-py", "janus")
#: parley-py: Parley with PARLEY_NATIVE=0, its forwarding loop in Python instead of C
#: The VideoRoom room the bench creates in Janus (request ``create``). No bitrate cap
#: (no REMB limit to the publisher), no periodic keyframe requests, no simulcast, no
#: recording, none of the optional header extensions a browser would use; VP8 only.
JANUS_ROOM: dict[str, Any] = {
    "publishers": 4,
    "bitrate": 0,
    "bitrate_cap": False,
    "fir_freq": 0,
    "videocodec": "vp8",
    "audiocodec": "opus",
    "notify_joining": False,
    "audiolevel_ext": False,
    "audiolevel_event": False,
    "videoorient_ext": False,
    "playoutdelay_ext": False,
    "transport_wide_cc_ext": False,
    "record": False,
}


# =============================================================== namespace


def ensure_loopback_namespace() -> None:
    """Re-exec under ``unshare -rn`` unless only ``lo`` exists; then bring ``lo`` up."""
    netns.ensure_loopback_namespace(
        [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
        who="forwarding bench",
        strict=True,
    )


def _die_with_parent() -> None:
    """Workers get SIGTERM when the orchestrator dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


# =============================================================== workers (clients)


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _log(text: str) -> None:
    sys.stderr.write(f"[{os.getpid()}] {text}\n")
    sys.stderr.flush()


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _restrict_srtp(dtls: Any, profile: str) -> None:
    """Offer/accept only one DTLS-SRTP profile on a client's DTLS transport."""
    if profile == "any" or dtls.state != "new":
        return
    from sfu import aiortc_adapter

    try:
        aiortc_adapter.restrict_srtp_profiles(dtls, SRTP_PROFILE_NAMES[profile])
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None


def _selected_profile(dtls: Any) -> str | None:
    from sfu import aiortc_adapter

    return aiortc_adapter.selected_srtp_profile(dtls)


def _ice_ports(dtls: Any) -> list[int]:
    from sfu import aiortc_adapter

    return [int(sock.getsockname()[1]) for sock in aiortc_adapter.ice_sockets(dtls)]


def _grow_rcvbuf(dtls: Any, size: int) -> None:
    """Bigger receive buffers on a *client's* ICE sockets (SO_RCVBUFFORCE works as ns root)."""
    from sfu import aiortc_adapter

    if size <= 0:
        return
    for sock in aiortc_adapter.ice_sockets(dtls):
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _drain_readers(dtls: Any) -> None:
    """Client-side only: read every queued datagram per wakeup instead of one per loop turn.

    asyncio's datagram transport reads one datagram per event-loop iteration; at tens of
    thousands of packets per second that overhead would make the *clients* the
    bottleneck. The packets still go through ``StunProtocol.datagram_received`` (the
    MediaPort fast path: SRTP unprotect, then ``on_rtp``).
    """
    from sfu import aiortc_adapter

    aiortc_adapter.drain_datagrams_per_wakeup(dtls, 512)


#: A subscriber's answer to a server offer: offer SDP -> answer SDP.
OfferAnswerer = Callable[[str], Awaitable[str]]


class SignalingClient:
    """The Parley protocol roles the benchmark needs (join, publish, answer subscribe
    offers), on :class:`parley_client.ProtocolClient`."""

    def __init__(
        self, url: str, room: str, name: str, on_offer: OfferAnswerer | None = None
    ) -> None:
        from parley_client import ProtocolClient

        self.room = room
        self.name = name
        self.on_offer = on_offer
        self.client = ProtocolClient(url, on_message=self._on_message)

    async def publish(self, sdp: str) -> str:
        """Send the publish offer; return the answer's SDP."""
        answer = await self.client.publish(sdp, 20)
        return answer.sdp

    async def _on_message(self, message: Any) -> None:
        from signaling.messages import ErrorMessage, SubscribeOffer

        if isinstance(message, ErrorMessage):
            _log(f"{self.name}: server error {message.to_json()}")
            _emit({"event": "error", "who": self.name, "message": message.to_json()})
        elif isinstance(message, SubscribeOffer) and self.on_offer is not None:
            await self.client.answer(await self.on_offer(message.sdp))

    async def connect(self, session: Any, publisher: bool = False) -> None:
        await self.client.connect(20)
        await self.client.join(self.room, self.name, 20)

    async def close(self) -> None:
        await self.client.close()


def _bench_janus_session(url: str, on_offer: Callable[[str, list[Any]], Awaitable[str]]) -> Any:
    """``loadgen.load.janus.JanusSession`` creating its room with the bench's settings."""
    from loadgen.load.janus import JanusError, JanusSession

    class BenchJanusSession(JanusSession):
        async def _ensure_room(self) -> None:
            try:
                await self._plugin({"request": "create", "room": self.room, **JANUS_ROOM})
            except JanusError as exc:
                if "error 427" not in str(exc):  # 427: the room exists already
                    raise

    return BenchJanusSession(url, on_offer)


class JanusSignaling:
    """The same roles against Janus's VideoRoom, via ``loadgen.load.janus.JanusSession``.

    A subscriber joins as a subscriber to the publisher's feed (so after the publisher
    publishes): Janus sends the offer, ``on_offer`` answers it, the session sends
    ``start`` with the answer and the end of candidates.
    """

    def __init__(
        self, url: str, room: str, name: str, on_offer: OfferAnswerer | None = None
    ) -> None:
        self.url = url
        self.room = room
        self.name = name
        self.on_offer = on_offer
        self.session: Any = None

    async def _answer(self, sdp: str, tracks: list[Any]) -> str:
        if self.on_offer is None:
            raise RuntimeError(f"{self.name}: unexpected offer from Janus")
        return await self.on_offer(sdp)

    async def connect(self, session: Any, publisher: bool = False) -> None:
        from loadgen.load.janus import JanusError

        deadline = time.monotonic() + 20
        while True:
            self.session = _bench_janus_session(self.url, self._answer)
            try:
                await self.session.join(self.room, self.name, publisher, 20.0)
                return
            except JanusError as exc:
                # the publisher's feed is listed once Janus has it set up: retry a little
                if "no publisher" not in str(exc) or time.monotonic() > deadline:
                    raise
                await self.session.close()
                await asyncio.sleep(0.2)

    async def publish(self, sdp: str) -> str:
        answer: str = await self.session.publish(sdp, 20.0)
        return answer

    async def close(self) -> None:
        if self.session is not None:
            self.session.stopping = True
            with contextlib.suppress(Exception):
                await self.session.close()


def make_signaling(
    args: argparse.Namespace, name: str, on_offer: OfferAnswerer | None = None
) -> SignalingClient | JanusSignaling:
    if args.protocol == "janus":
        return JanusSignaling(args.url, args.room, name, on_offer)
    return SignalingClient(args.url, args.room, name, on_offer)


def _client_ice(args: argparse.Namespace) -> Any:
    from sfu.config import IceConfig

    return IceConfig(addresses=(args.ice_address,))


class Subscriber:
    """One subscribing participant: answers subscribe offers, marks the indexes it gets."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.signaling = make_signaling(args, name, self.answer)
        self.pc: Any = None
        self.port: Any = None
        self.dtls: Any = None
        self.hooked: set[int] = set()
        self.flags = bytearray(1 << 16)
        self.received = 0
        self.first_at: float | None = None

    def on_rtp(self, data: bytes, now: float) -> None:
        """Hot path: one decrypted RTP packet."""
        idx = int.from_bytes(data[-4:], "big")
        flags = self.flags
        if idx >= len(flags):
            flags.extend(bytes(max(idx + 1, 2 * len(flags)) - len(flags)))
        flags[idx] = 1
        self.received += 1
        if self.first_at is None:
            self.first_at = now
            _emit({"event": "receiving", "who": self.name})

    def on_rtcp(self, data: bytes, now: float) -> None:
        pass

    async def answer(self, sdp: str) -> str:
        """Answer a server offer with hooked receivers; return the answer SDP."""
        from aiortc import RTCSessionDescription

        from sfu import aiortc_adapter as adapter

        if self.pc is None:
            self.pc = adapter.create_peer_connection(_client_ice(self.args))
            pc = self.pc

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc.connectionState == "connected" and self.port is not None:
                    self.port.install_fast_path()
                    if self.args.batch_reads:
                        _drain_readers(self.dtls)
                    _emit(
                        {
                            "event": "connected",
                            "who": self.name,
                            "srtp_profile": _selected_profile(self.dtls),
                            "ports": _ice_ports(self.dtls),
                        }
                    )
                elif pc.connectionState == "failed":
                    _emit({"event": "error", "who": self.name, "message": "peer connection failed"})

        pc = self.pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            if id(transceiver.receiver) not in self.hooked:
                adapter.hook_receiver(transceiver.receiver, lambda _params: None)
                self.hooked.add(id(transceiver.receiver))
        if self.port is None:
            self.dtls = pc.getTransceivers()[0].receiver.transport
            _restrict_srtp(self.dtls, self.args.srtp)
            self.port = adapter.MediaPort(self.dtls, self.on_rtp, self.on_rtcp)
        await pc.setLocalDescription(await pc.createAnswer())
        _grow_rcvbuf(self.dtls, self.args.client_rcvbuf)
        return str(pc.localDescription.sdp)

    def count(self, start: int, end: int) -> int:
        return self.flags[start:end].count(1)

    def loss_runs(self, start: int, end: int) -> tuple[int, int]:
        """(number of runs of lost packets, longest run) among indexes [start, end)."""
        runs = re.findall(rb"\x00+", bytes(self.flags[start:end]))
        return len(runs), max((len(r) for r in runs), default=0)

    async def close(self) -> None:
        await self.signaling.close()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()


class Publisher:
    """The publisher: a hooked sendonly video sender; RTP written by hand through a MediaPort."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.signaling = make_signaling(args, "publisher")
        self.pc: Any = None
        self.dtls: Any = None
        self.port: Any = None
        self.negotiated: Any = None
        self.connected = asyncio.get_running_loop().create_future()
        self.pps = float(args.pps)
        self.index = 0  # packets sent (next packet index)
        self.send_failures = 0
        self.skipped = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, session: Any) -> None:
        from aiortc import RTCSessionDescription

        from sfu import aiortc_adapter as adapter

        await self.signaling.connect(session, publisher=True)
        pc = adapter.create_peer_connection(_client_ice(self.args))
        self.pc = pc
        transceiver = pc.addTransceiver("video", direction="sendonly")
        self.sender = transceiver.sender
        adapter.hook_sender(transceiver.sender, self._on_parameters)
        self.dtls = transceiver.sender.transport
        _restrict_srtp(self.dtls, self.args.srtp)
        self.port = adapter.MediaPort(self.dtls, lambda data, now: None, lambda data, now: None)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.port.install_fast_path()
                if not self.connected.done():
                    self.connected.set_result(None)
            elif pc.connectionState == "failed" and not self.connected.done():
                self.connected.set_exception(ConnectionError("publish peer connection failed"))

        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.signaling.publish(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(asyncio.shield(self.connected), 20)
        for _ in range(200):  # the hooked sender learns its parameters right after DTLS
            if self.negotiated is not None:
                break
            await asyncio.sleep(0.01)
        if self.negotiated is None:
            raise RuntimeError("the hooked sender never learned its negotiated parameters")
        self._prepare()
        self._task = asyncio.ensure_future(self._pace())
        _emit(
            {
                "event": "publishing",
                "srtp_profile": _selected_profile(self.dtls),
                "payload_type": self.payload_type,
                "ssrc": self.ssrc,
                "mid": self.negotiated.mid,
                "mid_ext_id": self.mid_ext_id,
                "ports": _ice_ports(self.dtls),
            }
        )

    def _on_parameters(self, params: Any) -> None:
        self.negotiated = params

    def _prepare(self) -> None:
        from sfu import aiortc_adapter as adapter

        params = self.negotiated
        codec = params.primary_codec
        if codec.mimeType.lower() != "video/vp8":
            raise RuntimeError(f"negotiated {codec.mimeType}, expected video/VP8")
        self.payload_type = codec.payloadType
        self.ssrc = adapter.sender_ssrcs(self.sender)[0]
        self.mid_ext_id = params.extensions.get(MID_URI, 0)
        ext = b""
        if self.mid_ext_id and params.mid:
            mid = params.mid.encode()
            body = bytes(((self.mid_ext_id << 4) | (len(mid) - 1),)) + mid
            body += b"\x00" * (-len(body) % 4)
            ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
        self.ext = ext
        self.b0 = 0x90 if ext else 0x80
        body_len = PACKET_SIZE - 12 - len(ext) - 4 - 4  # header, ext, VP8 descriptor, index
        # VP8 key frame: frame tag (key, show_frame), start code, 640x360, then filler.
        key = (
            b"\x10\x02\x00\x9d\x01\x2a" + (640).to_bytes(2, "little") + (360).to_bytes(2, "little")
        )
        self.key_body = key + bytes(range(256)) * 4
        self.key_body = self.key_body[:body_len]
        self.filler_body = (b"\xa5" * body_len)[:body_len]
        self.frame_packets = max(1, self.args.frame_packets)

    def set_rate(self, pps: float) -> None:
        self.pps = float(pps)
        self._rebase = True

    async def _pace(self) -> None:
        """Send at ``pps``: every ~1 ms, whatever is due (bursts bounded to 20 ms worth)."""
        loop = asyncio.get_running_loop()
        hdr = struct.Struct("!BBHII")
        port_send = self.port.send
        ext, b0, pt, ssrc = self.ext, self.b0, self.payload_type, self.ssrc
        key_body, filler_body = self.key_body, self.filler_body
        fpp = self.frame_packets
        seq = 1000
        ts = 123456
        pid = 0
        self._rebase = True
        t0 = loop.time()
        base = 0
        while True:
            now = loop.time()
            if self._rebase:
                self._rebase = False
                t0, base = now, self.index
            due = base + int((now - t0) * self.pps) - self.index
            limit = max(1, int(self.pps * 0.02))
            if due > limit:  # we fell behind (stall): do not burst, move the schedule on
                self.skipped += due - limit
                base -= due - limit
                due = limit
            i = self.index
            for _ in range(due):
                pos = i % fpp
                if pos == 0:
                    ts = (ts + int(90000 * fpp / max(self.pps, 1.0))) & 0xFFFFFFFF
                    pid = (pid + 1) & 0x7FFF
                    desc = bytes((0x90, 0x80, 0x80 | (pid >> 8), pid & 0xFF))
                    body = key_body
                else:
                    desc = bytes((0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF))
                    body = filler_body
                marker = 0x80 if pos == fpp - 1 else 0
                packet = (
                    hdr.pack(b0, marker | pt, seq, ts, ssrc)
                    + ext
                    + desc
                    + body
                    + i.to_bytes(4, "big")
                )
                if not port_send(packet):
                    self.send_failures += 1
                seq = (seq + 1) & 0xFFFF
                i += 1
            self.index = i
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.signaling.close()
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()


async def _worker_loop(handle: Callable[[dict[str, Any]], Any]) -> None:
    reader = await _stdin_lines()
    while True:
        line = await reader.readline()
        if not line:
            return  # the orchestrator is gone
        command = json.loads(line)
        if command.get("cmd") == "quit":
            _emit({"id": command.get("id"), "ok": True})
            return
        reply = handle(command)
        if asyncio.iscoroutine(reply):
            reply = await reply
        _emit({"id": command.get("id"), **(reply or {})})


async def run_publisher(args: argparse.Namespace) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        publisher = Publisher(args)
        try:
            await publisher.start(session)

            def handle(command: dict[str, Any]) -> dict[str, Any]:
                if command["cmd"] == "rate":
                    publisher.set_rate(command["pps"])
                return {
                    "index": publisher.index,
                    "pps": publisher.pps,
                    "send_failures": publisher.send_failures,
                    "skipped": publisher.skipped,
                    "tx_errors": publisher.port.tx_errors,
                }

            await _worker_loop(handle)
        except Exception as exc:
            _emit({"event": "error", "who": "publisher", "message": f"{type(exc).__name__}: {exc}"})
            raise
        finally:
            await publisher.close()


async def run_subscribers(args: argparse.Namespace) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        subs = [Subscriber(f"{args.name_prefix}-{i}", args) for i in range(args.count)]
        try:
            for sub in subs:
                await sub.signaling.connect(session)
            _emit({"event": "joined", "count": len(subs)})

            def handle(command: dict[str, Any]) -> dict[str, Any]:
                if command["cmd"] == "count":
                    start, end = command["start"], command["end"]
                    return {
                        "counts": {s.name: s.count(start, end) for s in subs},
                        "loss_runs": {s.name: s.loss_runs(start, end) for s in subs},
                        "received": {s.name: s.received for s in subs},
                        "rx_errors": {s.name: s.port.rx_errors if s.port else 0 for s in subs},
                        "fast_path": {s.name: bool(s.port and s.port.fast_path) for s in subs},
                    }
                return {}

            await _worker_loop(handle)
        except Exception as exc:
            _emit(
                {
                    "event": "error",
                    "who": args.name_prefix,
                    "message": f"{type(exc).__name__}: {exc}",
                }
            )
            raise
        finally:
            for sub in subs:
                await sub.close()


def _log_gc_pauses(threshold: float = 0.005) -> None:
    """Diagnostics: print garbage-collector pauses longer than ``threshold`` seconds."""
    import gc

    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause = time.perf_counter() - started[0]
            if pause >= threshold:
                _log(f"server gc gen{info.get('generation')} pause {pause * 1000:.1f} ms")

    gc.callbacks.append(callback)


def run_server(args: argparse.Namespace) -> None:
    import logging

    from aiohttp import web

    from sfu.config import IceConfig, SfuConfig
    from signaling.server import ServerConfig, create_app

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(sfu=SfuConfig(ice=IceConfig(addresses=(args.ice_address,))))
    if args.gc_log:
        _log_gc_pauses()
    web.run_app(
        create_app(config, freeze_gc=True), host=args.ice_address, port=args.port, print=None
    )


def worker_main(args: argparse.Namespace) -> int:
    _die_with_parent()
    _pin(args.cpu)
    if args.worker == "server":
        run_server(args)
        return 0
    import logging

    logging.basicConfig(level=logging.ERROR)
    runner = run_publisher if args.worker == "publisher" else run_subscribers
    try:
        asyncio.run(runner(args))
    except Exception as exc:
        _log(f"{args.worker} failed: {type(exc).__name__}: {exc}")
        return 1
    return 0


# =============================================================== orchestrator


class BenchError(RuntimeError):
    pass


class Worker:
    """A child process; JSON lines on stdin (commands) and stdout (replies and events)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def spawn(cls, name: str, argv: list[str], env: dict[str, str] | None = None) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(REPO),
            env=env,
        )
        return cls(name, proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            rid = message.get("id")
            if rid is not None and rid in self._replies:
                future = self._replies.pop(rid)
                if not future.done():
                    future.set_result(message)
            else:
                await self.events.put(message)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(BenchError(f"{self.name} exited"))
        await self.events.put({"event": "exited", "who": self.name})

    async def request(self, command: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        self.proc.stdin.write((json.dumps({**command, "id": rid}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.request({"cmd": "quit"}, timeout=3)
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.terminate()
                try:
                    await asyncio.wait_for(self.proc.wait(), 3)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


async def start_server(args: argparse.Namespace, port: int, target: str = "parley") -> Worker:

    argv = ["--worker", "server", "--port", str(port)]
    if args.gc_log:
        argv.append("--gc-log")
    if args.pin:
        argv += ["--cpu", str(SERVER_CPU)]
    # parley-py: the same server forwarding in Python (as bench/janus_server.py does it)
    env = dict(os.environ, PARLEY_NATIVE="0") if target == "parley-py" else None
    server = await Worker.spawn("server", argv, env)
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(
            server_process.wait_for_healthz, url, lambda: server.proc.returncode is None, 30
        )
    except server_process.ServerStartError as exc:
        await server.stop()
        raise BenchError(str(exc)) from None
    return server


class IsolatedHandle:
    """A server in a network namespace of its own (``bench/janus_server.IsolatedServer``)."""

    name = "server"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.pid: int = server.pid
        self.url: str = server.url

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.close)


def _janus_server_module() -> Any:
    bench_dir = str(Path(__file__).resolve().parent)
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    import janus_server

    return janus_server


def isolated(args: argparse.Namespace, target: str) -> bool:
    """Whether ``target`` runs in a namespace of its own (Janus always; Parley with --isolated)."""
    return target == "janus" or bool(args.isolated)


async def start_isolated_server(args: argparse.Namespace, target: str) -> IsolatedHandle:
    js = _janus_server_module()
    log = Path(args.json).resolve().with_suffix(f".{target}.log")
    try:
        server = await asyncio.to_thread(
            js.IsolatedServer,
            target,
            event_loops=args.janus_event_loops,
            log=log,
            cpu=SERVER_CPU if args.pin else None,
        )
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        raise BenchError(
            f"could not start {target} in its own namespace: {exc} (log: {log})"
        ) from exc
    if target == "janus":
        args.janus_config_files = server.config_files
    return IsolatedHandle(server)


@dataclass
class Scenario:
    """One server, one publisher and K subscribers, connected and forwarding."""

    fanout: int
    server: Worker | IsolatedHandle
    publisher: Worker
    sub_workers: list[Worker]
    target: str = "parley"
    #: the server's pid when it runs in a namespace of its own (its sockets are there)
    netns_pid: int | None = None
    publish_info: dict[str, Any] = field(default_factory=dict)
    sub_profiles: dict[str, str | None] = field(default_factory=dict)
    source_digest: str = ""
    #: the server's signaling URL
    url: str = ""

    @property
    def workers(self) -> list[Worker | IsolatedHandle]:
        return [self.server, self.publisher, *self.sub_workers]

    async def stop(self) -> None:
        for worker in [self.publisher, *self.sub_workers]:
            if worker is not None:
                await worker.stop()
        await self.server.stop()


async def _expect(
    worker: Worker, want: str, timeout: float, on: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """The next event ``want`` of ``worker`` (other events go to ``on``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise BenchError(f"{worker.name}: no {want!r} within {timeout} s")
        try:
            event = await asyncio.wait_for(worker.events.get(), remaining)
        except TimeoutError:
            raise BenchError(f"{worker.name}: no {want!r} within {timeout} s") from None
        if event.get("event") == want:
            return event
        if event.get("event") in ("error", "exited"):
            raise BenchError(f"{worker.name}: {event}")
        if on is not None:
            on(event)


async def start_scenario(
    args: argparse.Namespace, fanout: int, pps: float, target: str = "parley"
) -> Scenario:
    """Start the server, the subscribers and the publisher; return once all receive media.

    Parley: the subscribers join first and get offers when the publisher publishes.
    Janus: subscribers join as subscribers to a feed, so the publisher comes first.
    """
    room = f"bench-{fanout}"
    digest = source_digest()
    server: Worker | IsolatedHandle
    if isolated(args, target):
        server = await start_isolated_server(args, target)
        url, ice_address = server.url, _janus_server_module().CLIENT_ADDRESS
        netns_pid: int | None = server.pid
    else:
        port = server_process.free_port()
        server = await start_server(args, port, target)
        url, ice_address, netns_pid = f"http://127.0.0.1:{port}", "127.0.0.1", None
    common = [] if args.batch_reads else ["--no-batch-reads"]
    common += [
        "--protocol",
        "janus" if target == "janus" else "parley",
        "--ice-address",
        ice_address,
        "--url",
        url,
        "--room",
        room,
        "--srtp",
        args.srtp,
        "--client-rcvbuf",
        str(args.client_rcvbuf),
    ]
    if args.pin:
        common += ["--cpu", str(CLIENT_CPU)]
    scenario = Scenario(fanout, server, None, [], target, netns_pid)  # type: ignore[arg-type]
    scenario.url = url
    procs = max(1, min(args.client_procs, fanout))
    sizes = [fanout // procs + (1 if i < fanout % procs else 0) for i in range(procs)]

    async def spawn_subscribers() -> None:
        for i, size in enumerate(sizes):
            worker = await Worker.spawn(
                f"subs{i}",
                [
                    "--worker",
                    "subscribers",
                    "--count",
                    str(size),
                    "--name-prefix",
                    f"sub{i}",
                    *common,
                ],
            )
            scenario.sub_workers.append(worker)

    async def spawn_publisher() -> None:
        scenario.publisher = await Worker.spawn(
            "publisher",
            [
                "--worker",
                "publisher",
                "--pps",
                str(pps),
                "--frame-packets",
                str(args.frame_packets),
                *common,
            ],
        )
        scenario.publish_info = await _expect(scenario.publisher, "publishing", 40)

    try:
        if target == "janus":
            await spawn_publisher()
            await spawn_subscribers()
        else:
            await spawn_subscribers()
            for worker in scenario.sub_workers:
                await _expect(worker, "joined", 30)
            await spawn_publisher()
        for worker, size in zip(scenario.sub_workers, sizes, strict=True):
            receiving = 0
            connected: dict[str, Any] = {}

            def on_event(event: dict[str, Any], connected: dict[str, Any] = connected) -> None:
                if event.get("event") == "connected":
                    connected[event["who"]] = event.get("srtp_profile")

            while receiving < size:
                await _expect(worker, "receiving", 40 + 2 * size, on_event)
                receiving += 1
            # "connected" events precede media; drain any left in the queue
            while not worker.events.empty():
                on_event(worker.events.get_nowait())
            scenario.sub_profiles.update(connected)
        scenario.source_digest = digest
        return scenario
    except BaseException:
        await scenario.stop()
        raise


def _pids(scenario: Scenario, extra: dict[str, int] | None = None) -> dict[str, int]:
    pids = {w.name: w.pid for w in scenario.workers}
    pids["bench"] = os.getpid()
    pids.update(extra or {})
    return pids


def _foreign(
    cores0: dict[int, tuple[float, float]],
    cores1: dict[int, tuple[float, float]],
    ours_by_core: dict[int, float],
    ours_total: float,
    elapsed: float,
) -> dict[str, float]:
    """CPU used by processes that are not ours, in % of one core (per core when pinned)."""
    busy = {c: cores1[c][0] - cores0[c][0] for c in cores1 if c in cores0}
    out = {"total": round(100 * (sum(busy.values()) - ours_total) / elapsed, 1)}
    for c, value in sorted(busy.items()):
        if c in ours_by_core:
            out[f"core{c}"] = round(100 * (value - ours_by_core[c]) / elapsed, 1)
    return out


def _ours_by_core(args: argparse.Namespace, deltas: dict[str, float]) -> dict[int, float]:
    if not args.pin:
        return {}
    server = deltas.get("server", 0.0)
    return {SERVER_CPU: server, CLIENT_CPU: sum(v for k, v in deltas.items() if k != "server")}


async def wait_for_quiet(args: argparse.Namespace, scenario: Scenario) -> dict[str, float]:
    """Wait (bounded) until other processes on the machine use little CPU."""
    deadline = time.monotonic() + args.quiet_timeout
    said = False
    while True:
        pids = _pids(scenario)
        cpu0 = {n: sum(procfs.process_cpu_times(p)) for n, p in pids.items()}
        cores0 = procfs.core_busy()
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        cpu1 = {n: sum(procfs.process_cpu_times(p)) for n, p in pids.items()}
        cores1 = procfs.core_busy()
        deltas = {n: cpu1[n] - cpu0[n] for n in pids}
        foreign = _foreign(
            cores0, cores1, _ours_by_core(args, deltas), sum(deltas.values()), time.monotonic() - t0
        )
        if foreign["total"] <= args.max_foreign or time.monotonic() > deadline:
            if said:
                print(f"  other load now {foreign['total']}% of a core", flush=True)
            return foreign
        if not said:
            print(
                f"  waiting for other processes to calm down ({foreign['total']}% of a core) ...",
                flush=True,
            )
            said = True


async def measure(
    args: argparse.Namespace,
    scenario: Scenario,
    window: float,
    extra_pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One measurement window on a running scenario."""
    pids = _pids(scenario, extra_pids)
    inodes = {name: procfs.socket_inodes(pid) for name, pid in pids.items()}
    ns = scenario.netns_pid

    def drops_now() -> dict[int, int]:
        """Ours, and those of the server's namespace when it has one (inodes are global)."""
        out = procfs.udp_drops()
        if ns is not None:
            out.update(procfs.udp_drops(f"/proc/{ns}/net/udp"))
        return out

    def server_snmp() -> dict[str, int]:
        return procfs.udp_snmp(f"/proc/{ns}/net/snmp") if ns is not None else {}

    cpu0 = {name: procfs.process_cpu_times(pid) for name, pid in pids.items()}
    cores0 = procfs.core_busy()
    drops0 = drops_now()
    snmp0 = procfs.udp_snmp()
    server_snmp0 = server_snmp()
    mark0 = await scenario.publisher.request({"cmd": "mark"})
    t0 = time.monotonic()
    await asyncio.sleep(window)
    cpu1 = {name: procfs.process_cpu_times(pid) for name, pid in pids.items()}
    cores1 = procfs.core_busy()
    mark1 = await scenario.publisher.request({"cmd": "mark"})
    t1 = time.monotonic()
    drops1 = drops_now()
    snmp1 = procfs.udp_snmp()
    server_snmp1 = server_snmp()
    await asyncio.sleep(args.drain)
    counts: dict[str, int] = {}
    fast_path: dict[str, bool] = {}
    runs: dict[str, list[int]] = {}
    for worker in scenario.sub_workers:
        reply = await worker.request(
            {"cmd": "count", "start": mark0["index"], "end": mark1["index"]}
        )
        counts.update(reply["counts"])
        fast_path.update(reply["fast_path"])
        runs.update(reply["loss_runs"])
    elapsed = t1 - t0
    sent = mark1["index"] - mark0["index"]
    received = sum(counts.values())
    expected = sent * scenario.fanout
    lost = max(0, expected - received)

    def drops_of(names: list[str]) -> int:
        total = 0
        for name in names:
            for inode in inodes[name]:
                total += drops1.get(inode, 0) - drops0.get(inode, 0)
        return total

    server_drops = drops_of(["server"])
    client_drops = drops_of([w.name for w in scenario.sub_workers] + ["publisher"])
    cpu: dict[str, dict[str, float]] = {}
    deltas: dict[str, float] = {}
    for name in pids:
        user = cpu1[name][0] - cpu0[name][0]
        system = cpu1[name][1] - cpu0[name][1]
        deltas[name] = user + system
        cpu[name] = {
            "user_s": round(user, 3),
            "system_s": round(system, 3),
            "core_pct": round(100 * (user + system) / elapsed, 1),
        }
    server_cpu = deltas["server"]
    clients = [w.name for w in scenario.workers if w.name != "server"]
    cores = {
        str(c): round(
            100 * (cores1[c][0] - cores0[c][0]) / max(1e-9, cores1[c][1] - cores0[c][1]), 1
        )
        for c in cores1
        if c in cores0
    }
    foreign = _foreign(cores0, cores1, _ours_by_core(args, deltas), sum(deltas.values()), elapsed)
    # Loss at the clients' own sockets is theirs; everything else lost between the
    # publisher's sendto and the subscribers' callbacks is the SFU's (its socket, its
    # processing, its sends).
    sfu_lost = max(0, lost - client_drops)
    per_sub_loss = {
        name: round(100 * (sent - n) / sent, 3) if sent else None
        for name, n in sorted(counts.items())
    }
    return {
        "target": scenario.target,
        "fanout": scenario.fanout,
        "window_s": round(elapsed, 3),
        "target_pps": mark1.get("pps"),
        "sent": sent,
        "received": received,
        "expected": expected,
        "in_pps": round(sent / elapsed, 1),
        "forwarded_pps": round(received / elapsed, 1),
        "sfu_cpu_s": round(server_cpu, 3),
        "sfu_core_pct": cpu["server"]["core_pct"],
        "sfu_us_per_in": round(1e6 * server_cpu / sent, 2) if sent else None,
        "sfu_us_per_fwd": round(1e6 * server_cpu / received, 2) if received else None,
        "lost": lost,
        "loss_pct": round(100 * lost / expected, 4) if expected else None,
        "sfu_lost": sfu_lost,
        "sfu_loss_pct": round(100 * sfu_lost / expected, 4) if expected else None,
        "per_subscriber_loss_pct": per_sub_loss,
        # bursts (few long runs) mean the SFU stalled and its socket overflowed
        "loss_runs": sum(r[0] for r in runs.values()),
        "longest_loss_run": max((r[1] for r in runs.values()), default=0),
        "udp_drops_server_sockets": server_drops,
        "udp_drops_client_sockets": client_drops,
        "udp_rcvbuf_errors_ns": snmp1.get("RcvbufErrors", 0) - snmp0.get("RcvbufErrors", 0),
        "udp_rcvbuf_errors_server_ns": (
            server_snmp1.get("RcvbufErrors", 0) - server_snmp0.get("RcvbufErrors", 0)
            if ns is not None
            else None
        ),
        "publisher_skipped": mark1["skipped"] - mark0["skipped"],
        "publisher_send_failures": mark1["send_failures"] - mark0["send_failures"],
        "cpu": cpu,
        "core_busy_pct": cores,
        "foreign_load_pct": foreign,
        "clients_core_pct": round(sum(cpu[n]["core_pct"] for n in clients), 1),
        "saturated_clients": [n for n in clients if cpu[n]["core_pct"] > 90.0],
        "subscribers_fast_path": all(fast_path.values()),
    }


def server_mode(args: argparse.Namespace, target: str) -> str:
    if isolated(args, target):
        return "isolated: own network namespace, veth 10.77.0.1 <-> 10.77.0.2"
    return "loopback: same namespace as the clients, 127.0.0.1"


def fanout_pps(args: argparse.Namespace, fanout: int) -> float:
    """The publisher rate for ``fanout``: ``--pps``, capped by ``--max-forwarded-pps`` / K."""
    pps = float(args.pps)
    if args.max_forwarded_pps > 0:
        pps = min(pps, args.max_forwarded_pps / fanout)
    return round(pps)


async def run_fanout(
    args: argparse.Namespace, fanout: int, target: str = "parley"
) -> dict[str, Any]:
    """Measure ``--repeat`` windows; keep the one least disturbed by other load."""
    pps = fanout_pps(args, fanout)
    scenario = await start_scenario(args, fanout, pps, target)
    try:
        await asyncio.sleep(args.warmup)
        windows = []
        for _ in range(max(1, args.repeat)):
            await wait_for_quiet(args, scenario)
            windows.append(await measure(args, scenario, args.window))
        result = dict(min(windows, key=lambda w: w["foreign_load_pct"]["total"]))
        result["target_pps"] = pps
        result["server_mode"] = server_mode(args, target)
        result["srtp_profile_publisher"] = scenario.publish_info.get("srtp_profile")
        result["srtp_profiles_subscribers"] = sorted(
            {str(p) for p in scenario.sub_profiles.values()}
        )
        result["payload_type"] = scenario.publish_info.get("payload_type")
        result["sfu_source_digest"] = scenario.source_digest
        if target != "janus":  # whether the C loop served it (sfu/native.py)
            result["server_stats"] = await server_stats(scenario.url)
        result["windows"] = [
            {
                k: w[k]
                for k in (
                    "in_pps",
                    "forwarded_pps",
                    "sfu_us_per_in",
                    "sfu_us_per_fwd",
                    "sfu_loss_pct",
                    "foreign_load_pct",
                )
            }
            for w in windows
        ]
        return result
    finally:
        await scenario.stop()


async def server_stats(url: str) -> dict[str, Any]:
    """Parley's ``/healthz`` (rooms, forwarders, ``native_forwarding``, ``native_packets``)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(5)) as r:
                return dict(await r.json())
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def run_sweep(
    args: argparse.Namespace, fanout: int, target: str = "parley"
) -> dict[str, Any]:
    """Raise the rate step by step on one running scenario.

    Records the first rate with SFU-caused loss above ``--loss-threshold`` and goes on
    until saturation: loss above ``--sweep-stop-loss`` or the SFU at 97% of its core
    (or the load generator cannot keep up).
    """
    rate = (
        float(args.sweep_start) if args.sweep_start > 0 else max(100.0, round(4000.0 / fanout, -1))
    )
    scenario = await start_scenario(args, fanout, rate, target)
    steps: list[dict[str, Any]] = []
    verdict = "max rate reached"
    try:
        await asyncio.sleep(args.warmup)
        for _ in range(args.sweep_steps):
            await scenario.publisher.request({"cmd": "rate", "pps": rate})
            await asyncio.sleep(args.sweep_settle)
            await wait_for_quiet(args, scenario)
            step = await measure(args, scenario, args.sweep_window)
            step["target_pps"] = rate
            steps.append(step)
            _print_step(step)
            loss = step["sfu_loss_pct"] or 0.0
            if loss > args.sweep_stop_loss:
                verdict = f"SFU loss above {args.sweep_stop_loss}%"
                break
            if step["sfu_core_pct"] >= 97.0:
                verdict = "SFU at 97% of its core"
                break
            if step["in_pps"] < 0.95 * rate:
                verdict = "publisher could not keep up"
                break
            if step["saturated_clients"] or step["clients_core_pct"] > 95.0:
                verdict = "client core saturated"
                break
            rate = round(rate * args.sweep_factor, -1)
            if rate > args.sweep_max:
                break
    finally:
        await scenario.stop()

    def clean(step: dict[str, Any]) -> bool:
        return (step["sfu_loss_pct"] or 0.0) <= args.loss_threshold

    first_loss = next((s for s in steps if not clean(s)), None)
    below = steps[: steps.index(first_loss)] if first_loss is not None else steps
    best = max(below, key=lambda s: s["in_pps"]) if below else None
    return {
        "target": target,
        "server_mode": server_mode(args, target),
        "fanout": fanout,
        "loss_threshold_pct": args.loss_threshold,
        "stopped_by": verdict,
        "max_clean_in_pps": best["in_pps"] if best else None,
        "max_clean_forwarded_pps": best["forwarded_pps"] if best else None,
        "max_clean_sfu_core_pct": best["sfu_core_pct"] if best else None,
        "sfu_source_digest": scenario.source_digest,
        "first_loss_in_pps": first_loss["in_pps"] if first_loss else None,
        "first_loss_sfu_core_pct": first_loss["sfu_core_pct"] if first_loss else None,
        "first_loss_pct": first_loss["sfu_loss_pct"] if first_loss else None,
        "first_loss_longest_run": first_loss["longest_loss_run"] if first_loss else None,
        "last_in_pps": steps[-1]["in_pps"] if steps else None,
        "last_forwarded_pps": steps[-1]["forwarded_pps"] if steps else None,
        "last_sfu_core_pct": steps[-1]["sfu_core_pct"] if steps else None,
        "last_loss_pct": steps[-1]["sfu_loss_pct"] if steps else None,
        "steps": steps,
    }


# --------------------------------------------------------------- profiling

_EPOLL_WAIT = "epoll wait (idle, or the syscall and wake-up)"
_CATEGORIES = (
    _EPOLL_WAIT,
    "event loop (epoll, scheduling)",
    "recvfrom (syscall + asyncio read)",
    "SRTP unprotect",
    "parse (RTP header, VP8 descriptor)",
    "ingress bookkeeping (stats, NACK, cache)",
    "per-subscriber rewrite",
    "native loop (sfu/_native.c: rewrite, bookkeeping)",
    "dispatch (fast path, demux, send wrapper)",
    "SRTP protect",
    "sendto (syscall incl. loopback delivery)",
    "RTCP, timers, control",
    "other",
)

# Python frames: "func (file:line)"; native ones (py-spy --native): "func (library)"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame_category(func: str, path: str, line: int) -> str | None:
    """The category of one frame, or None to decide from its caller."""
    short = func.rsplit(".", 1)[-1]
    base = os.path.basename(path)
    if short.startswith("srtp_unprotect"):  # libsrtp itself (native frames)
        return "SRTP unprotect"
    if short.startswith("srtp_protect"):
        return "SRTP protect"
    if base.startswith("_native."):  # sfu/_native.c; its calls into libsrtp/libc are leaves
        return "native loop (sfu/_native.c: rewrite, bookkeeping)"
    if base.startswith("libc.so"):
        if "sendto" in short or "sendmsg" in short:
            return "sendto (syscall incl. loopback delivery)"
        if "recvfrom" in short or "recvmsg" in short:
            return "recvfrom (syscall + asyncio read)"
        if "epoll" in short:  # asleep, or the syscall: what the measured CPU leaves
            return _EPOLL_WAIT
        return None
    if "pylibsrtp" in path:
        if short.startswith("unprotect"):
            return "SRTP unprotect"
        if short.startswith("protect"):
            return "SRTP protect"
        return None
    text = linecache.getline(path, line) if line > 0 else ""
    if base == "aiortc_adapter.py":
        if short == "srtp_unprotect":
            return "SRTP unprotect"
        if short == "srtp_protect":
            return "SRTP protect"
        if short == "read_ready":
            if "recvfrom(" in text:
                return "recvfrom (syscall + asyncio read)"
            return "dispatch (fast path, demux, send wrapper)"
        if "unprotect" in text:
            return "SRTP unprotect"
        if ".protect(" in text or "protect_rtcp(" in text:
            return "SRTP protect"
        if "sendto(" in text:
            return "sendto (syscall incl. loopback delivery)"
        if short in ("datagram_received", "_rtp_in", "send", "send_rtp"):
            return "dispatch (fast path, demux, send wrapper)"
        return "RTCP, timers, control"
    if base == "selector_events.py":
        if short == "sendto":
            return "sendto (syscall incl. loopback delivery)"
        if short.startswith("_read_ready"):
            return "recvfrom (syscall + asyncio read)"
        return "event loop (epoll, scheduling)"
    if (
        base in ("selectors.py", "base_events.py", "events.py")
        and "asyncio" in path
        or base == "selectors.py"
    ):
        return "event loop (epoll, scheduling)"
    if "/sfu/" in path:
        if base == "packet.py":
            if short.startswith("build_"):
                return "per-subscriber rewrite"
            return "parse (RTP header, VP8 descriptor)"
        if base == "rewrite.py":
            return "per-subscriber rewrite"
        if base == "forwarder.py":
            if short in ("forward", "_render", "_extension", "skip"):
                return "per-subscriber rewrite"
            return "RTCP, timers, control"
        if base in ("receive_stats.py", "nack.py", "packet_cache.py", "seq.py"):
            return "ingress bookkeeping (stats, NACK, cache)"
        if base == "source.py":
            if short == "on_rtp":
                if "fanout(" in text:
                    return "native loop (sfu/_native.c: rewrite, bookkeeping)"
                if "forward(" in text or "for forwarder" in text:
                    return "dispatch (fast path, demux, send wrapper)"
                if "Vp8Descriptor(" in text:
                    return "parse (RTP header, VP8 descriptor)"
                return "ingress bookkeeping (stats, NACK, cache)"
            return "RTCP, timers, control"
        if base == "participant.py":
            if short == "_on_publisher_rtp":
                if "RtpView(" in text:
                    return "parse (RTP header, VP8 descriptor)"
                return "dispatch (fast path, demux, send wrapper)"
            if short == "send_rtp":
                return "dispatch (fast path, demux, send wrapper)"
            return "RTCP, timers, control"
        return "RTCP, timers, control"
    if "aiortc" in path or "aioice" in path or "aiohttp" in path:
        return "RTCP, timers, control"
    return None


def _categorize(stack: list[tuple[str, str, int]]) -> str:
    """Map one sampled stack (root first) to a category, deciding from the leaf up."""
    for func, path, line in reversed(stack):
        category = _frame_category(func, path, line)
        if category is not None:
            return category
    return "other"


def summarise_profile(raw_path: Path) -> dict[str, Any]:
    samples: dict[str, int] = dict.fromkeys(_CATEGORIES, 0)
    leaves: dict[str, int] = {}
    total = 0
    for line in raw_path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames: list[tuple[str, str, int]] = []
        for part in stack_text.split(";"):
            match = _FRAME.match(part)
            if match:
                frames.append((match["func"], match["file"], int(match["line"] or 0)))
        if not frames:
            continue
        category = _categorize(frames)
        samples[category] += count
        total += count
        leaf = frames[-1]
        key = f"{leaf[0]} ({os.path.relpath(leaf[1], REPO) if leaf[1].startswith(str(REPO)) else os.path.basename(leaf[1])}:{leaf[2]})"
        leaves[key] = leaves.get(key, 0) + count
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:25]
    return {
        "samples": total,
        "sample_counts": samples,
        "share_of_samples_pct": {
            k: round(100 * v / total, 1) if total else 0.0 for k, v in samples.items()
        },
        "top_leaf_lines": [{"frame": k, "pct": round(100 * v / total, 1)} for k, v in top],
    }


async def run_profile(args: argparse.Namespace, fanout: int, out_dir: Path) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return {"fanout": fanout, "error": "py-spy not installed (pip install py-spy)"}
    scenario = await start_scenario(args, fanout, fanout_pps(args, fanout), "parley")
    raw = out_dir / f"profile-fanout{fanout}.txt"
    try:
        await asyncio.sleep(args.warmup)
        await wait_for_quiet(args, scenario)
        cmd = [
            spy,
            "record",
            "--pid",
            str(scenario.server.pid),
            "--duration",
            str(int(args.window)),
            "--rate",
            str(args.profile_rate),
            "--full-filenames",
            "--format",
            "raw",
            "--output",
            str(raw),
        ]
        if not args.profile_blocking:
            cmd.append("--nonblocking")
        else:  # py-spy samples native frames only while it stops the process
            cmd.append("--native")  # frames inside sfu/_native.c, libsrtp and libc too
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        if args.pin:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, {CLIENT_CPU})
        await asyncio.sleep(0.5)  # let py-spy attach
        measured = await measure(args, scenario, args.window - 1.0, {"py-spy": proc.pid})
        try:
            _, err = await asyncio.wait_for(proc.communicate(), args.window + 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"fanout": fanout, "error": "py-spy did not finish"}
        if proc.returncode != 0 or not raw.exists():
            return {
                "fanout": fanout,
                "error": f"py-spy failed: {err.decode(errors='replace')[-500:]}",
            }
    finally:
        await scenario.stop()
    summary = summarise_profile(raw)
    # py-spy samples wall-clock time and, here, does not drop the samples where the
    # thread sleeps in epoll_wait. So: the time in each category is samples / rate; per
    # incoming packet, divide by the packets of the recording; the epoll line gets what
    # the measured CPU time leaves (the syscall, context switches, wake-ups).
    duration = float(int(args.window))
    packets = measured["in_pps"] * duration
    counts = summary.pop("sample_counts")
    per_packet = {
        k: 1e6 * n / args.profile_rate / packets for k, n in counts.items() if k != _EPOLL_WAIT
    }
    cpu_per_packet = measured["sfu_us_per_in"] or 0.0
    sampled = sum(per_packet.values())
    summary["sampled_vs_measured_cpu"] = (
        round(sampled / cpu_per_packet, 2) if cpu_per_packet else None
    )
    if sampled > cpu_per_packet > 0:  # more samples than CPU time: scale down to the CPU time
        per_packet = {k: v * cpu_per_packet / sampled for k, v in per_packet.items()}
    per_packet[_EPOLL_WAIT] = max(0.0, cpu_per_packet - sum(per_packet.values()))
    summary["us_per_incoming_packet"] = {k: round(v, 2) for k, v in per_packet.items()}
    summary["us_per_incoming_packet_total_cpu"] = cpu_per_packet
    summary["share_of_cpu_pct"] = {
        k: round(100 * v / cpu_per_packet, 1) if cpu_per_packet else 0.0
        for k, v in per_packet.items()
    }
    summary.update(
        fanout=fanout,
        sfu_source_digest=scenario.source_digest,
        raw_file=str(raw),
        rate_hz=args.profile_rate,
        duration_s=duration,
        measured_during_profile={
            k: measured[k]
            for k in (
                "in_pps",
                "forwarded_pps",
                "sfu_core_pct",
                "sfu_us_per_in",
                "sfu_us_per_fwd",
                "sfu_loss_pct",
            )
        },
        sfu_user_system_s=[
            measured["cpu"]["server"]["user_s"],
            measured["cpu"]["server"]["system_s"],
        ],
        blocking=args.profile_blocking,
    )
    return summary


# --------------------------------------------------------------- calibration


def _bench_packets(n: int, mid_ext_id: int = 1, mid: bytes = b"0", fpp: int = 10) -> list[bytes]:
    """``n`` packets exactly like the publisher's (PT 96, SSRC 0x1234)."""
    body = bytes(((mid_ext_id << 4) | (len(mid) - 1),)) + mid
    body += b"\x00" * (-len(body) % 4)
    ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    body_len = PACKET_SIZE - 12 - len(ext) - 8
    key = b"\x10\x02\x00\x9d\x01\x2a" + (640).to_bytes(2, "little") + (360).to_bytes(2, "little")
    key_body = (key + bytes(range(256)) * 4)[:body_len]
    filler = b"\xa5" * body_len
    out = []
    for i in range(n):
        pos, pid = i % fpp, (i // fpp) & 0x7FFF
        first = pos == 0
        desc = bytes((0x90 if first else 0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF))
        header = struct.pack(
            "!BBHII",
            0x90,
            (0x80 if pos == fpp - 1 else 0) | 96,
            i & 0xFFFF,
            (i // fpp) * 3000,
            0x1234,
        )
        out.append(header + ext + desc + (key_body if first else filler) + i.to_bytes(4, "big"))
    return out


def calibrate(n: int = 20000) -> dict[str, float]:
    """Per-packet cost of each step of the SFU's path, in isolation (µs, best of 3).

    No event loop, no wake-ups: a floor for what the same work costs in the server.
    """
    import pylibsrtp
    from aiortc.rtcdtlstransport import SRTP_AEAD_AES_256_GCM

    from sfu.forwarder import ABS_SEND_TIME_URI, EgressParams, Forwarder
    from sfu.forwarder import MID_URI as FWD_MID_URI
    from sfu.rtp.packet import RtpView, Vp8Descriptor
    from sfu.source import Source, SourceParams

    policy = pylibsrtp.Policy
    key = os.urandom(SRTP_AEAD_AES_256_GCM.key_length + SRTP_AEAD_AES_256_GCM.salt_length)

    def session(direction: int) -> Any:
        return pylibsrtp.Session(
            policy(key=key, ssrc_type=direction, srtp_profile=policy.SRTP_PROFILE_AEAD_AES_256_GCM)
        )

    packets = _bench_packets(n)

    class Owner:
        def request_keyframe(self, source: Any) -> None:
            pass

        def source_has_missing(self, source: Any) -> None:
            pass

        def keyframe_deferred(self, source: Any, at: float) -> None:
            pass

    class Sink:  # sfu.forwarder.PacketSink; nothing is sent
        def send_rtp(self, data: bytes) -> bool:
            return True

        def send_rtp_twice(self, data: bytes) -> bool:
            return True

        def send_video(self, data: bytes, now: float) -> bool:
            return True

        def room_for_frame(self) -> bool:
            return True

        def layer_changed(self, forwarder: Any) -> None:
            pass

        def frame_dropped(self, forwarder: Any, now: float) -> None:
            pass

    def best(fn: Callable[[], None], count: int = n) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(1e6 * min(times) / count, 2)

    out: dict[str, float] = {}
    tx = session(policy.SSRC_ANY_OUTBOUND)
    protected = [tx.protect(p) for p in packets]

    def protect() -> None:
        s = session(policy.SSRC_ANY_OUTBOUND)
        for p in packets:
            s.protect(p)

    def unprotect() -> None:
        s = session(policy.SSRC_ANY_INBOUND)
        for p in protected:
            s.unprotect(p)

    def parse() -> None:
        for p in packets:
            v = RtpView(p)
            Vp8Descriptor(p, v.payload_start, v.payload_end)

    params = SourceParams(
        track_id="t", kind="video", codec="vp8", clock_rate=90000, payload_type=96, ssrc=0x1234
    )

    def ingress() -> None:  # parse + Source.on_rtp with no forwarder
        source = Source(params, Owner())
        for i, p in enumerate(packets):
            source.on_rtp(RtpView(p), i * 0.0002)

    views = [RtpView(p) for p in packets]
    vp8s = [
        Vp8Descriptor(p, v.payload_start, v.payload_end)
        for p, v in zip(packets, views, strict=True)
    ]

    def rewrite() -> None:  # one Forwarder.forward (header/descriptor rewrite, extensions)
        source = Source(params, Owner())
        fwd = Forwarder([source], Sink(), "s")
        fwd.configure(
            EgressParams(
                mid="0",
                payload_type=96,
                ssrc=0x5678,
                rtx_payload_type=97,
                rtx_ssrc=0x9ABC,
                extensions={FWD_MID_URI: 1, ABS_SEND_TIME_URI: 3},
            )
        )
        fwd.start(0.0)  # the m-line is negotiated: forward the only layer
        for i, (v, d) in enumerate(zip(views, vp8s, strict=True)):
            fwd.forward(source, v, d, i * 0.0002)

    out["SRTP protect (AES-256-GCM)"] = best(protect)
    out["SRTP unprotect (AES-256-GCM)"] = best(unprotect)
    out["parse RTP header + VP8 descriptor"] = best(parse)
    out["ingress: parse + Source.on_rtp (no forwarder)"] = best(ingress)
    out["Forwarder.forward (rewrite, no send)"] = best(rewrite)

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        addr = rx.getsockname()

        def sendto() -> None:
            for j in range(0, n, 32):
                for p in protected[j : j + 32]:
                    tx_sock.sendto(p, addr)
                while True:
                    try:
                        rx.recv(4096)
                    except BlockingIOError:
                        break

        with_drain = best(sendto)
        out["loopback sendto + recv (same thread, no wake-up)"] = with_drain
    finally:
        rx.close()
        tx_sock.close()
    return out


# --------------------------------------------------------------- reporting


def source_digest() -> str:
    """A digest of the SFU and signaling sources the server runs (they may change under us)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("sfu/**/*.py"), *REPO.glob("signaling/**/*.py")]):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_state() -> dict[str, Any]:

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *argv], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "sfu_signaling_dirty": bool(git("status", "--porcelain", "--", "sfu", "signaling")),
    }


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    openssl = None
    with contextlib.suppress(Exception):
        from OpenSSL import SSL

        openssl = SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()
    rmem = {}
    for name in ("rmem_default", "rmem_max", "wmem_default"):
        with contextlib.suppress(OSError):
            rmem[name] = int(Path(f"/proc/sys/net/core/{name}").read_text())
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiortc": version("aiortc"),
        "aioice": version("aioice"),
        "pylibsrtp": version("pylibsrtp"),
        "openssl": openssl,
        "pinning": (
            {"sfu_cpu": SERVER_CPU, "clients_cpu": CLIENT_CPU}
            if args.pin
            else "none (scheduler places processes)"
        ),
        "net_core": rmem,
        "client_socket_rcvbuf": args.client_rcvbuf,
    }


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def _print_step(step: dict[str, Any]) -> None:
    print(
        f"  sweep {step['target']} K={step['fanout']:>2} target {step['target_pps']:>7.0f} pps: in {step['in_pps']:>8.0f} "
        f"fwd {step['forwarded_pps']:>8.0f} SFU {step['sfu_core_pct']:>5.1f}% "
        f"{_fmt(step['sfu_us_per_fwd'], '.1f')} us/fwd  SFU loss {_fmt(step['sfu_loss_pct'], '.3f')}% "
        f"(client sockets dropped {step['udp_drops_client_sockets']}) clients {step['clients_core_pct']:.0f}%",
        flush=True,
    )


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'server':>6} {'K':>3} {'in pps':>8} {'fwd pps':>9} {'SFU %core':>9} {'us/in':>7} {'us/fwd':>7} "
        f"{'loss %':>7} {'SFU loss %':>10} {'srv drops':>9} {'cli drops':>9} {'pub %':>6} {'subs %':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        subs = sum(v["core_pct"] for k, v in r["cpu"].items() if k.startswith("subs"))
        print(
            f"{r['target']:>6} {r['fanout']:>3} {r['in_pps']:>8.0f} {r['forwarded_pps']:>9.0f} {r['sfu_core_pct']:>9.1f} "
            f"{_fmt(r['sfu_us_per_in'], '.2f'):>7} {_fmt(r['sfu_us_per_fwd'], '.2f'):>7} "
            f"{_fmt(r['loss_pct'], '.3f'):>7} {_fmt(r['sfu_loss_pct'], '.3f'):>10} "
            f"{r['udp_drops_server_sockets']:>9} {r['udp_drops_client_sockets']:>9} "
            f"{r['cpu']['publisher']['core_pct']:>6.1f} {subs:>7.1f}"
        )
    for r in results:
        if r["saturated_clients"]:
            print(
                f"  {r['target']} K={r['fanout']}: client process(es) above 90% of a core: {', '.join(r['saturated_clients'])}"
            )
        if r["clients_core_pct"] > 90:
            print(
                f"  {r['target']} K={r['fanout']}: the client processes together used {r['clients_core_pct']}% of a core"
            )


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(report: dict[str, Any], other: str = "janus") -> dict[str, Any]:
    """Parley / ``other`` per fan-out (same rates, same run): CPU per packet, and the sweeps'."""
    out: dict[str, Any] = {}
    by = {(r["target"], r["fanout"]): r for r in report["results"]}
    for (target, fanout), parley in sorted(by.items(), key=lambda kv: kv[0][1]):
        theirs = by.get((other, fanout))
        if target != "parley" or theirs is None:
            continue
        out[f"fanout_{fanout}"] = {
            "in_pps": [parley["in_pps"], theirs["in_pps"]],
            "parley_us_per_fwd": parley["sfu_us_per_fwd"],
            f"{other.replace('-', '_')}_us_per_fwd": theirs["sfu_us_per_fwd"],
            "us_per_fwd": _ratio(parley["sfu_us_per_fwd"], theirs["sfu_us_per_fwd"]),
            "us_per_in": _ratio(parley["sfu_us_per_in"], theirs["sfu_us_per_in"]),
            "sfu_loss_pct": [parley["sfu_loss_pct"], theirs["sfu_loss_pct"]],
        }
    sweeps = {(s["target"], s["fanout"]): s for s in report.get("sweep", [])}
    for (target, fanout), parley in sorted(sweeps.items(), key=lambda kv: kv[0][1]):
        theirs = sweeps.get((other, fanout))
        if target != "parley" or theirs is None:
            continue
        out[f"sweep_fanout_{fanout}"] = {
            "max_clean_forwarded_pps": _ratio(
                parley["max_clean_forwarded_pps"], theirs["max_clean_forwarded_pps"]
            ),
            "stopped_by": [parley["stopped_by"], theirs["stopped_by"]],
        }
    return out


def janus_info(args: argparse.Namespace) -> dict[str, Any]:
    """What the JSON records about the Janus under test."""

    version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(
            ["janus", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        match = re.search(r"Janus version:\s*(\S+)\s*\(([^)]*)\)", text)
        version = match.group(2) if match else text.strip().splitlines()[0]
    return {
        "version": version,
        "event_loops": args.janus_event_loops,
        "pinned_cpu": SERVER_CPU if args.pin else None,
        "room": JANUS_ROOM,
        "signaling": "websockets transport (janus-protocol), loadgen.load.janus.JanusSession",
        "notes": (
            "janus.jcfg from bench/janus_server.py: only the VideoRoom plugin and the "
            "websockets transport loaded, event handlers off, debug_level 3, ICE only on "
            "the veth (ice_enforce_list), no full trickle; the VideoRoom's own jcfg is empty"
        ),
        "config_files": getattr(args, "janus_config_files", None),
    }


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    fanouts = [int(x) for x in args.fanouts.split(",") if x.strip()]
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    out_dir = Path(args.json).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "forwarding",
        "command": " ".join(
            [
                os.path.relpath(sys.argv[0], REPO)
                if sys.argv[0].startswith(str(REPO))
                else sys.argv[0],
                *sys.argv[1:],
            ]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "targets": targets,
        "server_mode": {t: server_mode(args, t) for t in targets},
        "machine": machine_info(args),
        "git": git_state(),
        "sfu_source_digest_at_start": source_digest(),
        "load": {
            "packet_bytes": PACKET_SIZE,
            "packets_per_frame": args.frame_packets,
            "every_frame_keyframe": True,
            "codec": "VP8 (payload descriptor with 15-bit picture id; no decoding anywhere)",
            "header_extensions": "MID (one-byte form)",
            "pps": args.pps,
            "warmup_s": args.warmup,
            "window_s": args.window,
            "windows_per_fanout": args.repeat,
            "client_procs": args.client_procs,
            "srtp_requested": args.srtp,
        },
        "results": [],
    }
    if args.pin:
        _pin(CLIENT_CPU)
    print(
        f"forwarding bench ({', '.join(f'{t}: {server_mode(args, t)}' for t in targets)}): "
        f"{len(os.sched_getaffinity(0)) if not args.pin else os.cpu_count()} CPUs; "
        + (
            f"SFU pinned to core {SERVER_CPU}, clients (and this script) to core {CLIENT_CPU}"
            if args.pin
            else "no pinning"
        ),
        flush=True,
    )
    if args.calibrate and "parley" in targets:
        if args.pin:
            _pin(SERVER_CPU)
        report["calibration_us_per_packet"] = calibrate()
        _pin(CLIENT_CPU if args.pin else None)
        print("per-packet cost of each step in isolation (no event loop; us):", flush=True)
        for k, v in report["calibration_us_per_packet"].items():
            print(f"  {k:<52} {v:>6.2f}", flush=True)
    profiles: set[str] = set()
    for fanout in fanouts:
        for target in targets:
            print(
                f"{target} fan-out {fanout}: {fanout_pps(args, fanout):.0f} pps, "
                f"warm-up {args.warmup} s, window {args.window} s ...",
                flush=True,
            )
            result = await run_fanout(args, fanout, target)
            report["results"].append(result)
            profiles.add(str(result["srtp_profile_publisher"]))
            profiles.update(result["srtp_profiles_subscribers"])
            print(
                f"  in {result['in_pps']:.0f} pps, fwd {result['forwarded_pps']:.0f} pps, "
                f"SFU {result['sfu_us_per_in']} us/in, {result['sfu_us_per_fwd']} us/fwd, "
                f"SFU loss {result['sfu_loss_pct']}%",
                flush=True,
            )
    report["machine"]["srtp_profile_negotiated"] = sorted(profiles)
    if args.sweep:
        report["sweep"] = []
        sweep_fanouts = [
            int(x) for x in (args.sweep_fanouts or args.fanouts).split(",") if x.strip()
        ]
        for fanout in sweep_fanouts:
            for target in targets:
                print(
                    f"sweep {target} fan-out {fanout} (x{args.sweep_factor} per step) ...",
                    flush=True,
                )
                sweep = await run_sweep(args, fanout, target)
                report["sweep"].append(sweep)
                print(
                    f"  no SFU loss up to {sweep['max_clean_in_pps']} pps in "
                    f"({sweep['max_clean_forwarded_pps']} forwarded); first loss at "
                    f"{sweep['first_loss_in_pps']} pps; stopped by: {sweep['stopped_by']}",
                    flush=True,
                )
    if args.profile and "parley" in targets:
        report["profile"] = []
        profile_fanouts = [
            int(x) for x in (args.profile_fanouts or args.fanouts).split(",") if x.strip()
        ]
        for fanout in profile_fanouts:
            print(f"profiling the SFU at fan-out {fanout} with py-spy ...", flush=True)
            report["profile"].append(await run_profile(args, fanout, out_dir))
    if args.profile and "parley" not in targets:
        print("--profile samples Parley with py-spy: nothing to profile for Janus", flush=True)
    if "janus" in targets:
        report["janus"] = janus_info(args)
    print()
    print_table(report["results"])
    print(f"SRTP profile negotiated: {', '.join(sorted(profiles))}")
    for other, label in (("janus", "Janus"), ("parley-py", "parley-py")):
        if "parley" not in targets or other not in targets:
            continue
        suffix = other.replace("-", "_")
        key_name = f"ratios_parley_over_{suffix}"
        report[key_name] = ratios(report, other)
        for key, value in report[key_name].items():
            if key.startswith("fanout_"):
                print(
                    f"Parley / {label} at K={key[7:]}: {value['us_per_fwd']} "
                    f"({value['parley_us_per_fwd']} / "
                    f"{value[suffix + '_us_per_fwd']} us per forwarded packet)"
                )
            else:
                print(
                    f"Parley / {label} sweep K={key[13:]}: max clean forwarded pps ratio "
                    f"{value['max_clean_forwarded_pps']} (stopped by: {' / '.join(value['stopped_by'])})"
                )
    for p in report.get("profile", []):
        if "error" in p:
            print(f"profile K={p['fanout']}: {p['error']}")
            continue
        print(
            f"where the time goes at K={p['fanout']} (us per incoming packet, {p['samples']} samples):"
        )
        for k, v in sorted(p["us_per_incoming_packet"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<46} {v:>7.2f} us  ({p['share_of_cpu_pct'][k]:.1f}%)")
    digests = {r.get("sfu_source_digest") for r in report["results"]}
    digests |= {r.get("sfu_source_digest") for r in report.get("sweep", [])}
    digests |= {r.get("sfu_source_digest") for r in report.get("profile", [])}
    digests.discard(None)
    report["sfu_source_changed_during_run"] = len(digests) > 1
    if len(digests) > 1:
        print("WARNING: sfu/ or signaling/ changed during the run; figures mix versions")
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--target",
        default="parley",
        help="server(s) to measure, comma-separated: parley, parley-py (Parley with "
        "PARLEY_NATIVE=0: forwarding in Python, not C), janus; e.g. parley,janus (each "
        "fan-out runs against each in turn; the JSON has Parley / Janus and Parley / "
        "parley-py ratios where both ran)",
    )
    p.add_argument(
        "--isolated",
        action="store_true",
        help="run Parley in a network namespace of its own over a veth pair, as Janus always "
        "is (bench/janus_server.py), so both servers pay the same network path",
    )
    p.add_argument(
        "--janus-event-loops",
        type=int,
        default=0,
        help="Janus's event_loops setting (default 0: Janus's default, a thread per handle)",
    )
    p.add_argument(
        "--fanouts", default="1,4,16", help="comma-separated subscriber counts (default 1,4,16)"
    )
    p.add_argument(
        "--pps", type=float, default=5000, help="publisher packets per second (default 5000)"
    )
    p.add_argument(
        "--max-forwarded-pps",
        type=float,
        default=12000.0,
        help="cap the publisher rate at this / K so the SFU stays below saturation (0: no cap)",
    )
    p.add_argument(
        "--frame-packets", type=int, default=10, help="packets per (key)frame (default 10)"
    )
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds after all subscribers get media"
    )
    p.add_argument(
        "--window", type=float, default=8.0, help="measurement window in seconds (default 8)"
    )
    p.add_argument(
        "--repeat", type=int, default=2, help="windows per fan-out; the least disturbed is kept"
    )
    p.add_argument(
        "--max-foreign",
        type=float,
        default=10.0,
        help="wait before a window until other processes use at most this %% of a core",
    )
    p.add_argument(
        "--quiet-timeout", type=float, default=60.0, help="longest wait for that, seconds"
    )
    p.add_argument("--drain", type=float, default=0.3, help="seconds to let in-flight packets land")
    p.add_argument(
        "--client-procs", type=int, default=2, help="processes for the subscribers (default 2)"
    )
    p.add_argument(
        "--client-rcvbuf",
        type=int,
        default=4 << 20,
        help="SO_RCVBUF of client sockets (0: default)",
    )
    p.add_argument(
        "--srtp",
        choices=[*SRTP_PROFILE_NAMES, "any"],
        default="aes256gcm",
        help="DTLS-SRTP profile the clients accept (default aes256gcm)",
    )
    p.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin the SFU/clients to cores 0/1"
    )
    p.add_argument(
        "--json",
        default=str(REPO / "bench" / "results" / "forwarding.json"),
        help="output JSON path",
    )
    p.add_argument(
        "--sweep", action="store_true", help="also raise the rate until SFU loss appears"
    )
    p.add_argument("--sweep-fanouts", default=None, help="fan-outs to sweep (default: --fanouts)")
    p.add_argument(
        "--sweep-start", type=float, default=0.0, help="first sweep rate (default 4000/K pps)"
    )
    p.add_argument("--sweep-factor", type=float, default=1.25)
    p.add_argument("--sweep-max", type=float, default=60000.0)
    p.add_argument("--sweep-steps", type=int, default=20)
    p.add_argument("--sweep-settle", type=float, default=1.0)
    p.add_argument("--sweep-window", type=float, default=4.0)
    p.add_argument(
        "--sweep-stop-loss",
        type=float,
        default=1.0,
        help="sweep stops once SFU loss exceeds this %% (default 1)",
    )
    p.add_argument(
        "--loss-threshold", type=float, default=0.1, help="SFU loss %% that counts as saturation"
    )
    p.add_argument("--profile", action="store_true", help="also sample the SFU with py-spy")
    p.add_argument(
        "--profile-fanouts", default=None, help="fan-outs to profile (default: --fanouts)"
    )
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument(
        "--profile-blocking",
        action="store_true",
        help="let py-spy pause the SFU for each sample (default --nonblocking, which matched "
        "the measured CPU time here; blocking mode over-counted syscalls)",
    )
    p.add_argument(
        "--no-batch-reads",
        dest="batch_reads",
        action="store_false",
        help="subscribers read one datagram per event-loop turn (asyncio default)",
    )
    p.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="skip timing each step of the SFU path in isolation",
    )
    p.add_argument("--gc-log", action="store_true", help="server prints GC pauses >= 5 ms")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="hard bound on the whole run")
    # worker-side (internal)
    p.add_argument(
        "--worker", choices=["server", "publisher", "subscribers"], help=argparse.SUPPRESS
    )
    p.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--protocol", choices=TARGETS, default="parley", help=argparse.SUPPRESS)
    p.add_argument("--ice-address", default="127.0.0.1", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--room", default="bench", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--name-prefix", default="sub", help=argparse.SUPPRESS)
    return p


async def _main_async(args: argparse.Namespace) -> int:
    task = asyncio.ensure_future(orchestrate(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await asyncio.wait_for(task, args.max_seconds)
    except (asyncio.CancelledError, TimeoutError):
        print("forwarding bench: interrupted or out of time", file=sys.stderr)
        return 1
    except BenchError as exc:
        print(f"forwarding bench failed: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    if not targets or any(t not in TARGETS for t in targets) or len(set(targets)) != len(targets):
        parser.error(f"--target: one or more of {', '.join(TARGETS)}, comma-separated")
    needs = ["ip", "nsenter", "taskset"] if "janus" in targets or args.isolated else []
    needs += ["janus"] if "janus" in targets else []
    missing = [tool for tool in needs if shutil.which(tool) is None]
    if missing:
        parser.error(f"not installed: {', '.join(missing)} (janus: apt-get install -y janus)")
    ensure_loopback_namespace()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        print("forwarding bench: fewer than 2 CPUs available, not pinning", file=sys.stderr)
        args.pin = False
    if args.pin and not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        args.pin = False
    return asyncio.run(_main_async(args))


if __name__ == "__main__":
    sys.exit(main())
