"""The websocket's Origin allow-list on a real server: a foreign page's origin gets 403
before the upgrade; the server's own origin and clients without an Origin get in."""

from __future__ import annotations

import aiohttp
import pytest

from loadgen.bot import BotConfig, run_bot
from signaling.origins import OriginPolicy
from signaling.server import SESSIONS_KEY, ServerConfig

from .conftest import RunningServer, ServerFactory


async def _join(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    async with http.ws_connect(f"{url}/ws", headers=headers) as ws:
        await ws.send_json({"type": "join", "room": "o", "name": "n"})
        reply = await ws.receive_json(timeout=10)
        return str(reply["type"])


async def test_a_foreign_origin_is_refused_before_the_upgrade(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{server.url}/ws", headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403
        # the same handshake as a plain request, to read why
        handshake = {
            "Origin": "http://evil.example",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        async with http.get(f"{server.url}/ws", headers=handshake) as response:
            assert response.status == 403
            text = await response.text()
            assert "http://evil.example" in text and "--allowed-origin" in text
        for origin in ("null", f"http://127.0.0.1:{server.port + 1}", "http://127.0.0.1"):
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(f"{server.url}/ws", headers={"Origin": origin})
    assert not server.app[SESSIONS_KEY]  # refused before a session began


async def test_own_origin_and_no_origin_are_admitted(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        assert await _join(http, server.url, {"Origin": server.url}) == "joined"
        assert await _join(http, server.url, {"Origin": f"HTTPS://127.0.0.1:{server.port}"}) == (
            "joined"
        )
        assert await _join(http, server.url, {}) == "joined"  # aiohttp sends no Origin
    summary = await run_bot(BotConfig(url=server.url, room="bots", name="bot", duration=1.0))
    assert summary["joined"], summary


async def test_an_allow_list_replaces_the_default(server_factory: ServerFactory) -> None:
    policy = OriginPolicy(allowed=("http://app.example", "https://other.example:8443"))
    server = await server_factory(ServerConfig(origins=policy))
    async with aiohttp.ClientSession() as http:
        assert await _join(http, server.url, {"Origin": "http://app.example"}) == "joined"
        assert await _join(http, server.url, {"Origin": "https://other.example:8443"}) == "joined"
        for origin in (server.url, "http://evil.example", "https://other.example"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{server.url}/ws", headers={"Origin": origin})
            assert refused.value.status == 403
