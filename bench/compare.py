"""Parley and Janus side by side: the same ``parley load`` run against each, on equal terms.

Each server runs alone in a network namespace of its own, reached over a veth pair
(``bench/janus_server.py``); the bots run in this script's loopback-only namespace
(it re-executes itself under ``scripts/in_netns.py``). The two runs are sequential,
with the same bots, rooms and duration. Prints both summaries and the ratios
(Parley / Janus) of server CPU per forwarded packet and of latency percentiles, and
writes JSON.

    .venv/bin/python bench/compare.py --subscribers 8 --duration 20 --json bench/results/compare.json

``--isolated`` pins the server to core 0 and the load generator to core 1 (``taskset``),
so neither preempts the other (the latency tail then is each server's own).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from janus_server import CLIENT_ADDRESS, REPO, IsolatedServer, reexec_in_netns  # noqa: E402

TARGETS = ("parley", "janus")
PERCENTILES = ("p50", "p95", "p99", "max")


def run_load(target: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    server = IsolatedServer(
        target, event_loops=args.janus_event_loops, cpu=0 if args.isolated else None
    )
    try:
        pin = ["taskset", "--cpu-list", "1"] if args.isolated else []
        cmd = [
            *pin,
            sys.executable, "-m", "parley", "load", "--target", target,
            "--url", server.url, "--server-pid", str(server.pid),
            "--ice-address", CLIENT_ADDRESS, "--rooms", str(args.rooms),
            "--publishers", str(args.publishers), "--subscribers", str(args.subscribers),
            "--duration", str(args.duration), "--processes", str(args.processes),
            "--ramp", str(args.ramp), "--json", str(out), "--quiet",
        ]  # fmt: skip
        if args.simulcast:
            cmd.append("--simulcast")
        print(f"--- {target} ({server.url}, pid {server.pid})", flush=True)
        subprocess.run(cmd, cwd=REPO, check=False)
    finally:
        server.close()
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def compare(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Headline figures per server and the Parley / Janus ratios."""
    rows: dict[str, Any] = {}
    for target, report in reports.items():
        rows[target] = {
            "latency_ms": {
                kind: {q: report["latency_ms"][kind][q] for q in PERCENTILES}
                for kind in ("audio", "video")
            },
            "join_ms": report["join_ms"],
            "loss_pct": report["loss_pct"],
            "freezes": report["freezes"],
            "forwarded_per_s": report["packets"]["forwarded_per_s"],
            "server_cpu_pct": report["server"]["cpu_pct"],
            "server_rss_mb": report["server"]["rss_mb"],
            "cpu_us_per_forwarded_packet": report["server"]["cpu_us_per_forwarded_packet"],
            "loadgen_saturated": report["loadgen_saturated"],
            "errors": report["bots"]["errors"],
        }
    parley, janus = rows.get("parley"), rows.get("janus")
    ratios: dict[str, Any] = {}
    if parley and janus:
        ratios["cpu_per_forwarded_packet"] = _ratio(
            parley["cpu_us_per_forwarded_packet"], janus["cpu_us_per_forwarded_packet"]
        )
        ratios["latency"] = {
            kind: {
                q: _ratio(parley["latency_ms"][kind][q], janus["latency_ms"][kind][q])
                for q in PERCENTILES
            }
            for kind in ("audio", "video")
        }
    return {"servers": rows, "ratios_parley_over_janus": ratios}


def table(result: dict[str, Any]) -> str:
    servers = result["servers"]
    names = list(servers)

    def line(label: str, values: list[Any]) -> str:
        return f"{label:<34}" + "".join(f"{'-' if v is None else v!s:>14}" for v in values)

    out = [line("", names + ["parley/janus"])]
    ratios = result["ratios_parley_over_janus"]
    for kind in ("audio", "video"):
        for q in PERCENTILES:
            out.append(
                line(
                    f"latency {kind} {q} ms",
                    [servers[n]["latency_ms"][kind][q] for n in names]
                    + [ratios.get("latency", {}).get(kind, {}).get(q)],
                )
            )
    out.append(line("join p50 ms", [servers[n]["join_ms"]["p50"] for n in names]))
    out.append(line("loss audio %", [servers[n]["loss_pct"]["audio"] for n in names]))
    out.append(line("loss video %", [servers[n]["loss_pct"]["video"] for n in names]))
    out.append(line("freezes", [servers[n]["freezes"]["count"] for n in names]))
    out.append(line("forwarded packets/s", [servers[n]["forwarded_per_s"] for n in names]))
    out.append(line("server CPU %", [servers[n]["server_cpu_pct"] for n in names]))
    out.append(line("server RSS MB", [servers[n]["server_rss_mb"] for n in names]))
    out.append(
        line(
            "server CPU us / forwarded packet",
            [servers[n]["cpu_us_per_forwarded_packet"] for n in names]
            + [ratios.get("cpu_per_forwarded_packet")],
        )
    )
    out.append(line("load generator saturated", [servers[n]["loadgen_saturated"] for n in names]))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument("--subscribers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--simulcast", action="store_true")
    parser.add_argument("--janus-event-loops", type=int, default=0)
    parser.add_argument("--targets", default="parley,janus", help="comma-separated")
    parser.add_argument(
        "--isolated",
        action="store_true",
        help="the server on core 0, the load generator on core 1 (taskset)",
    )
    parser.add_argument("--json", dest="json_path", default="bench/results/compare.json")
    args = parser.parse_args()
    reexec_in_netns()
    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="parley-compare-") as tmp:
        for target in args.targets.split(","):
            if target not in TARGETS:
                parser.error(f"unknown target {target}")
            reports[target] = run_load(target, args, Path(tmp) / f"{target}.json")
    result = compare(reports)
    result["config"] = {k: v for k, v in vars(args).items() if k != "json_path"}
    result["reports"] = reports
    print(table(result))
    path = Path(args.json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
