"""The lean bots of ``parley load``: a publisher that replays cached media, a subscriber
that only counts.

Both speak the signaling protocol of ``docs/protocol.md`` (the web page's) over
``{url}/ws``. Peer connections come from :func:`sfu.aiortc_adapter.create_peer_connection`
(ICE only on the given address, no public STUN) and carry media through
:class:`sfu.aiortc_adapter.MediaPort`: aiortc negotiates, but neither encodes nor
decodes. A publisher sends tagged RTP (:class:`loadgen.media.prepared.OutStream`); a
subscriber reads each packet's tag right after SRTP decryption, records its one-way
latency and feeds :class:`loadgen.load.metrics.TrackRx`. Publishers answer PLI/FIR
with a keyframe and NACK with RTX; subscribers send a PLI when a frame breaks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadgen.load.subscriber import LoadSubscriber

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from loadgen.join_phases import JoinTimeline
from loadgen.load.metrics import (
    KINDS,
    LAYER_AUDIO,
    Interval,
    LatencyHistogram,
    split_stream_id,
)
from loadgen.load.session import OfferedTrack, OfferHandler, ParleySession, ServerSession
from sfu.aiortc_adapter import (
    MediaPort,
    create_peer_connection,
    hook_receiver,
)
from sfu.config import IceConfig

logger = logging.getLogger(__name__)

NTP_EPOCH_OFFSET = 2_208_988_800
#: A rejoin's first wait (s, times 0.5-1 at random), doubled per failed attempt up to the max.
REJOIN_FIRST_DELAY = 0.25
REJOIN_MAX_DELAY = 2.0
PSFB_PLI = 1
PSFB_FIR = 4
RTPFB_NACK = 1
#: At most one PLI per track per this many seconds from a subscriber.
PLI_INTERVAL = 0.5


@dataclass(slots=True)
class BotSpec:
    """One bot of a load run. ``index`` is global per role (stream ids use it)."""

    role: str  # "publisher" | "subscriber"
    room: str
    name: str
    index: int
    start_at: float  # time.monotonic() when it starts joining
    simulcast: bool = False
    max_height: int | None = None
    #: glass to glass: publishers encode live, subscribers decode (``loadgen/load/e2e.py``)
    e2e: bool = False
    #: subscribers: keep a per-second timeline and the server's ``layer`` messages
    #: (the analysis of impaired links, ``loadgen/impair/schedule.py``)
    watch: bool = False
    #: subscribers: send receiver reports and NACKs (``loadgen/load/rtcp.py``)
    feedback: bool = True
    #: join token, for a server with an API secret (``parley load --api-secret/--token``)
    token: str | None = None
    #: rejoin when the websocket drops (``parley load --reconnect``), through the run's
    #: URL or the next of these (``--fallback-url``)
    reconnect: bool = False
    fallback_urls: tuple[str, ...] = ()
    #: subscribe connection read by ``sfu._recv.Reader`` (``parley load --python-io``: not)
    native_io: bool = True


@dataclass(slots=True)
class Reconnect:
    """One drop of a bot's websocket and its rejoin (``time.monotonic()`` times)."""

    lost_at: float
    reason: str
    #: the node the bot was on, and the one it rejoined at
    node_before: str | None
    node: str | None = None
    attempts: int = 0
    last_error: str | None = None
    joined_at: float | None = None
    #: media again: a subscriber's first packet, a publisher sending
    media_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        def ms(t: float | None) -> float | None:
            return None if t is None else round((t - self.lost_at) * 1000, 1)

        return {
            "reason": self.reason,
            "node_before": self.node_before,
            "node": self.node,
            "attempts": self.attempts,
            "recovered": self.joined_at is not None,
            "joined_after_ms": ms(self.joined_at),
            "media_after_ms": ms(self.media_at),
            "last_error": self.last_error,
        }


# -------------------------------------------------------------- shared metrics


class WorkerMetrics:
    """Everything one worker process measures; ``interval`` is reset every second."""

    def __init__(self) -> None:
        self.total = Interval()
        self.interval = Interval()
        self.subscribers: list[LoadSubscriber] = []
        self._last_rx: dict[str, tuple[int, int, int, int]] = {}
        self._last_repaired: dict[str, int] = {}
        #: capture-to-decode latency (``--e2e``), recorded from decoder threads
        self.e2e = LatencyHistogram()
        self._e2e_lock = threading.Lock()

    def record_e2e(self, latency_ms: float) -> None:
        with self._e2e_lock:
            self.e2e.record(latency_ms)

    def record_latency(self, kind: str, latency_ms: float) -> None:
        """Per packet: into this second's histogram only (``total`` gets it merged when
        the second is taken, or at ``finish_counters``: one bucket lookup per packet)."""
        self.interval.latency[kind].record(latency_ms)

    def _merge_latency(self) -> None:
        """Move this second's latencies into ``total`` (once)."""
        for kind in KINDS:
            self.total.latency[kind].merge(self.interval.latency[kind])
            self.interval.latency[kind] = LatencyHistogram()

    def count_sent(self, kind: str) -> None:
        self.total.counters[kind].sent += 1
        self.interval.counters[kind].sent += 1

    def take_interval(self) -> Interval:
        """The second that just ended: its latencies and its counter deltas."""
        interval = self.interval
        for kind in KINDS:
            self.total.latency[kind].merge(interval.latency[kind])
        self.interval = Interval()
        for kind in KINDS:
            now = _rx_counters(self.subscribers, kind)
            last = self._last_rx.get(kind, (0, 0, 0, 0))
            counters = interval.counters[kind]
            counters.received = now[0] - last[0]
            counters.lost = now[1] - last[1]
            counters.expected = now[2] - last[2]
            counters.duplicates = now[3] - last[3]
            repaired = _repaired(self.subscribers, kind)
            counters.repaired = repaired - self._last_repaired.get(kind, 0)
            self._last_repaired[kind] = repaired
            self._last_rx[kind] = now
        return interval

    def finish_counters(self) -> None:
        self._merge_latency()
        for kind in KINDS:
            received, lost, expected, duplicates = _rx_counters(self.subscribers, kind)
            counters = self.total.counters[kind]
            counters.received = received
            counters.lost = lost
            counters.expected = expected
            counters.duplicates = duplicates
            counters.repaired = _repaired(self.subscribers, kind)


def _rx_counters(subscribers: list[LoadSubscriber], kind: str) -> tuple[int, int, int, int]:
    received = lost = expected = duplicates = 0
    video = kind == "video"
    for sub in subscribers:
        for stream, rx in sub.streams.items():
            if (split_stream_id(stream)[1] != LAYER_AUDIO) == video:
                received += rx.received
                lost += rx.lost
                expected += rx.expected
                duplicates += rx.duplicates
    return received, lost, expected, duplicates


def _repaired(subscribers: list[LoadSubscriber], kind: str) -> int:
    return sum(sub.repaired[kind] for sub in subscribers)


# ----------------------------------------------------------------------- base

SessionFactory = Callable[[str, OfferHandler], ServerSession]


class LoadBot:
    """Join, run until :meth:`stop`, leave. Errors are recorded, never raised."""

    def __init__(
        self,
        spec: BotSpec,
        url: str,
        metrics: WorkerMetrics,
        ice_address: str = "127.0.0.1",
        session_factory: SessionFactory = ParleySession,
    ) -> None:
        self.spec = spec
        self.url = url
        self.metrics = metrics
        self.ice_address = ice_address
        self.errors: list[str] = []
        self.joined = False
        self.ws_open_at: float | None = None
        self.joined_at: float | None = None
        self._session_factory = session_factory
        self.session = session_factory(url, self.on_offer)
        self.session.token = spec.token
        #: each drop of the websocket and the rejoin (``spec.reconnect``)
        self.reconnects: list[Reconnect] = []
        #: the last reconnect while media has not come back yet
        self._awaiting_media: Reconnect | None = None
        #: the join's per-phase timeline (``loadgen/join_phases.py``), from ``ws_open_at``
        self.join_timeline: JoinTimeline | None = None
        self.session.on_phase = self.phase
        #: the peer connection on which this bot receives (every bot answers offers)
        self.sub_pc: RTCPeerConnection | None = None
        self.sub_port: MediaPort | None = None
        self._hooked: set[int] = set()
        self.packets_ignored = 0
        self._stop = asyncio.Event()
        self._closed = False
        self.done = False

    def ice_config(self) -> IceConfig:
        return IceConfig(servers=self.session.ice_servers, addresses=(self.ice_address,))

    async def run(self, join_timeout: float = 15.0) -> None:
        delay = self.spec.start_at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        if self._stop.is_set():
            self.done = True
            return
        try:
            self.ws_open_at = time.monotonic()
            self.join_timeline = JoinTimeline(self.ws_open_at)
            await self.session.join(
                self.spec.room, self.spec.name, self.spec.role == "publisher", join_timeout
            )
            self.joined_at = time.monotonic()
            self.phase("joined", self.joined_at)  # (Janus; Parley's session noted it as it came)
            self.joined = True
            await self.started()
            while True:
                stop = asyncio.ensure_future(self._stop.wait())
                closed = asyncio.ensure_future(self.session.closed.wait())
                await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                closed.cancel()
                if self._stop.is_set():
                    break
                if not self.spec.reconnect:
                    self.errors.append("the server closed the connection")
                    break
                if not await self._rejoin(join_timeout):
                    break
        except Exception as exc:  # recorded in the report
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            await self.close()
            self.errors.extend(self.session.errors)
            self.done = True

    def stop(self) -> None:
        self._stop.set()

    # ---- rejoining (``spec.reconnect``)

    async def _rejoin(self, join_timeout: float) -> bool:
        """The websocket dropped: tear this session's media down, rejoin with a capped
        backoff (the run's URL, then each fallback in turn), start again. False when the
        run stopped first."""
        old = self.session
        record = Reconnect(time.monotonic(), old.drop_reason(), old.node_url)
        self.reconnects.append(record)
        self.errors.extend(old.errors)
        old.stopping = True
        await self.reset_media()
        with contextlib.suppress(Exception):
            await old.close()
        entries = (self.url, *self.spec.fallback_urls)
        delay = REJOIN_FIRST_DELAY
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay * random.uniform(0.5, 1.0))
            if self._stop.is_set():
                return False
            url = entries[record.attempts % len(entries)]
            record.attempts += 1
            self.session = self._session_factory(url, self.on_offer)
            self.session.token = self.spec.token
            self.bind_session()
            try:
                await self.session.join(
                    self.spec.room, self.spec.name, self.spec.role == "publisher", join_timeout
                )
                break
            except Exception as exc:
                record.last_error = f"{type(exc).__name__}: {exc}"
                with contextlib.suppress(Exception):
                    await self.session.close()
                delay = min(delay * 2, REJOIN_MAX_DELAY)
        record.joined_at = time.monotonic()
        record.node = self.session.node_url
        self._awaiting_media = record
        await self.started()
        return True

    def media_back(self, now: float) -> None:
        """Media flows again after a rejoin (the first packet, or publishing again)."""
        record = self._awaiting_media
        if record is not None:
            record.media_at = now
            self._awaiting_media = None

    def bind_session(self) -> None:
        """A new session after a rejoin: hook what the bot listens to on it."""

    async def reset_media(self) -> None:
        """Before a rejoin: close this session's peer connections (the next session
        negotiates new ones); what was measured is kept."""
        await self._close_receiving()
        self.sub_pc = None
        self.sub_port = None
        self._hooked.clear()

    async def started(self) -> None:
        """Joined: publish, or wait for offers."""

    def phase(self, phase: str, now: float | None = None) -> None:
        """Note a phase of the join (``loadgen/join_phases.py``; the first time wins)."""
        if self.join_timeline is not None:
            self.join_timeline.mark(phase, time.monotonic() if now is None else now)

    @property
    def join_phases(self) -> dict[str, float] | None:
        return None if self.join_timeline is None else self.join_timeline.to_json()

    async def on_offer(self, sdp: str, tracks: list[OfferedTrack]) -> str:
        """A server offer of what to receive; returns the answer. Receivers are hooked
        (nothing decoded) and packets go to :meth:`_on_rtp` through a MediaPort."""
        self.phase("subscribe.offer_received")
        pc = self.sub_pc
        if pc is None:
            pc = create_peer_connection(self.ice_config())
            self.sub_pc = pc

            @pc.on("iceconnectionstatechange")
            def on_ice() -> None:
                if pc.iceConnectionState in ("connected", "completed"):
                    self.phase("subscribe.ice_connected")

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc.connectionState == "connected":
                    self.phase("subscribe.dtls_connected")
                if pc.connectionState == "connected" and self.sub_port is not None:
                    self.sub_port.install_fast_path()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            if id(transceiver) not in self._hooked:
                self._hooked.add(id(transceiver))
                hook_receiver(transceiver.receiver, lambda n: None)
            if self.sub_port is None and transceiver.receiver.transport is not None:
                self.sub_port = MediaPort(
                    transceiver.receiver.transport,
                    self._on_rtp,
                    self._on_sub_rtcp,
                    native_io=self.spec.native_io,
                )
        await pc.setLocalDescription(await pc.createAnswer())
        if pc.connectionState == "connected" and self.sub_port is not None:
            self.sub_port.install_fast_path()
        self.phase("subscribe.answer_sent")  # (ready: the session sends it at once)
        return str(pc.localDescription.sdp)

    def _on_rtp(self, data: bytes, now: float) -> None:
        """A decrypted packet of what this bot receives (publishers only count them)."""
        self.packets_ignored += 1

    def _on_sub_rtcp(self, data: bytes, now: float) -> None:
        """RTCP on the receiving connection (publishers ignore it)."""

    async def _close_receiving(self) -> None:
        if self.sub_port is not None:
            self.sub_port.close()
        if self.sub_pc is not None:
            with contextlib.suppress(Exception):
                await self.sub_pc.close()

    async def close_media(self) -> None:
        """Stop media and close peer connections."""

    def cluster_summary(self) -> dict[str, Any]:
        """Where the bot ended (``node``: the node it last joined at, after redirects),
        and each rejoin."""
        return {
            "node": self.session.node_url,
            "reconnects": [r.to_json() for r in self.reconnects],
        }

    def summary(self) -> dict[str, Any]:
        """What this bot did, for the report's ``bots.list``."""
        return {"name": self.spec.name, "role": self.spec.role, "joined": self.joined}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.session.stopping = True
        await self.close_media()
        await self.session.close()
