"""Prometheus metrics at ``/metrics`` (``prometheus-client``), one registry per application.

Three sources, none of them on the packet path:

* at scrape time, :class:`SfuCollector` reads what the SFU already counts: rooms,
  participants, tracks, paused tracks and layers (gauges); packets and bytes in and
  out, forwarded packets by path, NACKs, RTX, PLIs (counters: the live objects' counts
  plus what departed tracks and participants counted, kept by :class:`Retired`, so a
  ``_total`` never goes backwards);
* events: an ``SfuObserver`` (``sfu/observer.py``) counts rooms, joins, leaves and
  publications; the signaling server counts the errors it sends (``count_error``);
* timers: once a second each subscription's loss and round trip time and each
  subscriber's estimate are observed into histograms; every ``JOIN_POLL`` seconds the
  joiners still waiting for media are checked (join latency); the event loop's lag is
  measured every ``LAG_INTERVAL`` (``signaling/loop_lag.py``).

Process CPU and memory come from prometheus-client's ``ProcessCollector`` (``/proc``).
docs/operations.md lists every metric.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfu import native
from sfu.counters import StreamTotals
from sfu.observer import SfuObserver
from sfu.participant import Participant
from sfu.ports import RoomEvents
from sfu.room import Sfu
from sfu.tracks import PublishedTrack

from .loop_lag import LAG_INTERVAL, LoopLagMonitor
from .messages import ERROR_CODES

#: a room as observers see it (``sfu/observer.py``)
Room = RoomEvents[Participant, Participant, PublishedTrack]

KINDS = ("audio", "video")
#: the per-participant counters (``Participant.counters``) exported, and their metric
PARTICIPANT_COUNTERS = {
    "nacks_in": ("parley_nacks_received", "RTCP NACK packets received from subscribers."),
    "rtx_sent": ("parley_rtx_packets_sent", "Retransmissions sent in answer to NACKs."),
    "rtx_limited": (
        "parley_rtx_budget_exhausted",
        "NACKs answered only in part: the retransmission budget ran out.",
    ),
    "frames_dropped": (
        "parley_frames_dropped",
        "Video frames dropped whole before sending: the pacer's queue was full.",
    ),
}
#: seconds between two looks at the joiners still waiting for their first media packet
JOIN_POLL = 0.02
#: seconds after which a joiner that got no media is no longer waited for (not observed)
JOIN_GIVE_UP = 60.0
#: seconds between two observations of loss, round trip time and estimates
SAMPLE_INTERVAL = 1.0

JOIN_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
LOSS_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
RTT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
ESTIMATE_BUCKETS = (1e5, 2.5e5, 5e5, 1e6, 1.5e6, 2.5e6, 4e6, 6e6, 1e7)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def layer_label(participant: Participant, track_id: str) -> str:
    """The layer a video subscription forwards now: its simulcast index ("0" lowest),
    "single" for a one-layer track, "none" while nothing is forwarded."""
    forwarder = participant.subscriptions[track_id].forwarder
    current = forwarder.current
    if current is None:
        return "none"
    return str(forwarder.layers.index(current)) if forwarder.simulcast else "single"


class Retired:
    """What departed tracks and participants counted (the collector adds the live ones)."""

    def __init__(self) -> None:
        self.streams = StreamTotals()
        self.counters: Tally[str] = Tally()

    def track_gone(self, track: PublishedTrack) -> None:
        for source in track.layers:
            self.streams.add_source(source)

    def participant_gone(self, participant: Participant) -> None:
        # its forwarders were added to ``participant.forwarded`` as they closed
        self.streams.add(participant.forwarded)
        for key in PARTICIPANT_COUNTERS:
            self.counters[key] += participant.counters.get(key, 0)


def video_subscriber(participant: Participant) -> bool:
    return any(s.forwarder.is_video for s in participant.subscriptions.values())


def live_participants(sfu: Sfu | None) -> list[Participant]:
    if sfu is None:
        return []
    return [p for room in sfu.rooms.values() for p in room.participants.values()]


class SfuCollector(Collector):
    """Gauges and counters read from the SFU at scrape time."""

    def __init__(self, retired: Retired) -> None:
        self.retired = retired
        self.sfu: Sfu | None = None

    def collect(self) -> Iterator[Metric]:
        sfu = self.sfu
        participants = live_participants(sfu)
        yield from self._gauges(sfu, participants)
        yield from self._counters(sfu, participants)

    def _gauges(self, sfu: Sfu | None, participants: list[Participant]) -> Iterable[Metric]:
        yield GaugeMetricFamily("parley_rooms", "Rooms open.", len(sfu.rooms) if sfu else 0)
        yield GaugeMetricFamily("parley_participants", "Participants in rooms.", len(participants))
        published: Tally[str] = Tally(t.kind for p in participants for t in p.tracks.values())
        subscribed: Tally[str] = Tally(
            s.track.kind for p in participants for s in p.subscriptions.values()
        )
        layers: Tally[str] = Tally()
        paused: Tally[str] = Tally()
        for p in participants:
            for track_id, sub in p.subscriptions.items():
                if sub.track.kind != "video":
                    continue
                layers[layer_label(p, track_id)] += 1
                forwarder = sub.forwarder
                if forwarder.current is None and forwarder.target is None:
                    paused["requested" if forwarder.request.paused else "allocation"] += 1
        for name, doc, tally in (
            ("parley_published_tracks", "Tracks published, by kind.", published),
            ("parley_subscribed_tracks", "Tracks subscribed (forwarders), by kind.", subscribed),
        ):
            family = GaugeMetricFamily(name, doc, labels=["kind"])
            for kind in KINDS:
                family.add_metric([kind], tally[kind])
            yield family
        family = GaugeMetricFamily(
            "parley_subscribed_video_layers",
            "Video subscriptions by the layer forwarded now: simulcast index (0 lowest), "
            "single (one-layer track), none (nothing forwarded).",
            labels=["layer"],
        )
        for layer in sorted({"0", "1", "2", "none", "single", *layers}):
            family.add_metric([layer], layers[layer])
        yield family
        family = GaugeMetricFamily(
            "parley_paused_tracks",
            "Video subscriptions forwarding nothing: paused by the subscriber (requested) "
            "or by the layer allocation (bandwidth, inactive publisher).",
            labels=["reason"],
        )
        for reason in ("requested", "allocation"):
            family.add_metric([reason], paused[reason])
        yield family
        capped = sum(1 for p in participants if video_subscriber(p) and p.bwe.cap is not None)
        family = GaugeMetricFamily(
            "parley_video_subscribers",
            "Participants receiving video, by estimate: capped (the estimate limits their "
            "layers) or unlimited (nothing limits them).",
            labels=["estimate"],
        )
        family.add_metric(["capped"], capped)
        family.add_metric(["unlimited"], sum(map(video_subscriber, participants)) - capped)
        yield family
        yield GaugeMetricFamily(
            "parley_native_forwarding",
            "1 when the C forwarding loop (sfu/_native.c) is in use, else 0.",
            1 if native.NATIVE else 0,
        )

    def _counters(self, sfu: Sfu | None, participants: list[Participant]) -> Iterable[Metric]:
        totals = StreamTotals()
        totals.add(self.retired.streams)
        counters = Tally(self.retired.counters)
        for p in participants:
            totals.add(p.forwarded)
            for sub in p.subscriptions.values():
                totals.add_forwarder(sub.forwarder)
            for track in p.tracks.values():
                for source in track.layers:
                    totals.add_source(source)
            for key in PARTICIPANT_COUNTERS:
                counters[key] += p.counters.get(key, 0)
        packets = CounterMetricFamily(
            "parley_packets",
            "RTP media packets received from publishers (in) and forwarded to "
            "subscribers (out, retransmissions and probes excluded).",
            labels=["direction", "kind"],
        )
        octets = CounterMetricFamily(
            "parley_bytes",
            "Bytes of those RTP packets (headers included, before SRTP).",
            labels=["direction", "kind"],
        )
        paths = CounterMetricFamily(
            "parley_forwarded_packets",
            "Packets forwarded, by path: native (the C loop) or python.",
            labels=["path", "kind"],
        )
        for kind in KINDS:
            for direction in ("in", "out"):
                packets.add_metric([direction, kind], totals.get(f"packets_{direction}", kind))
                octets.add_metric([direction, kind], totals.get(f"bytes_{direction}", kind))
            sent, fast = totals.get("packets_out", kind), totals.get("native_packets", kind)
            paths.add_metric(["native", kind], fast)
            paths.add_metric(["python", kind], sent - fast)
        yield from (packets, octets, paths)
        for field, name, doc in (
            ("plis_sent", "parley_plis_sent", "Keyframe requests (PLI) sent to publishers."),
            (
                "plis_throttled",
                "parley_plis_throttled",
                "Keyframe requests held back (at most one per interval per stream).",
            ),
            (
                "plis_in",
                "parley_plis_received",
                "Keyframe requests (PLI/FIR) received from subscribers.",
            ),
        ):
            yield CounterMetricFamily(name, doc, totals.get(field, "video"))
        for key, (name, doc) in PARTICIPANT_COUNTERS.items():
            yield CounterMetricFamily(name, doc, counters[key])
        stats = sfu.stats() if sfu is not None else {}
        malformed = CounterMetricFamily(
            "parley_malformed_packets",
            "Malformed packets from peers, dropped.",
            labels=["protocol"],
        )
        for protocol in ("rtp", "rtcp"):
            value = stats.get(f"{protocol}_malformed", 0)
            malformed.add_metric([protocol], value if isinstance(value, int) else 0)
        yield malformed


class ParleyMetrics(SfuObserver):
    """One application's metrics: its registry, the SFU observer, the timers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.retired = Retired()
        self.collector = SfuCollector(self.retired)
        registry.register(self.collector)
        ProcessCollector(namespace="parley", registry=registry)
        self.rooms_started = Counter("parley_rooms_started", "Rooms opened.", registry=registry)
        self.joins = Counter("parley_participants_joined", "Joins.", registry=registry)
        self.leaves = Counter("parley_participants_left", "Leaves (any reason).", registry=registry)
        self.publications = Counter(
            "parley_tracks_published", "Tracks published.", ["kind"], registry=registry
        )
        self.errors = Counter(
            "parley_signaling_errors",
            "Signaling error messages sent to clients, by code.",
            ["code"],
            registry=registry,
        )
        # every series exists from the start (at 0), so rates see the first increment
        for code in sorted(ERROR_CODES):
            self.errors.labels(code)
        for kind in KINDS:
            self.publications.labels(kind)
        self.join_latency = Histogram(
            "parley_join_latency_seconds",
            "From a joiner's websocket opening to the first media packet forwarded to it "
            "(joiners into a room where a track was already published).",
            buckets=JOIN_BUCKETS,
            registry=registry,
        )
        self.loss = Histogram(
            "parley_subscriber_loss_ratio",
            "Fraction lost (0-1) in each subscription's last receiver report, "
            "observed once a second.",
            ["kind"],
            buckets=LOSS_BUCKETS,
            registry=registry,
        )
        self.rtt = Histogram(
            "parley_subscriber_rtt_seconds",
            "Round trip time to each subscription's receiver, observed once a second.",
            ["kind"],
            buckets=RTT_BUCKETS,
            registry=registry,
        )
        self.estimate = Histogram(
            "parley_subscriber_estimate_bits_per_second",
            "Each video subscriber's bandwidth estimate, observed once a second "
            "(subscribers whose estimate limits their layers).",
            buckets=ESTIMATE_BUCKETS,
            registry=registry,
        )
        self.sent = Histogram(
            "parley_subscriber_sent_bits_per_second",
            "Video bit/s sent to each video subscriber (measured each second), observed "
            "once a second.",
            buckets=ESTIMATE_BUCKETS,
            registry=registry,
        )
        self.loop_lag = Histogram(
            "parley_event_loop_lag_seconds",
            f"How late a timer due every {LAG_INTERVAL:g} s fired.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        #: joiners waiting for their first media packet: participant -> websocket open time
        self.pending: dict[Participant, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._join_timer: asyncio.TimerHandle | None = None
        self._sample_timer: asyncio.TimerHandle | None = None
        self._lag: LoopLagMonitor | None = None

    # ------------------------------------------------------------ life

    def attach(self, sfu: Sfu) -> None:
        """Watch ``sfu`` (on its event loop) until :meth:`close`."""
        self.collector.sfu = sfu
        sfu.add_observer(self)
        self._loop = loop = asyncio.get_running_loop()
        self._lag = LoopLagMonitor(loop, self.loop_lag.observe)
        self._sample_timer = loop.call_later(SAMPLE_INTERVAL, self._sample)

    def close(self) -> None:
        """Stop the timers and stop observing. Idempotent."""
        sfu = self.collector.sfu
        if sfu is not None:
            sfu.remove_observer(self)
        for timer in (self._join_timer, self._sample_timer):
            if timer is not None:
                timer.cancel()
        self._join_timer = self._sample_timer = None
        if self._lag is not None:
            self._lag.close()
        self._loop = None
        self.pending.clear()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # ------------------------------------------------------------ SfuObserver

    def room_started(self, room: Room) -> None:
        self.rooms_started.inc()

    def participant_joined(self, room: Room, participant: Participant) -> None:
        self.joins.inc()
        if self._loop is None:
            return
        if any(other.tracks for other in room.participants.values() if other is not participant):
            opened = getattr(participant.listener, "opened_at", None)
            self.pending[participant] = opened if isinstance(opened, float) else self._loop.time()
            if self._join_timer is None:
                self._join_timer = self._loop.call_later(JOIN_POLL, self._poll_joins)

    def participant_left(self, room: Room, participant: Participant, reason: str) -> None:
        self.leaves.inc()
        self.pending.pop(participant, None)
        self.retired.participant_gone(participant)

    def track_published(self, room: Room, participant: Participant, track: PublishedTrack) -> None:
        self.publications.labels(track.kind).inc()

    def track_unpublished(
        self, room: Room, participant: Participant, track: PublishedTrack
    ) -> None:
        self.retired.track_gone(track)

    # ------------------------------------------------------------ timers

    def _poll_joins(self) -> None:
        self._join_timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        for participant, opened in list(self.pending.items()):
            if any(s.forwarder.packets_sent for s in participant.subscriptions.values()):
                del self.pending[participant]
                self.join_latency.observe(max(0.0, now - opened))
            elif now - opened > JOIN_GIVE_UP:
                del self.pending[participant]
        if self.pending:
            self._join_timer = loop.call_later(JOIN_POLL, self._poll_joins)

    def _sample(self) -> None:
        self._sample_timer = None
        loop = self._loop
        if loop is None:
            return
        try:
            self.sample(live_participants(self.collector.sfu))
        finally:
            self._sample_timer = loop.call_later(SAMPLE_INTERVAL, self._sample)

    def sample(self, participants: Iterable[Participant]) -> None:
        """Observe loss and round trip time of every subscription that had a receiver
        report, and the estimate of every video subscriber that has one."""
        for p in participants:
            video = False
            for sub in p.subscriptions.values():
                forwarder = sub.forwarder
                video = video or forwarder.is_video
                if forwarder.rtt is None:
                    continue  # no receiver report that answers a sender report yet
                self.loss.labels(forwarder.kind).observe(forwarder.fraction_lost)
                self.rtt.labels(forwarder.kind).observe(forwarder.rtt)
            if not video:
                continue
            self.sent.observe(p.egress_bitrate)
            cap = p.bwe.cap
            if cap is not None:
                self.estimate.observe(cap)

    def count_error(self, code: str) -> None:
        self.errors.labels(code).inc()


METRICS_KEY = web.AppKey("parley_metrics", ParleyMetrics)


def count_error(request: web.Request | None, code: str) -> None:
    """Count a signaling error sent to a client of ``request``'s application."""
    if request is not None:
        metrics = request.app.get(METRICS_KEY)
        if metrics is not None:
            metrics.count_error(code)


#: Whether a request may read the metrics (its ``Authorization`` header checked).
MetricsAccess = Callable[[web.Request], bool]


def setup_metrics(
    app: web.Application,
    sfu_key: web.AppKey[Sfu],
    prefix: str = "",
    *,
    allowed: MetricsAccess | None = None,
) -> None:
    """Serve ``{prefix}/metrics`` on ``app`` for the SFU stored under ``sfu_key``.

    Call after the SFU's ``cleanup_ctx`` is appended (``setup_parley`` does): the
    metrics attach to the SFU once it exists and stop before it closes. ``allowed``
    decides who may read them (everyone when None); others get 401."""
    metrics = ParleyMetrics()
    app[METRICS_KEY] = metrics

    async def metrics_handler(request: web.Request) -> web.Response:
        if allowed is not None and not allowed(request):
            return web.Response(
                status=401,
                text="the metrics need Authorization: Bearer <API secret or admin token>\n",
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def metrics_context(app: web.Application) -> AsyncIterator[None]:
        metrics.attach(app[sfu_key])
        yield
        metrics.close()

    app.cleanup_ctx.append(metrics_context)
    app.router.add_get(f"{prefix}/metrics", metrics_handler)
