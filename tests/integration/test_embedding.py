"""The embedding example: Parley mounted in someone else's aiohttp app, with authorisation."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from loadgen.bot import BotConfig, run_bot

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "embed_app.py"
README = ROOT / "README.md"


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


def _readme_embedding_snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Embedding") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


async def _wait_until_serving(url: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while True:
            assert proc.returncode is None, "the application exited"
            try:
                async with http.get(f"{url}/parley/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def _refused(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return True
    writer.close()
    return False


@pytest.mark.parametrize("program", ["readme", "example"])
async def test_embedded_app_on_loopback_redirects_and_stops_at_once(program: str) -> None:
    """The README's snippet and examples/embed_app.py listen on 127.0.0.1:8081 only,
    /parley reaches the page, and SIGTERM (aiohttp's run_app, its default 60 s
    shutdown_timeout) sends a joined client server_shutdown and exits within 1 s."""
    if program == "readme":
        snippet = _readme_embedding_snippet()
        assert "0.0.0.0" not in snippet
        argv = [sys.executable, "-c", snippet]
        token = "secret"
    else:
        argv = [sys.executable, str(EXAMPLE)]
        token = "letmein"
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    url = "http://127.0.0.1:8081"
    try:
        await _wait_until_serving(url, proc)
        assert await _refused("127.0.0.2", 8081), "listens beyond 127.0.0.1"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/parley?room=demo", allow_redirects=False) as resp:
                assert resp.status in (301, 308), resp.status
                assert resp.headers["Location"] == "/parley/?room=demo"
            async with http.get(f"{url}/parley") as resp:
                assert resp.status == 200 and "Parley" in await resp.text()
            async with http.get(f"{url}/parley/static/app.js") as resp:
                assert resp.status == 200
            async with http.ws_connect(f"{url}/parley/ws") as ws:
                await ws.send_json({"type": "join", "room": "demo", "name": "a", "token": token})
                assert (await ws.receive_json(timeout=5))["type"] == "joined"
                loop = asyncio.get_running_loop()
                signalled = loop.time()
                proc.send_signal(signal.SIGTERM)
                goodbye = await ws.receive(timeout=5)
                closing = await ws.receive(timeout=5)
                async with asyncio.timeout(10):
                    await proc.wait()
                exited_after = loop.time() - signalled
        assert goodbye.type == aiohttp.WSMsgType.TEXT, goodbye
        assert json.loads(goodbye.data)["type"] == "server_shutdown"
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001, closing
        assert exited_after <= 1.0, f"exited {exited_after:.2f} s after SIGTERM"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert "Traceback" not in log and "never retrieved" not in log, log
