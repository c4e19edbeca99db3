"""The embedding example: Parley mounted in someone else's aiohttp app, with authorisation."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from loadgen.bot import BotConfig, run_bot

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embed_app.py"


def _load_example():  # noqa: ANN202 - a module object
    spec = importlib.util.spec_from_file_location("embed_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["embed_app"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def embedded() -> AsyncIterator[str]:
    example = _load_example()
    app = example.create_embedding_app({"good": {"*"}, "demo-only": {"demo"}})
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_host_routes_and_parley_routes_coexist(embedded: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{embedded}/") as resp:
            assert "My application" in await resp.text()
        async with http.get(f"{embedded}/parley/healthz") as resp:
            body = await resp.json()
            assert body["status"] == "ok" and body["rooms"] == 0


@pytest.mark.parametrize(
    ("token", "room", "reason"),
    [
        (None, "demo", "a token is required to join"),
        ("bad", "demo", "unknown token"),
        ("demo-only", "secret", "this token does not admit you to room 'secret'"),
    ],
)
async def test_refused_joins_get_the_reason(
    embedded: str, token: str | None, room: str, reason: str
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{embedded}/parley/ws") as ws:
        join = {"type": "join", "room": room, "name": "x", "request_id": 7}
        if token is not None:
            join["token"] = token
        await ws.send_json(join)
        reply = await ws.receive_json(timeout=5)
        assert reply == {
            "type": "error",
            "code": "join_refused",
            "message": reason,
            "request": "join",
            "request_id": 7,
        }
        # the connection stays usable: a refused client may retry
        await ws.send_json({"type": "ping"})
        assert (await ws.receive_json(timeout=5))["type"] == "pong"


async def test_admitted_bots_talk_through_the_embedded_sfu(embedded: str) -> None:
    import asyncio

    configs = [
        BotConfig(url=f"{embedded}/parley", room="demo", name=n, duration=6.0, token=t)
        for n, t in (("a", "good"), ("b", "demo-only"))
    ]
    summaries = await asyncio.gather(*(run_bot(c) for c in configs))
    for s in summaries:
        assert s["ok"], s
        assert {t["kind"] for t in s["tracks"]} == {"audio", "video"}
    refused = await run_bot(
        BotConfig(url=f"{embedded}/parley", room="demo", name="c", duration=1.0, token="nope")
    )
    assert not refused["joined"] and not refused["ok"]
    assert refused["errors"][0]["code"] == "join_refused"
