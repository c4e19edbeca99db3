"""VP8 temporal layers end to end: a `parley bot --simulcast` publishes two temporal
layers per simulcast layer; a subscriber whose budget is under `q` but over `q`'s base
temporal layer gets `q` at half the frame rate (not a pause), decoding every frame it
gets, and the full rate again once the budget is lifted. (The C fast path leaves a
forwarder with a temporal limit, ``ForwarderCore._tid_limit``, to the Python path.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from loadgen.bot import BotConfig, run_bot
from sfu.participant import Participant

from .conftest import RunningServer

#: bit/s: under `q` (about 150 k) and over its base temporal layer (about 90 k)
CAP = 115_000.0


def _participant(server: RunningServer, room: str, name: str) -> Participant:
    (p,) = [p for p in server.sfu.rooms[room].participants.values() if p.name == name]
    return p


def video_of(summary: dict[str, Any], pub_summary: dict[str, Any]) -> dict[str, Any]:
    (video,) = [
        t
        for t in summary["tracks"]
        if t["participant"] == pub_summary["id"] and t["kind"] == "video"
    ]
    return video


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


async def test_a_budget_under_q_drops_a_temporal_layer_instead_of_pausing(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    publisher = BotConfig(url=server.url, room="tl", name="cam", duration=19.0, simulcast=True)
    viewer = BotConfig(
        url=server.url, room="tl", name="viewer", duration=16.0, publish=False, max_height=180
    )
    seen: dict[str, Any] = {}

    async def drive(start: float) -> None:
        await asyncio.sleep(start + 5.0 - time.monotonic())
        side = _participant(server, "tl", "viewer").subscribe_side
        (forwarder,) = [s.forwarder for s in side.subscriptions.values() if s.forwarder.is_video]
        congestion = side.congestion
        seen["before"] = (
            forwarder.current.rid if forwarder.current else None,
            forwarder.tid_target,
        )
        # a cap with evidence (loss) behind it: the estimator may pause video, so the
        # last step before pausing is open too
        congestion.budget = lambda now: CAP  # type: ignore[method-assign]
        congestion.bwe.may_pause = lambda now, lowest=None: True  # type: ignore[method-assign]
        side.update_layers(asyncio.get_running_loop().time())
        await asyncio.sleep(start + 10.0 - time.monotonic())
        seen["limited"] = (
            forwarder.current.rid if forwarder.current else None,
            forwarder.temporal_layer,
            forwarder.temporal_dropped,
            forwarder.paused,
            forwarder.frames_dropped,
            forwarder.keyframes_requested,
            side.egress.pacer.overflows,
            side.egress.pacer.paced_packets,
            forwarder.retransmitted,
        )
        del congestion.budget  # back to the estimator's (no cap on loopback)
        del congestion.bwe.may_pause
        side.update_layers(asyncio.get_running_loop().time())
        await asyncio.sleep(3.0)
        seen["lifted"] = (
            forwarder.current.rid if forwarder.current else None,
            forwarder.temporal_layer,
        )

    pub_task = asyncio.ensure_future(run_bot(publisher))
    await asyncio.sleep(1.0)
    start = time.monotonic()
    summary, _ = await asyncio.gather(run_bot(viewer), drive(start))
    pub_summary = await pub_task
    assert pub_summary["ok"], pub_summary
    sent = pub_summary["video"]["layers"] if "video" in pub_summary else None
    assert summary["ok"], (summary["failed"], seen, video_of(summary, pub_summary))
    (video,) = [
        t
        for t in summary["tracks"]
        if t["participant"] == pub_summary["id"] and t["kind"] == "video"
    ]
    fps = video["frames_per_second"]
    assert seen["before"] == ("q", -1), seen
    # q, its base temporal layer only (7.5 fps), frames left out, not paused
    assert seen["limited"][0] == "q" and seen["limited"][1] == 0, seen
    assert seen["limited"][2] > 0 and not seen["limited"][3], seen
    assert seen["lifted"] == ("q", None), (seen, sent)
    assert _mean(fps[2:5]) >= 11.0, fps
    assert 4.0 <= _mean(fps[6:10]) <= 9.5, fps  # half of 15 fps, still decoding
    assert all(n >= 3 for n in fps[6:10]), fps
    assert _mean(fps[12:15]) >= 11.0, fps  # the full rate again
    assert video["resolutions"] == [[320, 180]], video
    assert video["max_freeze_ms"] < 1000, video
    assert [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()] == []
