"""The send-side estimator's constants (``sfu/gcc/estimator.py``), with those of its
parts. ``docs/congestion.md`` says why each is what it is."""

from __future__ import annotations

from dataclasses import dataclass, field

from .aimd import AimdSettings
from .probe import ProbeSettings
from .trendline import TrendlineSettings


@dataclass(frozen=True, slots=True)
class GccSettings:
    loss_low: float = 0.02
    loss_high: float = 0.10
    #: successful probes in a row after which the layer selectors may switch up sooner
    probe_streak: int = 2
    #: the longest probe cluster (s); the controller looks at a probe's result
    #: ``probe_duration + settle`` after its start
    probe_duration: float = 1.0
    settle: float = 0.3
    #: a probe is ``probe_factor`` x the estimate, ``probe_growth`` x after a success
    probe_factor: float = 2.0
    probe_growth: float = 3.0
    #: seconds between probes: after a success, after a failure (doubled after each
    #: further one, at most ``max_probe_wait``)
    probe_next: float = 0.0
    probe_wait: float = 2.0
    max_probe_wait: float = 3.0
    #: a probe cluster's loss, and that of what follows it this long (s, its queue
    #: draining), is not counted by the loss rule (the probe's verdict judges it)
    probe_drain: float = 0.3
    #: for this long (s) after a probe fails, delay-based decreases (on the queue it
    #: left) stop at ``probe_floor`` x the estimate it probed from
    probe_drain_floor: float = 1.0
    probe_floor: float = 1.0
    #: seconds before probing again when a probe fails right after a success
    probe_retry: float = 1.0
    #: seconds without a hold (loss 2-10 %, ``hold``) or decrease before probing
    hold: float = 1.0
    #: an overuse decreases only while the acknowledged rate is below this x sent
    confirm: float = 0.95
    #: a queue of at least this many seconds stands on the path (``queue_delay``): what
    #: arrived within the newest ``recent_window`` s then measures the link
    standing_queue: float = 0.08
    recent_window: float = 0.2
    #: a queue building: at least ``onset_queue`` s of it while what arrived within the
    #: newest ``onset_window`` s is between ``onset_floor`` and ``onset_share`` x what
    #: is sent reads as overuse before the queue stands (the link narrowed a little: the
    #: queue grows slowly, and the trendline sees it only after several frames). Under
    #: ``onset_floor`` the link narrowed steeply and a queue stands within a feedback or
    #: two. The window is short: a longer one still holds the bottleneck's burst
    onset_queue: float = 0.04
    onset_window: float = 0.1
    onset_share: float = 0.8
    onset_floor: float = 0.6
    #: a probe cluster stops as soon as a queue of this many seconds shows (its own:
    #: the padding fills a narrow link's queue at the excess rate, and every
    #: feedback interval more of it is a longer freeze for the video behind it)
    probe_queue: float = 0.03
    #: seconds after a receiver's stall (``stall.py``) during which its delay is not
    #: read as overuse
    stall_hold: float = 1.0
    #: no decrease below this x the acknowledged rate
    acked_floor: float = 0.9
    #: behind a standing queue, an estimate over this x what arrives lately is lowered
    #: again at once (to ``beta`` x that), before the packets sent after the last
    #: decrease have been reported
    requeue: float = 1.5
    #: a decrease's share of what the path carried (as ``AimdSettings.beta``)
    beta: float = 0.9
    #: after a cut (``cut_hold``): no video for the queue on the path less the margin,
    #: at most ``max_cut_hold`` s, at least ``cut_hold`` s while packets are lost
    cut_hold: float = 0.15
    cut_hold_margin: float = 0.05
    max_cut_hold: float = 0.5
    overflow_backoff: float = 0.85
    overflow_interval: float = 0.5
    min_bitrate: float = 30_000.0
    max_bitrate: float = 20_000_000.0
    #: a loss or overflow decrease this recent (s) lets the cap pause video ...
    pause_evidence: float = 5.0
    #: ... as does a cap that has stood this long
    cap_persist: float = 2.0
    #: the link keeps up: at least this share of what was sent acknowledged
    keep_up: float = 0.8
    #: feedback older than this (s) is stale: receiver-report loss acts instead
    feedback_stale: float = 2.0
    trendline: TrendlineSettings = field(default_factory=TrendlineSettings)
    aimd: AimdSettings = field(default_factory=AimdSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
