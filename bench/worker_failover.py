"""Failover of ``parley serve --workers 2``: two ``parley bot --reconnect`` in one room,
the worker owning the room killed (SIGKILL) ``--trials`` times, 4 s after media flows
again each time. Prints, from the bots' own summaries, the time from each loss to the
other bot's media decoded again (p50, max) as JSON.

    .venv/bin/python scripts/in_netns.py .venv/bin/python bench/worker_failover.py --trials 10
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


async def main(trials: int) -> dict[str, Any]:
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
        duration = 15 + 8 * trials
        for name in ("ada", "bob"):
            bots.append(await asyncio.create_subprocess_exec(
                parley, "bot", "--url", url, "--room", "f", "--name", name, "--reconnect",
                "--fps", "10", "--duration", str(duration), "--json", str(tmp / f"{name}.json"),
            ))  # fmt: skip
        async with aiohttp.ClientSession() as http:
            for _ in range(trials):
                worker = await owner(http, url, 30)
                await asyncio.sleep(4.0)
                os.kill(worker["pid"], signal.SIGKILL)
                await asyncio.sleep(1.0)
        for bot in bots:
            await bot.wait()
    finally:
        for proc in (*bots, server):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    backs: list[float] = []
    for name in ("ada", "bob"):
        summary = json.loads((tmp / f"{name}.json").read_text())
        for reconnect in summary["reconnects"]:
            assert reconnect["recovered"], reconnect
            backs.append(reconnect["media_after_ms"])
    return {
        "trials": trials,
        "losses": len(backs),
        "media_back_ms_p50": round(statistics.median(backs), 1),
        "media_back_ms_max": max(backs),
        "media_back_ms": sorted(backs),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10)
    print(json.dumps(asyncio.run(main(parser.parse_args().trials)), indent=2))
