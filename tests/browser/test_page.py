"""The bundled web page (web/index.html + web/app.js) in real headless Chromium."""

from __future__ import annotations

import asyncio
from typing import Any

from loadgen.bot import BotConfig, run_bot

from .conftest import AppPage, OpenApp, RunningServer, wait_for

#: Smaller than the page's default 1280x720 camera: two pages and a bot share 2 cores.
SMALL = "size=640x360"


def _url(room: str, name: str, *extra: str) -> str:
    return "&".join([f"room={room}", f"name={name}", "autojoin=1", SMALL, *extra])


async def _sees_media_of(page: AppPage, others: set[str], timeout: float = 15.0) -> None:
    """Every participant in ``others`` has a tile whose video plays and whose audio arrives."""

    async def first() -> dict[str, dict[str, Any]] | None:
        tiles = await page.remote_tiles()
        ok = all(
            p in tiles
            and tiles[p]["videoWidth"] > 0
            and tiles[p]["framesDecoded"] > 0
            and tiles[p]["audioPackets"] > 0
            for p in others
        )
        return tiles if ok else None

    before = await wait_for(first, timeout)
    assert before, (await page.remote_tiles(), page.report())

    async def growing() -> bool:
        tiles = await page.remote_tiles()
        return all(
            tiles[p]["framesDecoded"] > before[p]["framesDecoded"] + 5
            and tiles[p]["audioPackets"] > before[p]["audioPackets"] + 10
            for p in others
        )

    assert await wait_for(growing, 5.0), (before, await page.remote_tiles())


async def test_two_pages_and_a_bot_see_and_hear_each_other(
    server: RunningServer, open_app: OpenApp
) -> None:
    ada = await open_app(server.url, _url("w1", "Ada"))
    bob = await open_app(server.url, _url("w1", "Bob"))
    ada_id = await ada.wait_published()
    bob_id = await bob.wait_published()
    bot = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="w1", name="bot", duration=10.0))
    )
    try:

        async def bot_id() -> str | None:
            room = server.sfu.rooms.get("w1")
            return (
                next((p.id for p in room.participants.values() if p.name == "bot"), None)
                if room
                else None
            )

        bid = await wait_for(bot_id, 10.0)
        assert bid
        await _sees_media_of(ada, {bob_id, bid})
        await _sees_media_of(bob, {ada_id, bid})
        names = {pid: t["name"] for pid, t in (await ada.remote_tiles()).items()}
        assert names == {bob_id: "Bob", bid: "bot"}, names
        assert all(t["hasAudio"] for t in (await ada.remote_tiles()).values())
        summary = await bot
    finally:
        if not bot.done():
            bot.cancel()
    assert summary["ok"], summary
    for pid in (ada_id, bob_id):
        kinds = {t["kind"]: t for t in summary["tracks"] if t["participant"] == pid}
        assert kinds["video"]["frames_decoded"] > 20, kinds
        assert kinds["audio"]["frames_decoded"] > 50, kinds
