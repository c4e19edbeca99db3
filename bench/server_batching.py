"""The server's send batching (``sfu._native.SendBatch``: one ``sendmmsg`` per subscriber
across the packets of one readiness of a batch reader) with real WebRTC bots: server CPU
per forwarded packet and one-way latency p50/p99, with it and without it
(``PARLEY_SENDMMSG=0``: one ``sendto`` per packet), in one run, alternating.

Each run is ``bench/loadgen_rx.py``'s: a fresh ``parley serve`` pinned to core 0,
``parley load`` (one worker) pinned to core 1, ``--publishers P --subscribers S`` in one
room; latency is the load report's (publisher's send stamp to the subscriber's
arrival, all packets).

    .venv/bin/python bench/server_batching.py [--runs 3] [--duration 10]

Runs in a loopback-only network namespace; writes ``bench/results/server-batching.json``.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from loadgen_rx import one_run  # noqa: E402

from loadgen.netns import ensure_loopback_namespace  # noqa: E402

VARIANTS: dict[str, dict[str, str]] = {"sendto": {"PARLEY_SENDMMSG": "0"}, "sendmmsg": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--subscribers", type=int, default=12)
    parser.add_argument("--json", default=str(REPO / "bench/results/server-batching.json"))
    args = parser.parse_args()
    ensure_loopback_namespace(who="bench/server_batching.py")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(args.runs):
        for name, env in VARIANTS.items():
            run = one_run(args.publishers, args.subscribers, [], args.duration, env)
            runs[name].append(run)
            print(
                f"{name:8} {run['received_pps']:7.0f} fwd pkt/s  server {run['server_cpu_pct']}% "
                f"= {run['server_us_per_forwarded_packet']} µs/fwd  latency p50 "
                f"{run['latency_p50_ms']} p99 {run['latency_p99_ms']} ms  "
                f"load {run['load_average']:.2f}",
                flush=True,
            )
    medians = {
        name: {
            "server_us_per_forwarded_packet": statistics.median(
                r["server_us_per_forwarded_packet"] for r in rs
            ),
            **{
                f"latency_{q}_ms_{kind}": statistics.median(r[f"latency_{q}_ms"][kind] for r in rs)
                for q in ("p50", "p99")
                for kind in ("audio", "video")
            },
        }
        for name, rs in runs.items()
    }
    result = {
        "command": "bench/server_batching.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "runs": runs,
        "medians": medians,
        "load_average_after": os.getloadavg(),
    }
    print(json.dumps(medians, indent=1))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
