"""Whether a bandwidth probe's packets arrived (pure, time passed in).

A probe (``sfu/bwe.py``) sends padding-only RTX packets on top of the media so that the
subscriber's link carries ``target`` bit/s for ``duration`` seconds. It succeeds only
when the receiver shows that they arrived; silence is not success:

* a **REMB rise**: a REMB of at least ``remb_share`` x the probed rate, sent in the
  second half of the probe or after it (REMB is the receiver's own estimate of what
  its link takes, derived from what it receives: a receiver that got the probe at its
  rate without queues building says so; one whose link could not carry it does not);
* or the **receiver reports of the RTX stream** that carried the padding: between the
  report block before the probe (or the first one during it) and one that arrives
  after it, the extended highest sequence number grew and the cumulative lost count
  did not, by at least ``received_share`` of the padding packets sent in between
  (those sent in the last ``in_flight`` seconds before the report may still be on
  their way). A bottleneck that cannot carry the probe drops part of it (the report
  shows loss) or delays it past the report (the sequence number has not got there).
  REMB-only receivers whose estimate rises slowly (aiortc's grows about 8 % a second)
  are judged this way. A report that shows more than ``max_loss`` of the RTX packets
  lost fails the probe at once.

What the reports cannot tell is the rate itself: a deep buffer that delivers the
padding a little late, before the next report, passes. A receiver's REMB drop during
the probe (when believed), and loss on the media streams, fail it as before
(``BandwidthEstimator._signal``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    remb_share: float = 0.9
    received_share: float = 0.8
    max_loss: float = 0.05
    in_flight: float = 0.1


@dataclass(frozen=True, slots=True)
class RtxMark:
    """One report block of an RTX stream: extended highest sequence number, cumulative
    lost count, arrival time."""

    highest: int
    lost: int
    at: float


@dataclass(slots=True)
class Probe:
    """One probe: padding ``rate`` bit/s for ``duration`` s from ``start``, so that the
    link carries ``target`` bit/s (what was sent besides, plus the padding)."""

    start: float
    rate: float
    target: float = 0.0
    duration: float = 0.5
    #: the newest report of each RTX stream before the probe (or the first during it)
    baseline: dict[int, RtxMark] = field(default_factory=dict)
    #: padding packets sent so far
    packets: int = 0
    #: what showed the probe arrived ("remb", "reports"), None while nothing has
    proof: str | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration

    def sending(self, now: float, duration: float | None = None) -> bool:
        return now < self.start + (self.duration if duration is None else duration)

    def on_remb(self, bitrate: float, now: float, settings: ProbeSettings) -> None:
        if now >= self.start + self.duration / 2 and bitrate >= settings.remb_share * self.target:
            self.proof = self.proof or "remb"

    def on_rtx_report(self, stream: int, mark: RtxMark, settings: ProbeSettings) -> bool | None:
        """A report block of an RTX stream: True when it shows the padding arrived,
        False when it shows too much of it lost, None when it says neither."""
        base = self.baseline.get(stream)
        if base is None or (mark.highest - base.highest) & 0xFFFFFFFF >= 0x8000:
            if mark.at < self.end:
                self.baseline[stream] = mark  # the first during the probe
            return None
        expected = mark.highest - base.highest
        lost = max(0, mark.lost - base.lost)
        if expected > 0 and lost > settings.max_loss * expected and lost >= 2:
            return False
        if mark.at < self.end:
            return None
        # padding sent between the baseline and what the report can have seen (sent
        # evenly over the probe)
        since = max(base.at, self.start)
        until = min(self.end, mark.at - settings.in_flight)
        due = self.packets * max(0.0, until - since) / self.duration if self.duration else 0
        if due >= 1 and expected - lost >= settings.received_share * due:
            self.proof = self.proof or "reports"
            return True
        return None
