"""The page's join time (issue 18, *Join*): Chromium joining a room with one publisher
(a bot) records when each phase of its join happened (``client.joinPhases``, the names
of ``loadgen/join_phases.py``), up to the first remote video frame on screen
(``requestVideoFrameCallback``). Recorded, ordered and sane; not a timing benchmark."""

from __future__ import annotations

import asyncio
from typing import Any

from loadgen.bot import BotConfig, run_bot
from loadgen.join_phases import END, order_problems

from .conftest import OpenApp, RunningServer, wait_for

#: A generous bound for websocket open -> first remote frame on loopback (a busy machine
#: included); the benchmark (bench/join.py) measures the bot's.
BOUND_MS = 2000.0
SUBSCRIBE_PHASES = (
    "ws_open",
    "joined",
    "subscribe.offer_received",
    "subscribe.answer_sent",
    "subscribe.ice_connected",
    "subscribe.dtls_connected",
    END,
)


async def test_the_page_records_its_time_to_the_first_remote_frame(
    server: RunningServer, open_app: OpenApp
) -> None:
    bot = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="jt", name="cam", duration=12.0))
    )
    try:

        async def publishing() -> bool:
            room = server.sfu.rooms.get("jt")
            return room is not None and any(
                s.packets > 0
                for p in room.participants.values()
                for t in p.tracks.values()
                for s in t.layers
                if s.is_video
            )

        assert await wait_for(publishing, 10.0), "the bot's video never reached the server"
        page = await open_app(server.url, "room=jt&name=Ada&autojoin=1&size=640x360")

        async def phases() -> dict[str, Any] | None:
            got = await page.evaluate("() => window.parleyApp?.client?.joinPhases ?? null")
            return got if got and END in got else None

        recorded = await wait_for(phases, 15.0)
        assert recorded, (
            await page.evaluate("() => window.parleyApp?.client?.joinPhases"),
            page.report(),
        )
        print("page join phases (ms):", recorded)
        missing = [p for p in SUBSCRIBE_PHASES if p not in recorded]
        assert missing == [], recorded
        assert order_problems(recorded) == [], recorded
        assert 0 < recorded[END] < BOUND_MS, recorded
        # the page publishes too: its publish connection's phases are there and ordered
        await page.wait_published()
        final = await page.evaluate("() => window.parleyApp.client.joinPhases")
        assert "publish.offer_sent" in final and order_problems(final) == [], final
    finally:
        bot.cancel()
        await asyncio.gather(bot, return_exceptions=True)
