"""What the load generator's subscribers cost: received packets per second per core of
``parley load``, with the C reader (``sfu/_recv.c``: recvmmsg, SRTP unprotect in C) and
with the Python batch reader (``parley load --python-io``), in one run, alternating.

Each run starts a fresh ``parley serve`` pinned to core 0 and runs ``parley load`` (one
worker process) pinned to core 1 against it (``--url``, ``--server-pid``); the report
gives the steady window's packets received per second by all subscribers, the load
generator's CPU (its worker's ``time.process_time``, % of one core) and the server's
(``/proc/PID/stat``). Figures per run: µs of load-generator CPU per received packet
(publishers, signaling, feedback and timers included: what a capacity run pays) and its
inverse, received packets per second per core.

    .venv/bin/python bench/loadgen_rx.py [--runs 3] [--duration 10]

Runs in a loopback-only network namespace (re-executes itself under ``unshare``);
writes ``bench/results/loadgen-rx.json``. See docs/loadgen.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadgen.netns import ensure_loopback_namespace  # noqa: E402
from loadgen.server_process import (  # noqa: E402
    free_port,
    serve_command,
    stop_server,
    wait_for_healthz,
)

#: (name, publishers, subscribers): many subscribers at ~110 packets/s each, and fewer
#: subscribers that each receive 4 publishers (~440 packets/s each)
SCENARIOS = (("1x30", 1, 30), ("4x12", 4, 12))
MODES: tuple[tuple[str, list[str]], ...] = (("python", ["--python-io"]), ("c", []))


def one_run(
    publishers: int,
    subscribers: int,
    flags: list[str],
    duration: float,
    server_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One ``parley load`` run against a fresh ``parley serve`` (``server_env`` added to
    its environment); the report's figures."""
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "--cpu-list", "0", *serve_command("127.0.0.1", port, ["127.0.0.1"])],
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, **server_env) if server_env else None,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_healthz(url, lambda: server.poll() is None, 20.0)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "report.json"
            subprocess.run(
                ["taskset", "--cpu-list", "1", sys.executable, "-m", "parley", "load",
                 "--url", url, "--server-pid", str(server.pid), "--rooms", "1",
                 "--publishers", str(publishers), "--subscribers", str(subscribers),
                 "--ramp", "30", "--duration", str(duration), "-q", "--json", str(out),
                 *flags],
                check=False, stdout=subprocess.DEVNULL, timeout=duration + 120,
            )  # fmt: skip
            report = json.loads(out.read_text())
    finally:
        stop_server(server)
    pps = report["packets"]["forwarded_per_s"]
    loadgen_cpu = report["loadgen"]["cpu_pct_total"]
    us = loadgen_cpu * 1e4 / pps if pps else None
    return {
        "received_pps": pps,
        "loadgen_cpu_pct": loadgen_cpu,
        "loadgen_us_per_received_packet": round(us, 2) if us else None,
        "received_pps_per_core": round(1e6 / us) if us else None,
        "server_cpu_pct": report["server"]["cpu_pct"],
        "server_us_per_forwarded_packet": report["server"]["cpu_us_per_forwarded_packet"],
        "loss_pct": report["loss_pct"],
        "latency_p50_ms": {k: v["p50"] for k, v in report["latency_ms"].items()},
        "latency_p99_ms": {k: v["p99"] for k, v in report["latency_ms"].items()},
        "loadgen_saturated": report["loadgen_saturated"],
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", default=str(REPO / "bench/results/loadgen-rx.json"))
    args = parser.parse_args()
    ensure_loopback_namespace(who="bench/loadgen_rx.py")
    results: dict[str, Any] = {
        "command": "bench/loadgen_rx.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "scenarios": {},
    }
    for name, publishers, subscribers in SCENARIOS:
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode, _ in MODES}
        for _ in range(args.runs):
            for mode, flags in MODES:
                run = one_run(publishers, subscribers, flags, args.duration)
                runs[mode].append(run)
                print(
                    f"{name} {mode:6} {run['received_pps']:8.0f} pkt/s  load generator "
                    f"{run['loadgen_cpu_pct']:5.1f}% = {run['loadgen_us_per_received_packet']} "
                    f"µs/pkt ({run['received_pps_per_core']} pkt/s per core)  server "
                    f"{run['server_cpu_pct']}%  load {run['load_average']:.2f}",
                    flush=True,
                )
        medians = {
            mode: statistics.median(r["loadgen_us_per_received_packet"] for r in rs)
            for mode, rs in runs.items()
        }
        results["scenarios"][name] = {
            "publishers": publishers,
            "subscribers": subscribers,
            "runs": runs,
            "median_us_per_received_packet": medians,
            "median_received_pps_per_core": {m: round(1e6 / v) for m, v in medians.items()},
            "python_over_c": round(medians["python"] / medians["c"], 2),
        }
        print(
            f"{name}: median µs/pkt {medians}, python / c = {medians['python'] / medians['c']:.2f}"
        )
    results["load_average_after"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
