"""Active speaker: the server names the participant whose audio is loud."""

from __future__ import annotations

import asyncio

from loadgen.bot import BotConfig, run_bot

from .conftest import RunningServer


async def test_the_loud_bot_is_announced_as_active_speaker(server: RunningServer) -> None:
    loud = BotConfig(url=server.url, room="talk", name="loud", duration=7.0, volume=0.5)
    silent = BotConfig(url=server.url, room="talk", name="silent", duration=7.0, volume=0.0)
    late = BotConfig(url=server.url, room="talk", name="late", duration=3.0, publish=False)

    async def join_late() -> dict:
        await asyncio.sleep(3.0)
        return await run_bot(late)

    loud_s, silent_s, late_s = await asyncio.gather(run_bot(loud), run_bot(silent), join_late())
    assert loud_s["ok"] and silent_s["ok"] and late_s["ok"]
    for summary in (loud_s, silent_s):
        speakers = [e["participant"] for e in summary["events"] if e["type"] == "active_speaker"]
        assert speakers == [loud_s["id"]], summary["events"]
    # a participant joining later is told who speaks right after joining
    late_speakers = [e for e in late_s["events"] if e["type"] == "active_speaker"]
    assert late_speakers and late_speakers[0]["participant"] == loud_s["id"], late_s["events"]
