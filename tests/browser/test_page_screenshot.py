"""A screenshot of the page in a room with three participants (docs/screenshot.png).

The test always takes it; with ``PARLEY_SCREENSHOT=docs/screenshot.png`` in the
environment it writes it there (that is how the committed one was made, see docs/web.md),
otherwise into the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

from loadgen.bot import BotConfig, run_bot

from .conftest import OpenApp, RunningServer, wait_for

WIDTH, HEIGHT = 1280, 800


async def test_screenshot_of_a_room_with_three_participants(
    server: RunningServer, open_app: OpenApp, tmp_path: Path
) -> None:
    ada = await open_app(
        server.url,
        "room=standup&name=Ada&autojoin=1&stats=1&size=960x540",
        width=WIDTH,
        height=HEIGHT,
    )
    bob = await open_app(server.url, "room=standup&name=Bob&autojoin=1&size=640x360")
    await ada.wait_published()
    await bob.wait_published()
    bot = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="standup", name="Grace (bot)", duration=20.0))
    )
    try:

        async def all_playing() -> bool:
            tiles = await ada.tiles()
            remote = [t for t in tiles if not t["self"]]
            return (
                len(remote) == 2
                and all(t["framesDecoded"] > 30 and "fps" in t["stats"] for t in remote)
                and all("novideo" not in t["classes"] for t in tiles)
                and any("sending" in t["stats"] for t in tiles if t["self"])
            )

        assert await wait_for(all_playing, 20.0), await ada.tiles()
        target = Path(os.environ.get("PARLEY_SCREENSHOT") or tmp_path / "screenshot.png")
        await ada.page.screenshot(path=str(target))
    finally:
        bot.cancel()
    png = target.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (WIDTH, HEIGHT)
