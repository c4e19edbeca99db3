"""web/parley-client.js follows ``redirect``: the page, served by node A, joins a room
that node B serves (A's ``ServerConfig.route`` says so, as ``parley serve --redis`` does;
Redis itself is tested in tests/integration/test_redis_nodes.py), and exchanges media
with a bot there."""

from __future__ import annotations

import asyncio

from loadgen.bot import BotConfig, run_bot
from signaling.origins import OriginPolicy
from signaling.server import ServerConfig

from .conftest import OpenClient, ServerFactory, wait_for


async def test_the_page_follows_a_redirect_to_the_node_that_serves_the_room(
    server_factory: ServerFactory, open_client: OpenClient
) -> None:
    where: dict[str, str] = {}

    async def route(room: str) -> str | None:
        return where.get(room)

    node_a = await server_factory(ServerConfig(route=route))
    # B takes websockets from pages A serves (docs/scaling.md: --allowed-origin)
    node_b = await server_factory(ServerConfig(origins=OriginPolicy(allowed=(node_a.url,))))
    b_ws = node_b.url.replace("http://", "ws://") + "/ws"
    where["elsewhere"] = b_ws

    page = await open_client(node_a)
    page_id = await page.join("elsewhere", "chromium")
    assert await page.evaluate("() => window.client.signaling.url") == b_ws
    assert "elsewhere" in node_b.sfu.rooms and page_id in node_b.sfu.rooms["elsewhere"].participants
    assert node_a.sfu.rooms == {}
    await page.publish(simulcast=False, width=640, height=360)

    # a bot that joins through A is redirected to B too, and they see each other
    summary_task = asyncio.ensure_future(
        run_bot(BotConfig(url=node_a.url, room="elsewhere", name="bot", duration=6.0))
    )
    try:

        async def bot_video() -> dict[str, object] | None:
            tracks = await page.remote_tracks()
            return next((t for t in tracks if t["kind"] == "video"), None)

        video = await wait_for(bot_video, 10.0)
        assert video is not None, await page.events()
        element = await page.play(video["trackId"])

        async def playing() -> bool:
            state = await page.video_element(element)
            return state["totalVideoFrames"] > 10

        assert await wait_for(playing, 10.0), await page.video_element(element)
    finally:
        summary = await summary_task
    assert any(e["type"] == "redirected" for e in summary["events"]), summary["events"]
    frames = {
        t["kind"]: t["frames_decoded"] for t in summary["tracks"] if t["participant"] == page_id
    }
    assert frames.get("video", 0) > 0 and frames.get("audio", 0) > 0, summary["tracks"]
    # not redirected again on the way back: a route that says "here" serves the room
    where.clear()
    other = await open_client(node_a)
    await other.join("local", "second")
    assert "local" in node_a.sfu.rooms
