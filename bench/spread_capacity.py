"""One room, 4 simulcast publishers: how many subscribers 1 worker holds versus 2 workers
with the room spread over both (``parley serve --workers 2 --spread``), in one run.

For each set-up, ``parley load --find-capacity`` (4 simulcast publishers, subscribers
added ``--step`` at a time, ``--step-seconds`` measured per step) finds the most
subscribers held at p99 <= 50 ms and loss <= 1 %, and says what stopped it (the service
level, or the load generator saturating: then the figure is a lower bound). Around the
search the script reads the front's ``/healthz`` (each worker's CPU seconds) and
``/metrics`` (packets forwarded to subscribers, summed over the workers), which give the
servers' **CPU per forwarded packet**: with the load generator on the same 2 cores, the
capacity the search finds is that of what is left of the machine, so the script also
states the **extrapolation**: one core per worker, ``1 s / (CPU per forwarded packet)``
packets per second per worker, divided by the packets per second one subscriber gets at
the best step.

    .venv/bin/python bench/spread_capacity.py [--step 4] [--step-seconds 8] [--max 80]

Runs in a loopback-only network namespace (re-executes itself under
``scripts/in_netns.py``); writes ``bench/results/spread_capacity.json``. See
docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadgen.netns import ensure_loopback_namespace  # noqa: E402

URL = re.compile(r"Parley serving on (http://127\.0\.0\.1:\d+)")
FORWARDED = re.compile(r'^parley_packets_total\{[^}]*direction="out"[^}]*\} ([0-9.e+]+)$', re.M)
SETUPS = {"1 worker": ["--workers", "1"], "2 workers, spread": ["--workers", "2", "--spread"]}


async def _counts(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """Worker CPU seconds (each), the front's, and packets forwarded (all workers)."""
    async with http.get(url + "/healthz") as response:
        health = await response.json()
    async with http.get(url + "/metrics") as response:
        text = await response.text()
    return {
        "t": time.monotonic(),
        "worker_cpu": {w["id"]: w.get("cpu_seconds") or 0.0 for w in health["workers"]},
        "front_cpu": health.get("front_cpu_seconds") or 0.0,
        "forwarded": sum(float(v) for v in FORWARDED.findall(text)),
    }


async def one_setup(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    parley = str(Path(sys.executable).with_name("parley"))
    server = await asyncio.create_subprocess_exec(
        parley, "serve", "--port", "0", "--log-level", "ERROR", *SETUPS[name],
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    try:
        while not (match := URL.search((await server.stdout.readline()).decode())):
            pass
        url = match.group(1)
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                async with http.get(url + "/healthz") as response:
                    body = await response.json()
                if all(w.get("answered") for w in body["workers"]) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            before = await _counts(http, url)
            out = tmp / f"{name.replace(' ', '_').replace(',', '')}.json"
            load = await asyncio.create_subprocess_exec(
                parley, "load", "--url", url, "--publishers", "4", "--simulcast",
                "--subscribers", str(args.step), "--find-capacity", "--step", str(args.step),
                "--step-seconds", str(args.step_seconds), "--max-subscribers", str(args.max),
                "--processes", str(args.processes), "--json", str(out), "-q",
            )  # fmt: skip
            await load.wait()
            after = await _counts(http, url)
    finally:
        if server.returncode is None:
            server.terminate()
            await server.wait()
    report = json.loads(out.read_text())
    capacity = report["capacity"]
    workers_cpu = sum(after["worker_cpu"].values()) - sum(before["worker_cpu"].values())
    forwarded = after["forwarded"] - before["forwarded"]
    us_per_packet = 1e6 * workers_cpu / forwarded if forwarded else None
    best = next(
        (s for s in capacity["steps"] if s["subscribers_per_room"] == capacity["max_subscribers_per_room"]),
        None,
    )  # fmt: skip
    failed = next((s for s in capacity["steps"] if not s["passed"]), None)
    per_subscriber_pps = best["received_pps"] / best["subscribers"] if best else None
    workers = len(after["worker_cpu"])
    extrapolated = (
        round(workers * 1e6 / us_per_packet / per_subscriber_pps)
        if us_per_packet and per_subscriber_pps
        else None
    )
    return {
        "setup": name,
        "max_subscribers": capacity["max_subscribers_per_room"],
        "stopped_by": capacity["stopped_by"],
        "lower_bound": capacity["lower_bound"],
        "first_failure": failed["reasons"] if failed else None,
        "loadgen_saturated": any(s["loadgen_saturated"] for s in capacity["steps"]),
        "steps": [
            {k: s[k] for k in ("subscribers", "p99_ms", "loss_pct", "received_pps", "passed")}
            for s in capacity["steps"]
        ],
        "workers_cpu_s": round(workers_cpu, 2),
        "front_cpu_s": round(after["front_cpu"] - before["front_cpu"], 2),
        "forwarded_packets": int(forwarded),
        "worker_cpu_us_per_forwarded_packet": round(us_per_packet, 2) if us_per_packet else None,
        "per_subscriber_pps": round(per_subscriber_pps, 1) if per_subscriber_pps else None,
        "extrapolated_subscribers_one_core_per_worker": extrapolated,
    }


async def main_async(args: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in SETUPS:
            result = await one_setup(name, args, Path(tmp))
            results.append(result)
            print(json.dumps(result), flush=True)
    one, two = results
    ratio = (
        round(two["max_subscribers"] / one["max_subscribers"], 2)
        if one["max_subscribers"] and two["max_subscribers"]
        else None
    )
    summary = {
        "measured_ratio_2_over_1": ratio,
        "extrapolated_ratio_2_over_1": (
            round(
                two["extrapolated_subscribers_one_core_per_worker"]
                / one["extrapolated_subscribers_one_core_per_worker"],
                2,
            )
            if one["extrapolated_subscribers_one_core_per_worker"]
            and two["extrapolated_subscribers_one_core_per_worker"]
            else None
        ),
        "cores": os.cpu_count(),
        "loadavg_end": list(os.getloadavg()),
    }
    print(json.dumps(summary, indent=1))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    setup = {k: getattr(args, k) for k in ("step", "step_seconds", "max", "processes")}
    out.write_text(
        json.dumps({"setup": setup, "summary": summary, "results": results}, indent=1) + "\n"
    )
    print(f"written {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=int, default=4, help="subscribers added per step")
    parser.add_argument("--step-seconds", type=float, default=8.0, help="measured s per step")
    parser.add_argument("--max", type=int, default=80, help="the most subscribers tried")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--json",
        default=str(REPO / "bench" / "results" / "spread_capacity.json"),
        help="where to write the results",
    )
    args = parser.parse_args()
    ensure_loopback_namespace(who="spread_capacity")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
