"""The web page's error messages, its ICE servers, and the page under a URL prefix."""

from __future__ import annotations

from aiohttp import web

from sfu.config import IceConfig, IceServer, SfuConfig
from signaling.server import JoinRequest, ServerConfig, setup_parley

from .conftest import AppPage, OpenApp, RestartableServer, RunningServer, ServerFactory, wait_for

#: getUserMedia fails as when the user (or the browser's settings) refuse the permission.
REFUSE_MEDIA = """
navigator.mediaDevices.getUserMedia = async () => {
  throw new DOMException("Permission denied", "NotAllowedError");
};
"""


async def _lobby_shown(page: AppPage) -> bool:
    return await page.evaluate("() => !document.getElementById('lobby').hidden")


async def test_refused_camera_and_microphone_are_explained_and_the_user_still_watches(
    server: RunningServer, open_app: OpenApp
) -> None:
    page = await open_app(server.url, "room=e1&name=Eve&autojoin=1", init_script=REFUSE_MEDIA)

    async def joined() -> bool:
        return await page.client_state() == "joined"

    assert await wait_for(joined, 10.0), (await page.status(), await page.notice())
    notice = await page.notice()
    assert notice and "Camera and microphone access was refused" in notice, notice
    assert "watch and listen" in notice
    assert await page.evaluate("() => window.parleyApp.client.publishedTracks.length") == 0
    assert await page.evaluate(
        "() => document.getElementById('mic').disabled"
        " && document.getElementById('mic').textContent === 'No microphone'"
    )
    (participant,) = server.sfu.rooms["e1"].participants.values()
    assert participant.name == "Eve" and not participant.tracks


async def test_a_refused_join_is_explained_and_the_form_stays(
    server_factory: ServerFactory, open_app: OpenApp
) -> None:
    async def authorize(join: JoinRequest) -> str | None:
        return None if join.token == "secret" else "ask the host for the token"

    server = await server_factory(ServerConfig(authorize=authorize))
    page = await open_app(server.url, "room=e2&name=Eve&autojoin=1&token=guess&camera=0&mic=0")

    async def refused() -> str | None:
        notice = await page.notice()
        return notice if notice and "refused" in notice else None

    notice = await wait_for(refused, 10.0)
    assert notice == ("The server refused to let you into the room: ask the host for the token"), (
        notice
    )
    assert await _lobby_shown(page)
    assert "e2" not in server.sfu.rooms or not server.sfu.rooms["e2"].participants

    # the right token, typed into the form, gets in
    await page.page.click("summary")
    await page.page.fill("#token", "secret")
    await page.page.click("#join")

    async def joined() -> bool:
        return await page.client_state() == "joined"

    assert await wait_for(joined, 10.0), await page.notice()
    assert not await _lobby_shown(page)


async def test_an_unreachable_server_is_explained_and_joining_works_once_it_is_back(
    restartable_server: RestartableServer, open_app: OpenApp
) -> None:
    server = restartable_server
    page = await open_app(server.url, "room=e3&name=Eve&camera=0&mic=0")
    await server.stop()
    await page.page.click("#join")

    async def unreachable() -> str | None:
        notice = await page.notice()
        return notice if notice and "Cannot reach" in notice else None

    notice = await wait_for(unreachable, 10.0)
    assert notice == (
        f"Cannot reach the Parley server (ws://127.0.0.1:{server.port}/ws). "
        "Check your connection, or try again in a moment."
    ), notice
    assert await _lobby_shown(page)
    assert await page.status() == "Not connected"

    await server.start()
    await page.page.click("#join")

    async def joined() -> bool:
        return await page.client_state() == "joined"

    assert await wait_for(joined, 10.0), await page.notice()


async def test_the_page_uses_the_servers_ice_servers(
    server_factory: ServerFactory, server: RunningServer, open_app: OpenApp
) -> None:
    # none by default: the peer connections get an empty list, not the browser's defaults
    page = await open_app(server.url, "room=e4&name=Ada&autojoin=1&size=320x180")
    await page.wait_published()
    assert (
        await page.evaluate(
            "() => window.parleyApp.client.publishConnection.getConfiguration().iceServers"
        )
        == []
    )

    turn = IceServer(urls=("turn:127.0.0.1:3478",), username="u", credential="p")
    configured = await server_factory(ServerConfig(sfu=SfuConfig(ice=IceConfig(servers=(turn,)))))
    other = await open_app(configured.url, "room=e4&name=Bob&autojoin=1&camera=0&mic=0")

    async def ice_servers() -> list[dict[str, object]] | None:
        return await other.evaluate(
            "() => window.parleyApp.client?.state === 'joined'"
            " ? window.parleyApp.client.iceServers : null"
        )

    assert await wait_for(ice_servers, 10.0) == [
        {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"}
    ]


async def test_the_page_works_under_a_url_prefix(open_app: OpenApp) -> None:
    app = web.Application()
    setup_parley(app, ServerConfig(), prefix="/parley")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        page = await open_app(
            f"http://127.0.0.1:{port}/parley", "room=e5&name=Ada&autojoin=1&size=320x180"
        )
        await page.wait_published()
        assert (
            await page.evaluate("() => window.parleyApp.client.signaling.url")
            == f"ws://127.0.0.1:{port}/parley/ws"
        )
        await page.page.context.close()
    finally:
        await runner.cleanup()
