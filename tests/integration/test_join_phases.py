"""The bot's ``join_phases_ms`` on a real call (issue 18, *Join*): a bot that joins a
room with one publisher reports every phase of its join, in order, consistent with its
decoded frames and its other figures; and it starts on the keyframe the server cached
or asked for when it subscribed (no second request needed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aioice import ice as aioice_ice

from loadgen.bot import BotConfig, run_bot
from loadgen.join_phases import END, ORDER, PUBLISH, SUBSCRIBE, order_problems
from sfu.aiortc_adapter import join as join_hooks
from sfu.aiortc_adapter.ice import _restrict_gathering
from sfu.config import IceConfig
from tests.integration.conftest import RunningServer

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = IceConfig(servers=(), addresses=("127.0.0.1",))


async def test_a_joining_bot_reports_every_phase_in_order(server: RunningServer) -> None:
    publisher = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="phases", name="cam", duration=9.0))
    )
    try:
        for _ in range(100):  # the publisher's video reaches the server
            room = server.sfu.rooms.get("phases")
            sources = [
                s
                for p in (room.participants.values() if room else ())
                for t in p.tracks.values()
                for s in t.layers
                if s.is_video and s.packets > 0
            ]
            if sources:
                break
            await asyncio.sleep(0.1)
        assert sources, "the publisher's video never reached the server"
        joiner = await run_bot(
            BotConfig(url=server.url, room="phases", name="joiner", duration=3.0)
        )
    finally:
        cam = await publisher

    for summary in (joiner, cam):
        phases = summary["join_phases_ms"]
        assert isinstance(phases, dict)
        assert order_problems(phases) == [], phases
        assert list(phases) == [p for p in ORDER if p in phases]  # reported in order
        assert all(p in phases for p in ("ws_open", "joined", *PUBLISH)), phases
    phases = joiner["join_phases_ms"]
    # the joiner subscribed to the publisher's video and decoded it: every phase is there
    assert all(p in phases for p in SUBSCRIBE), phases
    assert abs(phases["joined"] - joiner["join_ms"]) <= 0.1  # one clock, one start
    video = [t for t in joiner["tracks"] if t["kind"] == "video"]
    assert len(video) == 1 and video[0]["frames_decoded"] > 0
    # the first frame decoded is the one the track's figures count first
    first = video[0]["first_frame_ms"]
    assert first is not None and abs(first - phases[END]) <= 0.1, (first, phases[END])
    assert 0 < phases[END] < 3000  # websocket open -> first frame, on loopback
    # the joiner's video started on a keyframe the server had or had asked for: the
    # first packet forwarded is that keyframe's
    assert phases["subscribe.first_keyframe"] == phases["subscribe.first_rtp"]


async def test_ice_connects_as_soon_as_its_check_is_answered(monkeypatch: Any) -> None:
    """``connect_without_idle_pacing``: with the pause between checks made 10 s long,
    two aioice connections still connect at once (the pause ends when the check list
    completes), nominate a pair and start consent checks; without a usable remote
    candidate it still fails as aioice does."""
    monkeypatch.setattr(join_hooks, "CHECK_PACING", 10.0)
    a = aioice_ice.Connection(ice_controlling=True)
    b = aioice_ice.Connection(ice_controlling=False)
    try:
        for c in (a, b):
            join_hooks.connect_without_idle_pacing(c)
            _restrict_gathering(c, LOOPBACK)
            await c.gather_candidates()
        for c, other in ((a, b), (b, a)):
            c.remote_username, c.remote_password = other.local_username, other.local_password
            for candidate in other.local_candidates:
                if candidate.host == "127.0.0.1":
                    await c.add_remote_candidate(candidate)
            await c.add_remote_candidate(None)
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5.0)
        assert time.monotonic() - started < 5.0
        for c in (a, b):
            assert c._nominated and c._query_consent_task is not None
    finally:
        await a.close()
        await b.close()

    lonely = aioice_ice.Connection(ice_controlling=True)
    join_hooks.connect_without_idle_pacing(lonely)
    _restrict_gathering(lonely, LOOPBACK)
    try:
        await lonely.gather_candidates()
        lonely.remote_username, lonely.remote_password = "user", "password"
        await lonely.add_remote_candidate(None)  # no candidates at all
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(lonely.connect(), 5.0)
    finally:
        await lonely.close()


def test_the_join_benchmark_runs_and_writes_its_figures(tmp_path: Path) -> None:
    """``bench/join.py`` itself keeps working (its figures are the benchmark's business)."""
    out = tmp_path / "join.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "join.py"), "--bots", "2", "--hold", "1.0",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["count"] == 2 and result["missing"] == 0 and result["order_problems"] == []
    assert 0 < result["join_ms"]["p50"] <= result["join_ms"]["max"]
    assert set(SUBSCRIBE) <= set(result["phase_medians_ms"])
    assert "p50" in proc.stdout and "subscribe.first_frame" in proc.stdout
