"""When to probe and what a probe's outcome does (for ``SendSideEstimator``).

One cluster at a time (``probe``): started from the larger of the estimate and the
acknowledged rate, but no higher than what the path carried at the last decrease
unless the last probe succeeded (``probe_factor`` x, ``probe_growth`` x after a success), judged by
``probe.judge`` as its feedback comes. After a success the next may follow at once;
after a failure it waits ``probe_wait`` s, doubled after each further one (at most
``max_probe_wait``), or ``probe_retry`` s when the failure follows a success (a
receiver's stall, likely). A cluster that went out below its target ("not sent")
proves nothing either way: it is retried after ``probe_retry`` s, with no other effect. The spans the last clusters were sent in (and
``probe_drain`` s of the queue they left) are remembered: their loss is the probe's,
not the link's. For ``probe_drain_floor`` s after a failure, delay-based decreases
stop at ``probe_floor`` x where it probed from (the queue it left has been judged).
"""

from __future__ import annotations

from .packet import PacketResult
from .probe import NOT_SENT, Probe, ProbeResult, collect, judge, new_probe
from .settings import GccSettings


class Probing:
    def __init__(self, settings: GccSettings) -> None:
        self.settings = settings
        self.probe: Probe | None = None
        self.failed = 0
        self.ok = 0
        #: successful probes since the last failure, decrease or hold
        self.streak = 0
        #: why the last probe ended ("ok", "loss", "queue", "saturated", "silence"...)
        self.last_result: str | None = None
        self._next = -1e9
        self._spans: list[tuple[float, float]] = []
        self._floor = (-1e9, 0.0)
        self._base = 0.0

    def due(self, now: float) -> bool:
        return self.probe is None and now >= self._next

    def start(
        self,
        now: float,
        cap: float,
        acked: float | None,
        sent: float,
        link: float | None = None,
    ) -> Probe:
        """A cluster probing from ``cap`` (or the acknowledged rate, if larger) while
        ``sent`` bit/s is being sent; unless the last probe succeeded, from no higher
        than ``link``, what the path carried at the last decrease (or the acknowledged
        rate, if larger): an estimate that has grown since while little was sent is
        not the link's, and a cluster at twice it fills a narrow link's queue at
        twice the rate before its feedback can stop it."""
        s = self.settings
        base = max(cap, acked or 0.0)
        if self.streak == 0 and link is not None:
            base = min(base, max(link, acked or 0.0))
        factor = s.probe_growth if self.streak > 0 else s.probe_factor
        target = min(base * factor, s.max_bitrate * 1.1)
        probe = self.probe = new_probe(now, base, target, sent, s.probe)
        self._base = min(cap, base)
        self._spans = [*self._spans[-3:], (now, probe.end + s.probe_drain)]
        return probe

    def rate(self, now: float) -> float:
        probe = self.probe
        return probe.rate if probe is not None and probe.sending(now) else 0.0

    def collect(self, results: list[PacketResult]) -> None:
        """Keeps the pending cluster's packets."""
        if self.probe is not None:
            collect(self.probe, results)

    @property
    def spans(self) -> list[tuple[float, float]]:
        """The send-time spans ``[a, b)`` of the last clusters and the queue each left
        to drain, whose loss is the probes' (their verdicts judge it), not the link's."""
        return self._spans

    def judge(self, now: float) -> ProbeResult | None:
        """The pending cluster's verdict once there is one (the cluster is then over)."""
        probe = self.probe
        if probe is None:
            return None
        result = judge(probe, now, self.settings.probe)
        if result is not None:
            self.done(now, result.ok, result.reason)
        return result

    def done(self, now: float, ok: bool, reason: str) -> None:
        s = self.settings
        self.probe = None
        self.last_result = reason
        if reason == NOT_SENT:
            # it carried less than it was meant to (the media it was padded up from
            # fell): it says nothing about the link, so neither a failure's wait and
            # floor nor the end of a run of successes; it is tried again soon
            self._next = now + s.probe_retry
            return
        if ok:
            self.ok += 1
            self.streak += 1
            self.failed = 0
            self._next = now + s.probe_next
            return
        self._floor = (now + s.probe_drain_floor, s.probe_floor * self._base)
        wait = s.probe_wait * 2**self.failed
        if self.streak > 0:
            wait = s.probe_retry
        self.failed += 1
        self.streak = 0
        self._next = now + min(s.max_probe_wait, wait)

    def floor(self, now: float) -> float:
        """The lowest a delay-based decrease may go now (0: no limit)."""
        until, value = self._floor
        return value if now < until else 0.0
