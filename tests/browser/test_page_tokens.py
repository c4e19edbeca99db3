"""The page with a join token in its URL, against a server with an API secret."""

from __future__ import annotations

import time

from signaling.auth import AuthConfig, mint_token
from signaling.server import ServerConfig

from .conftest import AppPage, OpenApp, ServerFactory, wait_for

KEY, SECRET = "page-key", "page-secret-of-a-decent-length-0123456789abcdef"


async def test_a_link_with_only_a_token_joins_its_room_as_its_name(
    server_factory: ServerFactory, open_app: OpenApp
) -> None:
    server = await server_factory(ServerConfig(auth=AuthConfig(KEY, SECRET)))
    token = mint_token(KEY, SECRET, room="t1", identity="eve", name="Eve Ng", now=time.time())
    page = await open_app(server.url, f"token={token}&autojoin=1&camera=0&mic=0")

    async def joined() -> bool:
        return await page.client_state() == "joined"

    assert await wait_for(joined, 10.0), (await page.status(), await page.notice())
    (participant,) = server.sfu.rooms["t1"].participants.values()
    assert participant.name == "Eve Ng"
    assert "token" not in await page.evaluate("() => location.search")


async def test_an_expired_token_is_explained(
    server_factory: ServerFactory, open_app: OpenApp
) -> None:
    server = await server_factory(ServerConfig(auth=AuthConfig(KEY, SECRET)))
    old = mint_token(KEY, SECRET, room="t2", identity="eve", ttl=60, now=time.time() - 3600)
    page: AppPage = await open_app(server.url, f"token={old}&autojoin=1&camera=0&mic=0")

    async def explained() -> str | None:
        notice = await page.notice()
        return notice if notice and "expired" in notice else None

    notice = await wait_for(explained, 10.0)
    assert notice == "Your join token has expired: ask your host for a new link.", notice
    assert "t2" not in server.sfu.rooms
