"""The benchmark's clients: the publisher (hand-written RTP through a ``MediaPort`` on a
hooked sender) and the subscribers (hooked receivers that mark packet indexes), with
their signaling to Parley (``parley_client``) or Janus."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from harness.common import (
    JANUS_ROOM,
    PACKET_SIZE,
    SRTP_PROFILE_NAMES,
    emit_json,
    log_stderr,
)
from sfu.rtp.extensions import MID_URI


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
    from sfu.socket_buffers import set_buffers

    if size <= 0:
        return
    for sock in aiortc_adapter.ice_sockets(dtls):
        set_buffers(sock, size, send=False)


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
            log_stderr(f"{self.name}: server error {message.to_json()}")
            emit_json({"event": "error", "who": self.name, "message": message.to_json()})
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
            emit_json({"event": "receiving", "who": self.name})

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
                    emit_json(
                        {
                            "event": "connected",
                            "who": self.name,
                            "srtp_profile": _selected_profile(self.dtls),
                            "ports": _ice_ports(self.dtls),
                        }
                    )
                elif pc.connectionState == "failed":
                    emit_json(
                        {"event": "error", "who": self.name, "message": "peer connection failed"}
                    )

        pc = self.pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            if id(transceiver.receiver) not in self.hooked:
                adapter.hook_receiver(transceiver.receiver, lambda _params: None)
                self.hooked.add(id(transceiver.receiver))
        if self.port is None:
            self.dtls = pc.getTransceivers()[0].receiver.transport
            _restrict_srtp(self.dtls, self.args.srtp)
            # the C reader (recvmmsg, SRTP unprotect in C) unless --no-batch-reads
            self.port = adapter.MediaPort(
                self.dtls, self.on_rtp, self.on_rtcp, native_io=self.args.batch_reads
            )
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
        emit_json(
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
