"""The admin API at the front for a room spread over two workers (``--workers 2
--spread``; ``cluster/admin_proxy.py``). Real processes: the front, its two workers and
three ``parley bot``s in one room (``cam`` and ``watch`` on one worker, ``plain`` on the
other). Through the front: the room is listed once with its three participants (each
worker alone lists its own and the other's publishers); muting ``plain``'s video (on
the second worker) mutes it on its own worker and, down the pipe, on the first;
removing ``plain`` removes it everywhere; closing the room closes it on both workers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from ._bots import start_bot, stop_bots
from ._parley_process import parley_serve
from .test_workers import wait_for

ROOM = "spread-admin"


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def _until(what: str, check: Any, timeout: float = 15.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"not {what} within {timeout} s: {last}")


def _by_name(room: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in room["participants"]}


async def test_admin_at_the_front_reaches_every_worker_of_a_spread_room(tmp_path: Path) -> None:
    bots: dict[str, Any] = {}
    async with (
        parley_serve("--workers", "2", "--spread", "--log-level", "WARNING") as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):
        url = server.url
        try:
            body = await wait_for(url, lambda b: all(w["alive"] for w in b["workers"]), 30, "up")
            workers = {
                w["id"]: w["ws_url"].replace("ws://", "http://")[:-3] for w in body["workers"]
            }
            joins = (("cam", ()), ("plain", ()), ("watch", ("--no-publish",)))
            for count, (name, extra) in enumerate(joins, start=1):
                bots[name] = await start_bot(url, ROOM, name, tmp_path, 40, *extra)
                await wait_for(url, lambda b, n=count: sum(w["relayed_sessions"] for w in
                               b["workers"]) == n, 20, f"{name} placed")  # fmt: skip

            async def everyone() -> dict[str, Any] | None:
                status, room = await _get(http, f"{url}/admin/rooms/{ROOM}")
                people = _by_name(room) if status == 200 else {}
                published = {n: len(p["tracks"]) for n, p in people.items()}
                return room if published == {"cam": 2, "plain": 2, "watch": 0} else None

            room = await _until("three participants, four tracks", everyone)
            people = _by_name(room)
            home = {name: p["worker"] for name, p in people.items()}
            assert home["cam"] == home["watch"] != home["plain"], home
            assert sorted(room["workers"]) == sorted(workers) and room["published_tracks"] == 4
            # the list: the room once, its participants counted once
            status, listed = await _get(http, f"{url}/admin/rooms")
            assert status == 200
            (entry,) = [r for r in listed["rooms"] if r["room"] == ROOM]
            assert (entry["participants"], entry["published_tracks"]) == (3, 4), entry
            assert sorted(entry["workers"]) == sorted(workers), entry
            # each worker alone has a part: cam's holds plain as a remote publisher
            status, part = await _get(http, f"{workers[home['cam']]}/admin/rooms/{ROOM}")
            assert set(_by_name(part)) == {"cam", "watch", "plain"}, part

            # mute plain's video through the front: on plain's worker and down the pipe
            plain = people["plain"]
            (video,) = [t for t in plain["tracks"] if t["kind"] == "video"]
            mute = f"{url}/admin/rooms/{ROOM}/participants/{plain['id']}/tracks/{video['id']}/mute"
            async with http.post(mute) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["muted"] is True

            async def muted_everywhere() -> bool:
                for base in workers.values():
                    _, part = await _get(http, f"{base}/admin/rooms/{ROOM}")
                    tracks = _by_name(part)["plain"]["tracks"]
                    if not [t for t in tracks if t["kind"] == "video" and t["muted"]]:
                        return False
                return True

            await _until("plain's video muted on both workers", muted_everywhere)

            # remove plain (on the second worker) through the front: gone from both
            async with http.delete(f"{url}/admin/rooms/{ROOM}/participants/{plain['id']}") as r:
                assert r.status == 200, await r.text()

            async def without_plain() -> bool:
                for base in workers.values():
                    status, part = await _get(http, f"{base}/admin/rooms/{ROOM}")
                    if status == 200 and "plain" in _by_name(part):
                        return False
                return True

            await _until("plain gone from both workers", without_plain)
            _, room = await _get(http, f"{url}/admin/rooms/{ROOM}")
            assert set(_by_name(room)) == {"cam", "watch"}, room

            # close the room through the front: closed on both workers
            async with http.delete(f"{url}/admin/rooms/{ROOM}") as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["removed"] == 2

            async def closed() -> bool:
                for base in workers.values():
                    _, rooms = await _get(http, f"{base}/admin/rooms")
                    if any(r["room"] == ROOM for r in rooms["rooms"]):
                        return False
                return True

            await _until("the room closed on both workers", closed)
        finally:
            await stop_bots(bots.values())
        assert server.problems() == [], server.problems()
