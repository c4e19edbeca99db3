"""``server_shutdown`` with ``reconnect: false``: a bot told not to come back does not.

A real in-process server whose owner asks clients not to rejoin
(``ServerConfig.shutdown_reconnect=False``) stops while a real bot with ``--reconnect`` is
in a room; the bot must end its run at once, lost, without a single rejoin attempt.
"""

from __future__ import annotations

import asyncio

from loadgen.bot import BotConfig, run_bot
from signaling.server import ServerConfig, shutdown_sessions

from .conftest import ServerFactory


async def test_a_bot_does_not_rejoin_when_the_server_says_not_to(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(ServerConfig(shutdown_reconnect=False))
    config = BotConfig(url=server.url, room="bye", name="bot", duration=30.0, reconnect=True)
    loop = asyncio.get_running_loop()
    bot = asyncio.ensure_future(run_bot(config))
    async with asyncio.timeout(20):
        while server.sfu.stats()["published_tracks"] != 2:
            await asyncio.sleep(0.05)
    stopped = loop.time()
    await shutdown_sessions(server.app)  # what the application's shutdown runs
    async with asyncio.timeout(15):
        summary = await bot
    assert loop.time() - stopped < 10, "the bot kept trying to come back"
    assert summary["reconnects"] == [], summary["reconnects"]
    shutdowns = [e for e in summary["events"] if e["type"] == "server_shutdown"]
    assert len(shutdowns) == 1 and shutdowns[0]["reconnect"] is False, summary["events"]
    assert not summary["ok"]  # lost before its duration was over: not a good run
