"""A pipe between two Parley SFUs: one room spread over several SFU processes.

Like mediasoup's ``PipeTransport``: one UDP socket per pair of SFUs, plain RTP/RTCP on a
trusted interface (loopback between workers of one host, a private network between
nodes), carrying many tracks, every simulcast layer of each. Either side exports its
publishers' tracks (:meth:`PipeTransport.export_track`, ``export_participant``,
``export_room``); the other side publishes them in the room of the same name as a
remote publisher (``sfu/pipe_import.py``), whose subscribers get them as from any
publisher. NACK, PLI and REMB flow back (``sfu/pipe_export.py``). The wire format is in
``sfu/pipe_wire.py``, the reliable control channel in ``sfu/pipe_control.py``.

    pipe_a = await PipeTransport.open(sfu_a, ("127.0.0.1", 0))
    pipe_b = await PipeTransport.open(sfu_b, ("127.0.0.1", 0))
    pipe_a.connect(pipe_b.local_address)
    pipe_b.connect(pipe_a.local_address)
    await pipe_a.export_room("standup")   # every publisher there, now and later, to B

A pipe whose peer falls silent for ``timeout`` seconds (pings go every second), or
whose control message goes unacknowledged for ``attempts × retransmit`` seconds, closes
itself (``on_closed`` is called): its remote publishers leave their rooms. So does a pipe
whose peer restarted (a new session id): the owner opens a new pipe.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Any

from .participant import Participant
from .pipe_control import ControlChannel
from .pipe_data import DataPipe
from .pipe_export import Exporter
from .pipe_import import Importer, PipedListener
from .pipe_srtp import PipeCrypto, new_key
from .pipe_wire import CONTROL, RTCP, RTP, WireError, classify, decode_control, encode_control
from .room import Sfu
from .rtp.rtcp import parse_rtcp
from .socket_buffers import set_buffers
from .tracks import PublishedTrack

__all__ = ["PipeError", "PipeTransport"]

logger = logging.getLogger(__name__)

#: how often (s) the pipe's timer runs: control retransmissions, SR, pings, REMB
TICK = 0.05
PING_INTERVAL = 1.0
#: the pipe socket's buffers: a busy event loop reads nothing for a while, and a
#: datagram that finds the receive buffer full is lost (and asked for again: more load)
SOCKET_BUFFER = 4 << 20
#: datagrams read per wake-up of the event loop at most (then other work gets a turn)
READ_BATCH = 64
REMB_INTERVAL = 1.0


class PipeError(Exception):
    """An export the far side did not acknowledge, or a pipe that is closed."""


class PipeTransport:
    def __init__(self, sfu: Sfu, *, timeout: float = 5.0, srtp: bool = False) -> None:
        self.sfu = sfu
        self.timeout = timeout
        self.remote: tuple[str, int] | None = None
        #: with ``srtp``: this side's SRTP master key (the peer's ``connect`` needs it)
        self.key: bytes | None = new_key() if srtp else None
        self._crypto: PipeCrypto | None = None
        self.closed = False
        self.close_reason: str | None = None
        #: called once when the pipe closes (by ``close``, a timeout or the peer's bye)
        self.on_closed: Callable[[str], None] | None = None
        #: test hook: an outgoing RTP datagram for which it returns True is not sent
        self.drop_rtp: Callable[[bytes], bool] | None = None
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self.control = ControlChannel(
            secrets.token_hex(8), self._send, self._on_control, self._peer_restarted
        )
        config = sfu.config
        self.exporter = Exporter(self._send_rtp, self._announce, self._loop.time)
        self.data = DataPipe(self._announce, self.exporter.wants, lambda: self.sfu.rooms)
        self.importer = Importer(
            self._join,
            self._send,
            self._loop,
            config.min_publish_bitrate,
            config.max_publish_bitrate,
            cache_size=config.packet_cache_size,
            keyframe_interval=config.keyframe_request_interval,
        )
        self.counters = {
            "rtp_in": 0,
            "rtcp_in": 0,
            "control_in": 0,
            "bad_in": 0,
            "sent": 0,
            "send_failed": 0,
            "srtp_failed": 0,
        }
        self.dropped_on_purpose = 0
        self._heard = self._loop.time()
        self._next_ping = 0.0
        self._next_remb = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._close_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        sfu: Sfu,
        local: tuple[str, int] = ("127.0.0.1", 0),
        *,
        timeout: float = 5.0,
        buffer_bytes: int = SOCKET_BUFFER,
        srtp: bool = False,
    ) -> PipeTransport:
        """A pipe of ``sfu`` listening on ``local`` (port 0: any free port), its socket's
        receive and send buffers ``buffer_bytes`` (the kernel's limits allowing); with
        ``srtp``, media is SRTP and control authenticated (``sfu/pipe_srtp.py``)."""
        loop = asyncio.get_running_loop()
        pipe = cls(sfu, timeout=timeout, srtp=srtp)
        sock = socket.socket(
            socket.AF_INET6 if ":" in local[0] else socket.AF_INET, socket.SOCK_DGRAM
        )
        try:
            sock.bind(local)
            set_buffers(sock, buffer_bytes)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), pipe._readable)
        except BaseException:
            sock.close()
            raise
        pipe._sock = sock
        sfu.add_observer(pipe.exporter)
        sfu.add_observer(pipe.data)
        pipe._timer = loop.call_later(TICK, pipe._tick)
        return pipe

    # ------------------------------------------------------------ the socket

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return host, port

    def _readable(self) -> None:
        """Read up to READ_BATCH datagrams per wake-up (asyncio's datagram transport reads
        one per event-loop iteration: one socket carrying a whole room's layers would fall
        behind a busy loop)."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error reported on the socket
                logger.debug("pipe %s: %s", self.remote, exc)
                continue
            self.datagram_received(data, addr)

    def connect(self, remote: tuple[str, int], peer_key: bytes | None = None) -> None:
        """Send to (and accept datagrams only from) the peer pipe at ``remote``; an SRTP
        pipe needs the peer's ``key`` (ValueError without, or with one for a plain pipe)."""
        if (self.key is None) != (peer_key is None):
            raise ValueError("both ends of a pipe use SRTP, or neither")
        if self.key is not None and peer_key is not None:
            self._crypto = PipeCrypto(self.key, peer_key)
        self.remote = (remote[0], remote[1])
        self._heard = self._loop.time()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.closed or addr[:2] != self.remote:
            return
        if self._crypto is not None:
            clear = self._crypto.unprotect(data)
            if clear is None:
                self.counters["srtp_failed"] += 1
                return
            data = clear
        now = self._loop.time()
        self._heard = now
        kind = classify(data)
        try:
            if kind == RTP:
                self.counters["rtp_in"] += 1
                self.importer.on_rtp(data, now)
            elif kind == RTCP:
                self.counters["rtcp_in"] += 1
                for packet in parse_rtcp(data):
                    self.exporter.on_rtcp(packet, now)
                    self.importer.on_rtcp(packet, now)
            elif kind == CONTROL:
                self.counters["control_in"] += 1
                self.control.on_message(decode_control(data))
            else:
                self.counters["bad_in"] += 1
        except WireError as exc:
            self.counters["bad_in"] += 1
            logger.warning("pipe %s: bad control message: %s", self.remote, exc)
        except Exception:  # one bad datagram never stops the pipe
            self.counters["bad_in"] += 1
            logger.exception("pipe %s: handling a datagram failed", self.remote)

    # ------------------------------------------------------------ sending

    def _send(self, data: bytes) -> None:
        if self._sock is None or self.remote is None or self.closed:
            return
        if self._crypto is not None:
            data = self._crypto.protect(data)
        try:
            self._sock.sendto(data, self.remote)
            self.counters["sent"] += 1
        except OSError:  # the send buffer is full (a loss, repaired as any), or an error
            self.counters["send_failed"] += 1

    def _send_rtp(self, data: bytes) -> None:
        drop = self.drop_rtp
        if drop is not None and drop(data):
            self.dropped_on_purpose += 1
            return
        self._send(data)

    def _announce(self, message: dict[str, Any]) -> int:
        return self.control.send(message, self._loop.time())

    async def _acked(self, n: int, what: str) -> None:
        deadline = self._loop.time() + self.control.retransmit * self.control.attempts + 1.0
        while not self.control.acked(n):
            if self.closed:
                raise PipeError(f"pipe closed before {what} was acknowledged")
            if self._loop.time() > deadline:
                raise PipeError(f"{what} was not acknowledged")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------ exporting

    def _find(self, room_id: str, participant_id: str) -> Participant:
        room = self.sfu.rooms.get(room_id)
        participant = room.participants.get(participant_id) if room is not None else None
        if participant is None:
            raise KeyError(f"no participant {participant_id} in room {room_id}")
        return participant

    async def export_track(self, room_id: str, participant_id: str, mid: str) -> PublishedTrack:
        """Pipe one published track (``mid``: its publish m-line) to the far side; returns
        when the far side has it. KeyError: no such track; PipeError: not acknowledged."""
        if self.closed or self.remote is None:
            raise PipeError("the pipe is closed or not connected")
        track = self._find(room_id, participant_id).tracks.get(mid)
        if track is None:
            raise KeyError(f"participant {participant_id} publishes no mid {mid}")
        participant = self._find(room_id, participant_id)
        n = self.exporter.export(room_id, participant, track, self._loop.time())
        await self._acked(n, f"track {track.id}")
        return track

    async def export_participant(self, room_id: str, participant_id: str) -> None:
        """Pipe every track of one participant, now and as it publishes more."""
        participant = self._find(room_id, participant_id)
        self.exporter.participants.add((room_id, participant_id))
        self.data.tap(room_id, participant)
        for track in list(participant.tracks.values()):
            await self.export_track(room_id, participant_id, track.mid)

    async def export_room(self, room_id: str) -> None:
        """Pipe every track published in ``room_id`` here (not those piped in from
        elsewhere), now and later."""
        if self.closed or self.remote is None:
            raise PipeError("the pipe is closed or not connected")
        self.exporter.rooms.add(room_id)
        room = self.sfu.rooms.get(room_id)
        if room is not None:
            self.data.tap_room(room)  # its data-channel messages too (sfu/pipe_data.py)
        for participant in list(room.participants.values()) if room is not None else []:
            if self.exporter.wants(room_id, participant):
                for track in list(participant.tracks.values()):
                    await self.export_track(room_id, participant.id, track.mid)

    def unexport_room(self, room_id: str) -> None:
        """Stop following ``room_id``: its tracks are unpublished on the far side and its
        remote publishers there leave."""
        self.exporter.rooms.discard(room_id)
        self.data.untap_room(room_id)
        self.exporter.unexport_room(room_id)

    # ------------------------------------------------------------ importing

    def _join(
        self,
        room_id: str,
        name: str,
        listener: PipedListener,
        participant_id: str,
        identity: str | None,
    ) -> Participant:
        return self.sfu.join(
            room_id, name, listener, participant_id=participant_id, identity=identity
        )

    def _on_control(self, message: dict[str, Any]) -> None:
        kind, now = message["t"], self._loop.time()
        if kind == "export":
            self.importer.on_export(message["track"], now)
        elif kind == "unexport":
            self.importer.on_unexport(message["room"], message["participant"], message["track"])
        elif kind == "mute":
            self.importer.on_mute(
                message["room"], message["participant"], message["track"], message["muted"] is True
            )
        elif kind == "data":
            self.data.on_data(message)
        elif kind == "leave":
            self.importer.on_leave(message["room"], message["participant"])
        elif kind == "bye":
            self._close_soon("the far side closed the pipe")

    @property
    def set_muted(self) -> Callable[[Participant, PublishedTrack, bool], None]:
        """How an operator's mute on the origin is applied to the piped track here: by
        default the track is muted for the SFU's subscribers; the signaling server sets
        ``signaling.admin.set_muted`` so that its clients are told too."""
        return self.importer.set_muted

    @set_muted.setter
    def set_muted(self, apply: Callable[[Participant, PublishedTrack, bool], None]) -> None:
        self.importer.set_muted = apply

    def _peer_restarted(self) -> None:
        """The peer is a new pipe (it restarted): what either side announced is void, so
        this pipe closes (its owner opens a new one)."""
        self._close_soon("the far side restarted")

    # ------------------------------------------------------------ periodic

    def _tick(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = self._loop.time()
        try:
            if self.remote is not None:
                if now - self._heard > self.timeout:
                    self._close_soon(f"nothing heard from the far side for {self.timeout:g} s")
                    return
                if self.control.poll(now):
                    self._close_soon("a control message was never acknowledged")
                    return
                self.exporter.send_sender_reports(now)
                if now >= self._next_ping:
                    self._next_ping = now + PING_INTERVAL
                    self._send(encode_control({"t": "ping", "s": self.control.session}))
                if now >= self._next_remb:
                    self._next_remb = now + REMB_INTERVAL
                    self.importer.send_estimates()
        except Exception:  # never let one bad tick stop the pipe
            logger.exception("pipe %s: periodic work failed", self.remote)
        self._timer = self._loop.call_later(TICK, self._tick)

    def stats(self) -> dict[str, Any]:
        taps = [t for e in self.exporter.tracks.values() for t in e.taps]
        return {
            **self.counters,
            "exported_tracks": len(self.exporter.tracks),
            "imported_tracks": len(self.importer.tracks),
            "remote_publishers": len(self.importer.remote),
            "piped_packets": sum(t.packets for t in taps),
            "retransmitted": sum(t.retransmitted for t in taps),
            "nacks_in": self.exporter.nacks,
            "nacks_sent": self.importer.nacks_sent,
            "keyframe_requests_in": self.exporter.keyframe_requests,
            "control_retransmissions": self.control.retransmissions,
            "dropped_on_purpose": self.dropped_on_purpose,
            **self.data.stats(),
            "srtp": self.key is not None,
        }

    # ------------------------------------------------------------ lifecycle

    def _close_soon(self, reason: str) -> None:
        if self._close_task is None and not self.closed:
            self._close_task = asyncio.ensure_future(self.close(reason))

    async def close(self, reason: str = "pipe closed") -> None:
        """Tell the far side (its remote publishers of ours leave), stop piping, and make
        the remote publishers of the far side's tracks leave here. Idempotent."""
        if self.closed:
            return
        if self.remote is not None and self._sock is not None:
            self.control.send({"t": "bye"}, self._loop.time())  # best effort: not awaited
        self.closed = True
        self.close_reason = reason
        if reason != "pipe closed":
            logger.warning("pipe %s closed: %s", self.remote, reason)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sfu.remove_observer(self.exporter)
        self.sfu.remove_observer(self.data)
        self.exporter.close()
        self.data.close()
        await self.importer.close(reason)
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self.on_closed is not None:
            self.on_closed(reason)
