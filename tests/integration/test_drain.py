"""``parley serve --drain-timeout``: a stop waits for the rooms to empty, refusing new joins.

A real server process and real websocket clients (one publishing real media). After the
first SIGTERM ``/healthz`` answers 503 ``draining``, a new ``join`` is refused with
``server_draining`` (websocket closed 1013), the process keeps running while a room is
live and exits once it is empty; the wait ends at the timeout, or at a second signal,
and whoever is left gets ``server_shutdown`` with ``reconnect: true``.
"""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from ._clients import Client
from ._parley_process import ServerProcess, parley_serve


async def _health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with http.get(f"{url}/healthz") as resp:
        return resp.status, await resp.json()


async def _until_draining(http: aiohttp.ClientSession, server: ServerProcess) -> None:
    async with asyncio.timeout(10):
        while (await _health(http, server.url))[0] != 503:
            await asyncio.sleep(0.05)


async def _exit_code(server: ServerProcess, timeout: float) -> int:
    async with asyncio.timeout(timeout):
        return await server.proc.wait()


async def test_drain_waits_for_the_room_refuses_joins_and_ends_when_empty() -> None:
    async with parley_serve("--drain-timeout", "30") as server, aiohttp.ClientSession() as http:
        publisher = await Client(http, server.url).connect()
        watcher = await Client(http, server.url, answer=True).connect()
        idle = await Client(http, server.url).connect()  # connected, never joins
        late = await Client(http, server.url).connect()  # joins after the drain began
        try:
            await publisher.join("live", "pub")
            await publisher.publish()
            await watcher.join("live", "watch")
            await watcher.wait_for("subscribe_offer", timeout=20)
            status, health = await _health(http, server.url)
            assert status == 200 and health["status"] == "ok", health

            server.signal(signal.SIGTERM)
            await _until_draining(http, server)
            status, health = await _health(http, server.url)
            assert status == 503 and health["status"] == "draining", health
            assert health["participants"] == 2, health

            await late.send({"type": "join", "room": "live", "name": "late", "request_id": 1})
            refusal = await late.wait_for("error")
            assert refusal["code"] == "server_draining" and refusal["request_id"] == 1, refusal
            async with asyncio.timeout(5):
                await late.ended.wait()
            assert late.close_code == 1013, late.close_code
            # a brand-new websocket is refused the same way
            another = await Client(http, server.url).connect()
            await another.send({"type": "join", "room": "other", "name": "x"})
            assert (await another.wait_for("error"))["code"] == "server_draining"

            await asyncio.sleep(1.5)  # the room is live: the server keeps running
            assert server.proc.returncode is None
            assert not any(m["type"] == "server_shutdown" for m in watcher.messages)

            await publisher.send({"type": "leave"})
            await watcher.send({"type": "leave"})
            assert await _exit_code(server, 10) == 0  # the room emptied: the process ends
            async with asyncio.timeout(5):
                await idle.ended.wait()
            await server.drained()
        finally:
            for client in (publisher, watcher, idle, late):
                await client.close()
        last = idle.messages[-1]
        assert last["type"] == "server_shutdown" and last["reconnect"] is True, idle.messages
        # its leave was answered, or the shutdown that the emptied room started reached
        # it first (both leaves race the end of the drain); nothing else came after
        kinds = [m["type"] for m in publisher.messages]
        assert kinds[-1] in ("left", "server_shutdown"), kinds
        assert not server.problems(), server.problems()
        assert any("draining done" in line for line in server.stderr), server.stderr


async def test_drain_ends_at_its_timeout_and_tells_who_is_left() -> None:
    async with parley_serve("--drain-timeout", "2") as server, aiohttp.ClientSession() as http:
        stayer = await Client(http, server.url).connect()
        try:
            await stayer.join("stay", "stayer")
            loop = asyncio.get_running_loop()
            signalled = loop.time()
            server.signal(signal.SIGTERM)
            await _until_draining(http, server)
            assert await _exit_code(server, 15) == 0
            waited = loop.time() - signalled
            async with asyncio.timeout(5):
                await stayer.ended.wait()
        finally:
            await stayer.close()
        assert waited >= 2.0, waited  # the drain waited its timeout for the live room
        last = stayer.messages[-1]
        assert last["type"] == "server_shutdown" and last["reconnect"] is True, stayer.messages
        assert stayer.close_code == 1001


async def test_a_second_signal_ends_the_drain() -> None:
    async with parley_serve("--drain-timeout", "600") as server, aiohttp.ClientSession() as http:
        stayer = await Client(http, server.url).connect()
        try:
            await stayer.join("stay", "stayer")
            server.signal(signal.SIGTERM)
            await _until_draining(http, server)
            await asyncio.sleep(0.5)
            assert server.proc.returncode is None
            server.signal(signal.SIGTERM)
            assert await _exit_code(server, 10) == 0
            async with asyncio.timeout(5):
                await stayer.ended.wait()
        finally:
            await stayer.close()
        assert stayer.messages[-1]["type"] == "server_shutdown", stayer.messages
