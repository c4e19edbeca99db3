"""Real headless Chromium publishes three simulcast layers; bots asking for different
heights decode different sizes of it."""

from __future__ import annotations

import asyncio
from typing import Any

from loadgen.bot import BotConfig, run_bot

from .conftest import OpenClient, RunningServer, wait_for

HEIGHTS = {180: [320, 180], 360: [640, 360], 720: [1280, 720]}


async def test_chromium_layers_reach_bots_at_the_height_they_ask_for(
    server: RunningServer, open_client: OpenClient
) -> None:
    page = await open_client(server)
    page_id = await page.join("bsc", "chromium")
    await page.publish(simulcast=True, width=1280, height=720)

    def layers() -> Any:
        room = server.sfu.rooms.get("bsc")
        participant = room.participants.get(page_id) if room else None
        if participant is None:
            return None
        video = [t for t in participant.tracks.values() if t.kind == "video"]
        return video[0].layers if video else None

    async def three_layers_flowing() -> bool:
        found = layers()
        return bool(found) and all(s.ssrc is not None and s.packets > 30 for s in found)

    # the SFU receives three layers, each bound to its own SSRC by its RID
    assert await wait_for(three_layers_flowing, 15.0), [
        (s.rid, s.ssrc, s.packets) for s in layers() or []
    ]
    received = layers()
    assert received is not None
    assert [s.rid for s in received] == ["q", "h", "f"]
    assert len({s.ssrc for s in received}) == 3

    summaries = await asyncio.gather(
        *(
            run_bot(
                BotConfig(
                    url=server.url,
                    room="bsc",
                    name=f"h{height}",
                    duration=8.0,
                    publish=False,
                    max_height=height,
                )
            )
            for height in HEIGHTS
        )
    )
    sizes = {}
    for height, summary in zip(HEIGHTS, summaries, strict=True):
        assert summary["ok"], summary
        (video,) = [
            t for t in summary["tracks"] if t["participant"] == page_id and t["kind"] == "video"
        ]
        assert video["frames_decoded"] > 20, video
        sizes[height] = video["resolutions"][-1]
        assert video["layer"]["rid"] == {180: "q", 360: "h", 720: "f"}[height], video
    # Chromium may scale layers down under CPU load, but never above what was asked for
    # and the three bots must get three different sizes
    assert len({tuple(s) for s in sizes.values()}) == 3, sizes
    for height, size in sizes.items():
        assert size[1] <= height, sizes
