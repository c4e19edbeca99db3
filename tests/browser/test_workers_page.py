"""The web page through the front of ``parley serve --workers 2``: two pages in a room
see and hear each other (media straight to the worker); the worker owning the room is
killed (SIGKILL): both pages are back in the room, on the other worker, with each
other's media within 5 s of the kill."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import aiohttp

from tests.integration._parley_process import parley_serve

from .conftest import AppPage, OpenApp
from .test_restart import SIZE, _has_media_of, _media

BACK_WITHIN_S = 5.0


async def _healthz(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as response:
        body: dict[str, Any] = await response.json()
        return body


async def _both_media(
    pages: dict[str, AppPage], deadline: float, before: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Until both pages decode each other (in a new session, when ``before`` is given:
    a rejoin is a new participant id; counters start at 0 on its new connections)."""
    loop = asyncio.get_running_loop()
    while True:
        states = {name: await _media(page) for name, page in pages.items()}
        if all(
            _has_media_of(s, set(pages) - {n}) and (before is None or s["id"] != before[n]["id"])
            for n, s in states.items()
        ):
            return states
        if loop.time() >= deadline:
            raise AssertionError(f"not both back with media in time: {states}")
        await asyncio.sleep(0.1)


async def test_pages_through_the_front_survive_their_worker_s_death(open_app: OpenApp) -> None:
    async with parley_serve("--workers", "2", "--log-level", "WARNING") as server:
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as http:
            pages = {
                name: await open_app(
                    server.url, f"room=w&name={name}&autojoin=1&{SIZE}", width=800, height=600
                )  # fmt: skip
                for name in ("Ada", "Bob")
            }
            before = await _both_media(pages, loop.time() + 30.0)
            body = await _healthz(http, server.url)
            (owner,) = [w for w in body["workers"] if w.get("participants") == 2]
            os.kill(owner["pid"], signal.SIGKILL)
            killed_at = loop.time()
            await _both_media(pages, killed_at + BACK_WITHIN_S, before)
            print(f"both pages back with media {loop.time() - killed_at:.2f} s after the kill")
            body = await _healthz(http, server.url)
            (now,) = [w for w in body["workers"] if w.get("participants") == 2]
            assert now["id"] != owner["id"], body
