"""Join latency through the front of ``parley serve --workers 1`` versus straight to its
worker: websocket opened → ``joined`` received, alternating front and direct, each join
in a fresh room, left right after. Prints p50/p90/max of each and the difference.

    .venv/bin/python scripts/in_netns.py .venv/bin/python bench/relay_join.py --joins 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

import aiohttp

URL = re.compile(r"Parley serving on (http://127\.0\.0\.1:\d+)")


async def one_join(http: aiohttp.ClientSession, ws_url: str, room: str) -> float:
    started = time.perf_counter()
    async with http.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "join", "room": room, "name": "bench"})
        while True:
            message = await ws.receive_json(timeout=10)
            if message["type"] == "joined":
                took = time.perf_counter() - started
                break
        await ws.send_json({"type": "leave"})
    return took


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def main(joins: int) -> dict[str, object]:
    parley = [str(Path(sys.executable).with_name("parley"))]
    proc = await asyncio.create_subprocess_exec(
        *parley, "serve", "--port", "0", "--workers", "1", "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        while not (match := URL.search((await proc.stdout.readline()).decode())):
            pass
        front = match.group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(front + "/healthz") as response:
                direct_ws = (await response.json())["workers"][0]["ws_url"]
            front_ws = front.replace("http://", "ws://") + "/ws"
            results: dict[str, list[float]] = {"front": [], "direct": []}
            for i in range(2):  # warm-up, not counted
                await one_join(http, front_ws, f"warm{i}")
                await one_join(http, direct_ws, f"warmd{i}")
            for i in range(joins):
                results["front"].append(await one_join(http, front_ws, f"f{i}"))
                results["direct"].append(await one_join(http, direct_ws, f"d{i}"))
                await asyncio.sleep(0.05)
    finally:
        proc.terminate()
        await proc.wait()
    out = {name: summary(samples) for name, samples in results.items()}
    added = out["front"]["p50_ms"] - out["direct"]["p50_ms"]
    return {"joins": joins, **out, "added_p50_ms": round(added, 2)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--joins", type=int, default=20)
    print(json.dumps(asyncio.run(main(parser.parse_args().joins)), indent=2))
