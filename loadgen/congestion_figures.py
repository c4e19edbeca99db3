"""The figures of issue 14's congestion table, from what a subscriber's page measured.

Pure functions over the samples ``loadgen/browser_congestion.py`` collects in a
Chromium page: every ``SAMPLE_S`` the subscribe connection's ``getStats()`` (the
``inbound-rtp`` entry of the video and of the audio, as plain dicts with Chromium's
field names) stamped with wall-clock seconds ``t``, and the server's ``layer`` messages
as the page's client received them. Nothing here reads a clock or the network.

A "decoding" sample is one whose ``framesDecoded`` grew since the sample before: a
frame of that ``frameHeight`` was decoded during the interval. A pause (no frame
decoded) never counts as a switch down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .loop_stalls import Stall, held_off_within

Sample = dict[str, Any]

#: The top layer the slow and the clean subscriber ask for (``parley bot --simulcast``'s f).
TOP_HEIGHT = 720


@dataclass(frozen=True, slots=True)
class Window:
    """When the impairment was applied and lifted, and when the run ended (wall-clock s)."""

    limited_at: float
    lifted_at: float
    ended_at: float


def _video(sample: Sample) -> dict[str, Any]:
    video: dict[str, Any] | None = sample.get("video")
    return video or {}


def _audio(sample: Sample) -> dict[str, Any]:
    audio: dict[str, Any] | None = sample.get("audio")
    return audio or {}


def decoding(samples: Sequence[Sample]) -> list[tuple[float, int, bool]]:
    """``(t, frameHeight, decoded something since the sample before)`` per sample."""
    out: list[tuple[float, int, bool]] = []
    previous = 0
    for s in samples:
        frames = int(_video(s).get("framesDecoded", 0))
        out.append((float(s["t"]), int(_video(s).get("frameHeight", 0)), frames > previous))
        previous = max(previous, frames)
    return out


def first_decoding(
    samples: Sequence[Sample],
    after: float,
    *,
    below: int | None = None,
    at_least: int | None = None,
) -> float | None:
    """Seconds from ``after`` to the first decoding sample whose height is below
    ``below`` (or at least ``at_least``), None if there is none."""
    for t, height, decoded in decoding(samples):
        if t < after or not decoded or height <= 0:
            continue
        if below is not None and height >= below:
            continue
        if at_least is not None and height < at_least:
            continue
        return t - after
    return None


def _at(samples: Sequence[Sample], t: float, *, before: bool) -> Sample | None:
    """The last sample at or before ``t`` (``before``), or the first at or after it."""
    if before:
        return next((s for s in reversed(samples) if s["t"] <= t), None)
    return next((s for s in samples if s["t"] >= t), None)


def audio_loss(samples: Sequence[Sample], start: float, end: float) -> dict[str, float | None]:
    """Audio over ``[start, end]``: ``loss_pct``, the packets the receiver counts lost
    (``packetsLost`` grew by) over those expected (lost + received); ``concealed_pct``,
    the share of played samples that NetEq had to conceal (not silence): what is left of
    the loss after repair, and of late packets. A ``loss_pct`` below 0 means duplicates
    arrived (libwebrtc subtracts each from the lost count): the SFU's redundancy."""
    first, last = _at(samples, start, before=False), _at(samples, end, before=True)
    if first is None or last is None or last["t"] <= first["t"]:
        return {"loss_pct": None, "concealed_pct": None, "packets": None}
    a, b = _audio(first), _audio(last)
    lost = b.get("packetsLost", 0) - a.get("packetsLost", 0)
    received = b.get("packetsReceived", 0) - a.get("packetsReceived", 0)
    expected = lost + received
    concealed = (b.get("concealedSamples", 0) - b.get("silentConcealedSamples", 0)) - (
        a.get("concealedSamples", 0) - a.get("silentConcealedSamples", 0)
    )
    played = b.get("totalSamplesReceived", 0) - a.get("totalSamplesReceived", 0)
    return {
        "loss_pct": 100.0 * lost / expected if expected > 0 else None,
        "concealed_pct": 100.0 * concealed / played if played > 0 else None,
        "packets": float(received),
    }


def min_fps(samples: Sequence[Sample], start: float, end: float, span: float = 1.0) -> float | None:
    """The lowest decoded frame rate over any ``span``-long window within ``[start, end]``
    (windows start at each sample), None when the interval is shorter than ``span``."""
    inside = [s for s in samples if start <= s["t"] <= end]
    lowest: float | None = None
    j = 0
    for i, a in enumerate(inside):
        j = max(j, i)
        while j < len(inside) and inside[j]["t"] - a["t"] < span:
            j += 1
        if j == len(inside):
            break
        b = inside[j]
        fps = (_video(b).get("framesDecoded", 0) - _video(a).get("framesDecoded", 0)) / (
            b["t"] - a["t"]
        )
        lowest = fps if lowest is None else min(lowest, fps)
    return lowest


def longest_freeze(
    samples: Sequence[Sample], start: float, end: float, interval: float = 0.2
) -> dict[str, float]:
    """The longest freeze of the video that overlaps ``[start, end]``, two ways:

    * ``stall_s``: the longest run without a decoded frame that overlaps the window (a
      pause counts in full), measured between the samples that saw frames before and
      after it, less one ``interval`` (a lower bound: sampling cannot see the exact
      frames); a stall still going at the last sample counts up to it;
    * ``chromium_s``: Chromium's own freezes (``freezeCount``, ``totalFreezesDuration``:
      an inter-frame gap of the rendered video over max(3x the mean, mean + 150 ms))
      that ended within ``[start, end + 1 s]``: a sample interval with one freeze ending
      gives its exact length, with several their mean; ``freezes`` counts them.

    ``longest_s`` is the larger of the two.
    """
    stall = 0.0
    last_decoded: float | None = None
    previous_frames = 0
    for s in samples:
        frames = int(_video(s).get("framesDecoded", 0))
        t = float(s["t"])
        if frames > previous_frames:
            if last_decoded is not None and t >= start and last_decoded <= end:
                stall = max(stall, t - last_decoded - interval)
            last_decoded = t
        previous_frames = max(previous_frames, frames)
    if samples and last_decoded is not None:
        t_last = min(float(samples[-1]["t"]), end)
        if t_last > last_decoded and t_last >= start:
            stall = max(stall, t_last - max(last_decoded, start) - interval)
    events = chromium_freezes(samples, start, end)
    chromium = max((length for _, _, _, length in events), default=0.0)
    return {
        "stall_s": round(max(stall, 0.0), 3),
        "chromium_s": round(chromium, 3),
        "freezes": float(sum(n for _, _, n, _ in events)),
        "longest_s": round(max(stall, chromium), 3),
    }


def chromium_freezes(
    samples: Sequence[Sample], start: float, end: float
) -> list[tuple[float, float, int, float]]:
    """Chromium's freezes that ended within ``[start, end + 1 s]``, per sample interval
    that saw one or more end: ``(from, to, how many, their mean length)``."""
    out: list[tuple[float, float, int, float]] = []
    for a, b in zip(samples, samples[1:], strict=False):
        if not start <= b["t"] <= end + 1.0:
            continue
        n = int(_video(b).get("freezeCount", 0) - _video(a).get("freezeCount", 0))
        if n <= 0:
            continue
        total = _video(b).get("totalFreezesDuration", 0.0) - _video(a).get(
            "totalFreezesDuration", 0.0
        )
        out.append((float(a["t"]), float(b["t"]), n, total / n))
    return out


#: A freeze is put down to the machine when the SFU's process was held off (not
#: scheduled: ``loadgen.loop_stalls``) for at least this long while it could have
#: caused it: from one jitter-buffer delay (``MACHINE_LEAD_S``) before the freeze began.
MACHINE_STALL_AT_LEAST_S = 0.1
MACHINE_LEAD_S = 0.2


def machine_freezes(
    samples: Sequence[Sample], start: float, end: float, stalls: Sequence[Stall]
) -> int:
    """How many of Chromium's freezes in ``[start, end]`` came while the SFU's process
    was held off by the machine (``loadgen.loop_stalls.held_off_within``)."""
    return sum(
        n
        for a, b, n, length in chromium_freezes(samples, start, end)
        if held_off_within(stalls, a - length - MACHINE_LEAD_S, b, MACHINE_STALL_AT_LEAST_S)
    )


def layer_changes(layers: Sequence[dict[str, Any]], start: float, end: float) -> int:
    """How many ``layer`` messages within ``[start, end]`` changed the spatial layer
    (``rid``) or the pause of the video track (a message repeating the state is no
    change; the state before ``start`` is the last message before it)."""
    state: tuple[Any, Any] | None = None
    changes = 0
    for message in sorted(layers, key=lambda m: m["t"]):
        new = (message.get("rid"), bool(message.get("paused")))
        if message["t"] > end:
            break
        if message["t"] >= start and state is not None and new != state:
            changes += 1
        state = new
    return changes


def height_changes(samples: Sequence[Sample], start: float, end: float) -> int:
    """How many times the decoded height changed within ``[start, end]`` (decoding
    samples only: a pause is not a height)."""
    heights = [h for t, h, decoded in decoding(samples) if start <= t <= end and decoded]
    return sum(1 for a, b in zip(heights, heights[1:], strict=False) if a != b)


def paused_s(layers: Sequence[dict[str, Any]], start: float, end: float) -> float:
    """Seconds within ``[start, end]`` the server said the video was paused."""
    total = 0.0
    ordered = sorted(layers, key=lambda m: m["t"])
    for i, message in enumerate(ordered):
        if not message.get("paused"):
            continue
        until = ordered[i + 1]["t"] if i + 1 < len(ordered) else end
        a, b = max(message["t"], start), min(until, end)
        total += max(0.0, b - a)
    return round(total, 2)


def slow_figures(
    samples: Sequence[Sample], layers: Sequence[dict[str, Any]], window: Window
) -> dict[str, Any]:
    """Every figure of the table for the impaired subscriber."""
    w = window
    down = first_decoding(samples, w.limited_at, below=TOP_HEIGHT)
    down_360 = first_decoding(samples, w.limited_at, below=361)
    switched_at = w.limited_at + down if down is not None else None
    heights = sorted({h for t, h, d in decoding(samples) if w.limited_at <= t <= w.lifted_at and d})
    return {
        "switch_down_s": None if down is None else round(down, 2),
        "switch_to_360_s": None if down_360 is None else round(down_360, 2),
        "heights_during_limit": heights,
        "audio": audio_loss(samples, w.limited_at, w.lifted_at),
        "min_fps_after_switch": (
            None if switched_at is None else _round(min_fps(samples, switched_at, w.lifted_at))
        ),
        "min_fps_during_limit": _round(min_fps(samples, w.limited_at, w.lifted_at)),
        "freeze": longest_freeze(samples, w.limited_at, w.lifted_at),
        "layer_changes": layer_changes(layers, w.limited_at, w.lifted_at),
        "height_changes": height_changes(samples, w.limited_at, w.lifted_at),
        "paused_s": paused_s(layers, w.limited_at, w.lifted_at),
        "back_to_top_s": _round(first_decoding(samples, w.lifted_at, at_least=TOP_HEIGHT)),
        "frames_decoded_during_limit": _frames(samples, w.limited_at, w.lifted_at),
    }


def clean_figures(
    samples: Sequence[Sample],
    layers: Sequence[dict[str, Any]],
    start: float,
    end: float,
    stalls: Sequence[Stall] = (),
) -> dict[str, Any]:
    """The clean subscriber over ``[start, end]`` (from when it first decoded the top
    layer before the limit to the end): samples decoding below the top layer, layer
    messages that were not the top layer or paused, its freezes, and how many of those
    came while the machine held the SFU's process off (``stalls``: ``machine_freezes``)."""
    below = [
        (round(t - start, 1), h)
        for t, h, d in decoding(samples)
        if start <= t <= end and d and h < TOP_HEIGHT
    ]
    not_top = [
        m for m in layers if start <= m["t"] <= end and (m.get("paused") or m.get("rid") != "f")
    ]
    return {
        "samples_below_top": len(below),
        "first_below_top": below[:3],
        "layer_messages_not_top": len(not_top),
        "freeze": longest_freeze(samples, start, end),
        "machine_freezes": machine_freezes(samples, start, end, stalls),
        "min_fps": _round(min_fps(samples, start, end)),
        "frames_decoded": _frames(samples, start, end),
    }


def _frames(samples: Sequence[Sample], start: float, end: float) -> int | None:
    a, b = _at(samples, start, before=False), _at(samples, end, before=True)
    if a is None or b is None:
        return None
    return int(_video(b).get("framesDecoded", 0) - _video(a).get("framesDecoded", 0))


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# ------------------------------------------------------------------------- the table

#: Issue 14's acceptance table, per case: what ``check`` holds the figures to.
#: The clean subscriber's decoding may not stall this long (a lower bound from 200 ms
#: samples: 0.004-0.05 s in runs where Chromium counted no freeze, or one of 0.27-0.30 s)
CLEAN_STALL_BELOW_S = 0.3

ACCEPTANCE: dict[str, dict[str, float]] = {
    "300k": {
        "switch_down_within_s": 2.0,
        "audio_loss_pct_below": 1.0,
        "fps_after_switch_at_least": 10.0,
        "freeze_at_most_s": 1.0,
        "layer_changes_at_most": 2,
        "back_to_top_within_s": 10.0,
    },
    "1m": {
        "switch_to_360_within_s": 2.0,
        "audio_loss_pct_below": 0.5,
        "freeze_at_most_s": 0.5,
        "back_to_top_within_s": 8.0,
    },
    "loss5": {
        "audio_loss_after_repair_pct_below": 0.5,
        "freeze_at_most_s": 1.0,
    },
}


def check(case: str, slow: dict[str, Any], clean: dict[str, Any] | None) -> list[str]:
    """What of the acceptance table a run missed (empty: it passed), each as a sentence
    with the figure measured."""
    rules = ACCEPTANCE[case]
    failed: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            failed.append(what)

    if "switch_down_within_s" in rules:
        limit = rules["switch_down_within_s"]
        down = slow["switch_down_s"]
        need(
            down is not None and down <= limit,
            f"decoded height below {TOP_HEIGHT} within {limit} s of the limit: {down} s "
            f"(heights decoded during the limit {slow['heights_during_limit']}, "
            f"paused {slow['paused_s']} s)",
        )
    if "switch_to_360_within_s" in rules:
        limit = rules["switch_to_360_within_s"]
        down = slow["switch_to_360_s"]
        need(
            down is not None and down <= limit,
            f"decoded height <= 360 within {limit} s of the limit: {down} s "
            f"(heights {slow['heights_during_limit']})",
        )
    audio = slow["audio"]
    if "audio_loss_pct_below" in rules:
        limit = rules["audio_loss_pct_below"]
        loss = audio["loss_pct"]
        need(
            loss is not None and loss < limit,
            f"audio packet loss during the limit < {limit} %: {_pct(loss)} "
            f"(concealed {_pct(audio['concealed_pct'])})",
        )
    if "audio_loss_after_repair_pct_below" in rules:
        # after repair: what NetEq had to conceal. Not packetsLost: duplicates lower it
        # (see audio_loss), and RED's recovered packets count in it although their
        # audio was decoded from the next packets' redundant blocks
        limit = rules["audio_loss_after_repair_pct_below"]
        concealed, loss = audio["concealed_pct"], audio["loss_pct"]
        need(
            concealed is not None and concealed < limit,
            f"audio loss after repair < {limit} %: concealed {_pct(concealed)} "
            f"(RTP packets lost before repair {_pct(loss)})",
        )
    if "fps_after_switch_at_least" in rules:
        limit = rules["fps_after_switch_at_least"]
        fps = slow["min_fps_after_switch"]
        need(
            fps is not None and fps >= limit,
            f"video decoding >= {limit} fps after the switch (1 s windows): min {fps}",
        )
    if "freeze_at_most_s" in rules:
        limit = rules["freeze_at_most_s"]
        freeze = slow["freeze"]
        need(
            freeze["longest_s"] <= limit,
            f"no freeze > {limit} s during the limit: longest {freeze['longest_s']} s "
            f"(stall {freeze['stall_s']} s, Chromium's {freeze['chromium_s']} s, "
            f"{freeze['freezes']:.0f} freezes; {slow['frames_decoded_during_limit']} frames "
            "decoded during the limit)",
        )
    if "layer_changes_at_most" in rules:
        limit = rules["layer_changes_at_most"]
        need(
            slow["layer_changes"] <= limit,
            f"<= {limit:.0f} layer changes during the limit: {slow['layer_changes']}",
        )
    if "back_to_top_within_s" in rules:
        limit = rules["back_to_top_within_s"]
        up = slow["back_to_top_s"]
        need(
            up is not None and up <= limit,
            f"{TOP_HEIGHT}p decoded again within {limit} s of the lift: {up} s",
        )
    if clean is not None:
        need(
            clean["samples_below_top"] == 0 and clean["layer_messages_not_top"] == 0,
            f"the clean subscriber never leaves {TOP_HEIGHT}p: {clean['samples_below_top']} "
            f"samples below it {clean['first_below_top']}, "
            f"{clean['layer_messages_not_top']} layer messages not f",
        )
        stalls = clean.get("publisher_stalls", "-")
        need(
            clean["freeze"]["stall_s"] < CLEAN_STALL_BELOW_S,
            f"the clean subscriber's decoding never stalls: {clean['freeze']} (the "
            f"publisher's top layer stopped reaching the SFU at {stalls} s from the limit)",
        )
        machine = clean.get("machine_freezes", 0)
        need(
            clean["freeze"]["freezes"] - machine == 0,
            f"the clean subscriber never freezes (Chromium's freeze count): {clean['freeze']}, "
            f"{machine} of them while the machine held the SFU's process off (the "
            f"publisher's top layer stopped reaching the SFU at {stalls} s from the limit)",
        )
    return failed


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"
