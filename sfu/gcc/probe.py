"""Probe clusters judged by what arrived (as libwebrtc's ``ProbeBitrateEstimator``,
with a stricter verdict).

A probe sends padding on top of the media so that everything sent from ``start`` for
``duration`` seconds goes at ``target`` bit/s: the *cluster* is every packet sent in
that span, media and padding, as transport-cc feedback reports them. It succeeds only
when the feedback shows the path carried it:

* the feedback covers the cluster (a packet sent after it has been reported, or at
  least ``coverage`` of its span by ``timeout`` seconds after it ended): silence is
  failure, never success;
* at least ``min_packets`` packets, at most ``max_loss`` of them lost;
* no queue built: the smallest one-way delay (arrival - send) of its last quarter is at
  most ``max_delay_growth`` above that of its first quarter (minima: a receiver's
  jitter only adds delay, a queue raises every packet's); not judged across a gap of
  more than ``stall_gap`` between arrivals (a receiver's process that stalled stamps
  its backlog at once; a bottleneck spreads arrivals out, never stops them), which is
  also left out of the arrival spans below;
* it was sent at ``min_sent`` x its target at least;
* its later half arrived at no less than ``min_ratio`` x the rate it was sent at. A
  token bucket's saved-up burst lets the first part of a cluster through at any rate;
  what follows comes at the link's rate, or queues. The cluster must carry more than
  such a burst, which is why it lasts ``bits / excess`` seconds (0.3-1 s).

Its result is ``utilization`` (0.95) x the lower of its send and receive rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .packet import PacketResult

#: the reason of a cluster sent below ``min_sent`` x its target: it probed nothing
NOT_SENT = "not sent"


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    min_packets: int = 10
    max_loss: float = 0.1
    max_delay_growth: float = 0.03
    min_ratio: float = 0.85
    utilization: float = 0.95
    coverage: float = 0.9
    #: a cluster sent at less than this x its target probed nothing (the media rate it
    #: was padded up from had fallen)
    min_sent: float = 0.8
    #: a gap between arrivals longer than this (s) is the receiver's stall, not the
    #: path: left out of arrival spans, and the delay growth is not judged across it
    stall_gap: float = 0.08
    timeout: float = 1.0
    #: the cluster carries at least this many bits above the rate it probes from
    excess_bits: float = 320_000.0
    min_duration: float = 0.3
    max_duration: float = 1.0
    #: the padding sent at the least (bit/s)
    min_padding: float = 60_000.0


@dataclass(slots=True)
class Probe:
    """One cluster: ``rate`` is the padding bit/s sent on top of the media,
    ``target`` what the cluster as a whole is sent at."""

    start: float
    rate: float
    target: float
    duration: float
    packets: list[PacketResult] = field(default_factory=list)
    #: the newest send time the feedback has reported
    covered: float = 0.0

    @property
    def end(self) -> float:
        return self.start + self.duration

    def sending(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    reason: str
    #: what the path was measured to carry (bit/s; success only)
    rate: float | None = None


def new_probe(
    now: float, base: float, target: float, sent: float, settings: ProbeSettings
) -> Probe:
    """A cluster probing ``target`` bit/s from ``base`` while ``sent`` is sent."""
    excess = max(1.0, target - base)
    duration = min(settings.max_duration, max(settings.min_duration, settings.excess_bits / excess))
    padding = max(settings.min_padding, target - sent)
    return Probe(now, padding, max(target, sent + padding), duration)


def collect(probe: Probe, results: list[PacketResult]) -> None:
    """Keep the feedback's packets that belong to the cluster."""
    for r in results:
        if probe.start <= r.send_time < probe.end:
            probe.packets.append(r)
        probe.covered = max(probe.covered, r.send_time)


def _rate(packets: list[PacketResult], span: float) -> float:
    """Bit/s of the received ones among ``packets`` over ``span`` seconds."""
    return sum(r.size for r in packets if r.arrival is not None) * 8 / span


def _arrival_span(packets: list[PacketResult], stall_gap: float) -> float:
    """How long ``packets`` took to arrive, less the gaps longer than ``stall_gap`` (a
    receiver's process that stalled, then stamped its backlog at once: a bottleneck
    spreads arrivals out, it does not stop them)."""
    arrivals = sorted(r.arrival for r in packets if r.arrival is not None)
    span = 0.0
    for a, b in zip(arrivals, arrivals[1:], strict=False):
        if b - a <= stall_gap:
            span += b - a
    return span


def _stalled(packets: list[PacketResult], stall_gap: float) -> bool:
    arrivals = sorted(r.arrival for r in packets if r.arrival is not None)
    return any(b - a > stall_gap for a, b in zip(arrivals, arrivals[1:], strict=False))


def judge(probe: Probe, now: float, settings: ProbeSettings) -> ProbeResult | None:
    """The cluster's verdict, or None while its feedback may still come. Before it is
    complete, a cluster that already shows loss or a queue fails at once (the padding
    stops early)."""
    s = settings
    complete = probe.covered >= probe.end
    if not complete and now < probe.end + s.timeout:
        early = _failure(probe, s, partial=True)
        return ProbeResult(False, early) if early else None
    if probe.covered < probe.start + s.coverage * probe.duration:
        return ProbeResult(False, "silence")
    failure = _failure(probe, s, partial=False)
    if failure:
        return ProbeResult(False, failure)
    # rates over the cluster's own span (it was sent in slices: first-to-last would
    # leave a slice out of the interval), or over the longer span its packets arrived in
    packets = probe.packets
    send_rate = sum(r.size for r in packets) * 8 / probe.duration
    if send_rate < s.min_sent * probe.target:
        return ProbeResult(False, NOT_SENT)  # it probed less than it was meant to
    receive_rate = _rate(packets, max(probe.duration, _arrival_span(packets, s.stall_gap)))
    middle = probe.start + probe.duration / 2
    late = [r for r in packets if r.send_time >= middle]
    half = probe.duration / 2
    late_send = sum(r.size for r in late) * 8 / half
    late_receive = _rate(late, max(half, _arrival_span(late, s.stall_gap)))
    if not late or late_receive < s.min_ratio * late_send:
        return ProbeResult(False, "saturated")
    return ProbeResult(True, "ok", s.utilization * min(send_rate, receive_rate))


def _arrival(r: PacketResult) -> float:
    assert r.arrival is not None
    return r.arrival


def _failure(probe: Probe, s: ProbeSettings, *, partial: bool) -> str | None:
    packets = probe.packets
    if len(packets) < s.min_packets:
        return None if partial else "too few packets"
    lost = sum(1 for r in packets if r.arrival is None)
    if lost > s.max_loss * len(packets):
        return "loss"
    received = sorted((r for r in packets if r.arrival is not None), key=lambda r: r.send_time)
    quarter = len(received) // 4
    if quarter >= 2 and not _stalled(received, s.stall_gap):
        first = min(_arrival(r) - r.send_time for r in received[:quarter])
        last = min(_arrival(r) - r.send_time for r in received[-quarter:])
        if last - first > s.max_delay_growth:
            return "queue"
    return None
