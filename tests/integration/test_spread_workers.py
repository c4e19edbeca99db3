"""``parley serve --workers 2 --spread``: one room over two worker processes, piped.

Real processes: the front, its two workers and four ``parley bot`` subprocesses in one
room. With ``--spread`` each join goes to the least-loaded worker, so the room's
participants alternate between the workers, and the front pipes the room between them
(``cluster/spread.py``, ``cluster/worker_pipes.py``, ``sfu/pipe.py``). Every subscriber
decodes every publisher whichever worker it is on; simulcast layer selection works for
a subscriber on the far worker (a 180p one gets the simulcast publisher's ``q``, a 360p
one its ``h``); the worker holding half the room is killed (SIGKILL) mid-call and its
bots are back with media within 5 s on the other one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from ._parley_process import parley_serve
from .test_workers import wait_for

PARLEY = [sys.executable, "-m", "parley"]
ROOM = "spread"
#: as in test_workers.py: four decoding bots and three servers share two busy cores;
#: a failover's gap is a reconnect, not a freeze
MAX_FREEZE_MS = 3000


async def _bot(url: str, name: str, tmp_path: Path, duration: float, *extra: str) -> Any:
    command = [
        *PARLEY, "bot", "--url", url, "--room", ROOM, "--name", name, "--reconnect",
        "--duration", str(duration), "--json", str(tmp_path / f"{name}.json"),
        "--max-freeze-ms", str(MAX_FREEZE_MS), *extra,
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)


def _sessions(body: dict[str, Any]) -> dict[str, int]:
    return {w["id"]: w["relayed_sessions"] for w in body["workers"]}


def _tracks_from(summary: dict[str, Any], publisher: str, kind: str) -> list[dict[str, Any]]:
    return [
        t for t in summary["tracks"] if t["participant_name"] == publisher and t["kind"] == kind
    ]


async def test_one_room_spread_over_two_workers_and_a_killed_worker_s_half_comes_back(
    tmp_path: Path,
) -> None:
    bots: dict[str, Any] = {}
    args = ("--workers", "2", "--spread", "--log-level", "WARNING")
    async with parley_serve(*args) as server:
        url = server.url
        try:
            body = await wait_for(url, lambda b: all(w["alive"] for w in b["workers"]), 30, "up")
            pids = {w["id"]: w["pid"] for w in body["workers"]}
            # cam (simulcast) lands on one worker, plain on the other (the least loaded),
            # then big with cam and small with plain: each join waits for the one before
            joins = (
                ("cam", 26.0, ("--simulcast",)),
                ("plain", 22.0, ("--max-height", "180")),
                ("big", 20.0, ("--no-publish", "--max-height", "360")),
                ("small", 20.0, ("--no-publish", "--max-height", "180")),
            )
            placed: dict[str, str] = {}  # bot -> worker
            for count, (name, duration, extra) in enumerate(joins, start=1):
                bots[name] = await _bot(url, name, tmp_path, duration, *extra)
                before = _sessions(body)
                body = await wait_for(
                    url, lambda b, n=count: sum(_sessions(b).values()) == n, 20, f"{name} placed"
                )
                (placed[name],) = [w for w, n in _sessions(body).items() if n > before.get(w, 0)]
            # the joins alternated: cam and big on one worker, plain and small on the other
            home, far = placed["cam"], placed["plain"]
            assert home != far and placed == {"cam": home, "plain": far, "big": home,
                                              "small": far}, placed  # fmt: skip
            body = await wait_for(
                url, lambda b: _sessions(b) == {home: 2, far: 2}, 5, "two sessions on each"
            )
            # each worker has the room: its own two and the other's publishers, piped
            assert all(w["rooms"] == 1 for w in body["workers"]), body
            # a worker's pipe routes answer only its front (which holds the key)
            worker_http = body["workers"][0]["ws_url"].replace("ws://", "http://")
            async with (
                aiohttp.ClientSession() as http,
                http.get(worker_http.removesuffix("/ws") + "/_parley/pipes") as response,
            ):
                assert response.status == 403, await response.text()
            await asyncio.sleep(8.0)  # media flows within and across the workers
            os.kill(pids[far], signal.SIGKILL)  # plain and small lose their worker
            codes = {n: await asyncio.wait_for(p.wait(), 60) for n, p in bots.items()}
        finally:
            for proc in bots.values():
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert server.problems() == [], server.problems()
        log = server.stderr[-80:]
    stderr = {n: (await p.stderr.read()).decode()[-2000:] for n, p in bots.items()}
    summaries = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in bots}
    failed = {n: s["failed"] for n, s in summaries.items()}
    assert codes == dict.fromkeys(bots, 0), (codes, failed, stderr)
    brief = {n: {k: v for k, v in s.items() if k not in ("events", "tracks")}
             for n, s in summaries.items()}  # fmt: skip
    for name in ("cam", "big"):  # on their worker all along
        assert summaries[name]["reconnects"] == [], (brief[name], log)
    for name in ("plain", "small"):  # back on cam's worker within 5 s, with media
        (reconnect,) = summaries[name]["reconnects"]
        assert reconnect["code"] == "server_shutdown" and reconnect["recovered"], brief[name]
        print(name, "media back after", reconnect["media_after_ms"], "ms")
        assert 0 < reconnect["media_after_ms"] <= 5000, brief[name]
    for name, summary in summaries.items():
        assert summary["ok"], (name, summary["failed"], brief[name])
    # every subscriber decoded every publisher while the room was spread (session 0):
    # big got plain down the pipe, plain and small got cam
    for name, publishers in (
        ("cam", ("plain",)),
        ("plain", ("cam",)),
        ("big", ("cam", "plain")),
        ("small", ("cam", "plain")),
    ):
        for publisher in publishers:
            for kind in ("audio", "video"):
                first = [t for t in _tracks_from(summaries[name], publisher, kind)
                         if t["session"] == 0]  # fmt: skip
                assert first and first[0]["frames_decoded"] > 20, (name, publisher, kind, first)
    # simulcast on the far worker: small (180p) took cam's q, plain too; big (360p, on
    # cam's own worker) took h, each to the end of its first session
    for name, size in (("small", [320, 180]), ("plain", [320, 180]), ("big", [640, 360])):
        (video,) = [t for t in _tracks_from(summaries[name], "cam", "video") if t["session"] == 0]
        # (the first frames may come at another layer, before the bot's set_layer)
        assert video["resolutions"][-1] == size, (name, video)
    # after the failover, small (now on cam's worker) still gets q
    (after,) = [t for t in _tracks_from(summaries["small"], "cam", "video") if t["session"] == 1]
    assert after["frames_decoded"] > 0 and after["resolutions"][-1] == [320, 180], after
