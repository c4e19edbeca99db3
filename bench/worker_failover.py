"""Failover of ``parley serve --workers 2``: two ``parley bot --reconnect`` in one room,
the worker owning the room killed (SIGKILL) ``--trials`` times, 4 s after media flows
again each time. Prints, from the bots' own summaries, the time from each loss to the
other bot's media decoded again (p50, max) as JSON.

With ``--hang`` the worker is stopped (SIGSTOP: alive, not answering) instead: the
front's health watch kills it (``--worker-hang-timeout``, 2.5 s); the figures are then
also taken from the stop (``media_back_from_stop_ms``: the detection included) and
written to ``bench/results/worker_hang.json``.

    .venv/bin/python scripts/in_netns.py .venv/bin/python bench/worker_failover.py --trials 10
    .venv/bin/python scripts/in_netns.py .venv/bin/python bench/worker_failover.py --hang
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

URL = re.compile(r"Parley serving on (http://127\.0\.0\.1:\d+)")


async def owner(http: aiohttp.ClientSession, url: str, timeout: float) -> dict[str, Any]:
    """The worker forwarding both bots' tracks to each other."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(url + "/healthz") as response:
            body = await response.json()
        for worker in body["workers"]:
            if worker.get("participants") == 2 and worker.get("forwarders") == 4:
                return dict(worker)
        await asyncio.sleep(0.1)
    raise AssertionError(f"the room is not forwarding: {body}")


async def main(trials: int, hang: bool = False) -> dict[str, Any]:
    parley = str(Path(sys.executable).with_name("parley"))
    server = await asyncio.create_subprocess_exec(
        parley, "serve", "--port", "0", "--workers", "2", "--log-level", "ERROR",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    tmp = Path(tempfile.mkdtemp())
    bots = []
    try:
        while not (match := URL.search((await server.stdout.readline()).decode())):
            pass
        url = match.group(1)
        duration = 15 + (11 if hang else 8) * trials
        stops: list[float] = []
        for name in ("ada", "bob"):
            bots.append(await asyncio.create_subprocess_exec(
                parley, "bot", "--url", url, "--room", "f", "--name", name, "--reconnect",
                "--fps", "10", "--duration", str(duration), "--json", str(tmp / f"{name}.json"),
            ))  # fmt: skip
        async with aiohttp.ClientSession() as http:
            for _ in range(trials):
                worker = await owner(http, url, 30)
                await asyncio.sleep(4.0)
                os.kill(worker["pid"], signal.SIGSTOP if hang else signal.SIGKILL)
                stops.append(time.time())
                await asyncio.sleep(1.0)
        for bot in bots:
            await bot.wait()
    finally:
        for proc in (*bots, server):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    backs: list[float] = []
    from_stop: list[float] = []
    for name in ("ada", "bob"):
        summary = json.loads((tmp / f"{name}.json").read_text())
        for reconnect in summary["reconnects"]:
            assert reconnect["recovered"], reconnect
            backs.append(reconnect["media_after_ms"])
            lost = summary["started_unix"] + reconnect["t_ms"] / 1000
            stop = max((t for t in stops if t <= lost), default=None)
            if stop is not None and reconnect["media_after_ms"] is not None:
                from_stop.append(round((lost - stop) * 1000 + reconnect["media_after_ms"], 1))
    result: dict[str, Any] = {
        "mode": "SIGSTOP (hung worker)" if hang else "SIGKILL",
        "trials": trials,
        "losses": len(backs),
        "media_back_ms_p50": round(statistics.median(backs), 1),
        "media_back_ms_max": max(backs),
        "media_back_ms": sorted(backs),
    }
    if hang:
        result.update(
            media_back_from_stop_ms_p50=round(statistics.median(from_stop), 1),
            media_back_from_stop_ms_max=max(from_stop),
            media_back_from_stop_ms=sorted(from_stop),
            load_average=os.getloadavg(),
        )
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--hang", action="store_true", help="SIGSTOP the worker, not SIGKILL")
    args = parser.parse_args()
    figures = asyncio.run(main(args.trials, args.hang))
    print(json.dumps(figures, indent=2))
    if args.hang:
        out = Path(__file__).parent / "results" / "worker_hang.json"
        out.write_text(json.dumps(figures, indent=2) + "\n")
