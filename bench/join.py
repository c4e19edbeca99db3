"""Join time on loopback: websocket open -> first remote video frame decoded, by phase.

One ``parley serve`` and one publishing ``parley bot`` (processes); then ``--bots`` bots
(in this process, :class:`loadgen.bot.participant.Bot`) join the room one after the
other, each staying ``--hold`` seconds (so the room has the publisher and one joiner at
a time). Each joiner publishes too (like ``parley bot``) unless ``--no-publish``. Every
joiner's ``join_phases_ms`` (``loadgen/join_phases.py``) is kept; the script prints the
join time's p50/p95/max and each phase's median, and writes ``bench/results/join.json``.
It re-executes itself in a loopback-only network namespace (``scripts/in_netns.py``).

    .venv/bin/python bench/join.py [--bots 30] [--hold 1.0] [--fps 15] [--no-publish]
                                   [--label NAME] [--out bench/results/join.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadgen.netns import ensure_loopback_namespace  # noqa: E402

ROOM = "join-bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bots", type=int, default=30, help="joiners, one after the other")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds each joiner stays")
    parser.add_argument("--fps", type=float, default=15.0, help="the publisher's frame rate")
    parser.add_argument("--no-publish", action="store_true", help="joiners only subscribe")
    parser.add_argument("--label", default="", help="stored with the results")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "join.json"))
    return parser.parse_args(argv)


def summarize(joins: list[dict[str, Any]]) -> dict[str, Any]:
    from loadgen.join_phases import END, durations, nearest_rank, order_problems, phase_medians

    totals = [j[END] for j in joins if END in j]
    return {
        "count": len(joins),
        "missing": len(joins) - len(totals),
        "join_ms": {
            "p50": nearest_rank(totals, 50),
            "p95": nearest_rank(totals, 95),
            "max": max(totals, default=None),
        },
        "phase_medians_ms": phase_medians(joins),
        "step_medians_ms": phase_medians(durations(j) for j in joins),
        "order_problems": [p for j in joins for p in order_problems(j)],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from loadgen.bot.config import BotConfig
    from loadgen.bot.participant import Bot
    from loadgen.server_process import start_server, stop_server

    server, url = start_server("127.0.0.1")
    joins: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        publisher = subprocess.Popen(
            [sys.executable, "-m", "parley", "bot", "--url", url, "--room", ROOM,
             "--name", "publisher", "--duration", "3600", "--fps", str(args.fps),
             "--json", str(Path(tmp) / "publisher.json")],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.sleep(3.0)  # the publisher joins and its video starts
            for i in range(args.bots):
                config = BotConfig(
                    url=url,
                    room=ROOM,
                    name=f"joiner{i}",
                    duration=args.hold,
                    publish=not args.no_publish,
                    fps=args.fps,
                    leave_timeout=0.3,
                )
                summary = await Bot(config).run()
                phases = summary.get("join_phases_ms") or {}
                joins.append(phases)
                total = phases.get("subscribe.first_frame")
                print(f"  joiner{i}: {total} ms", file=sys.stderr)
                await asyncio.sleep(0.2)
        finally:
            publisher.terminate()
            publisher.wait(10)
            stop_server(server)
    return {
        "label": args.label,
        "bots": args.bots,
        "publish": not args.no_publish,
        "fps": args.fps,
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "unix_time": round(time.time()),
        **summarize(joins),
        "joins": joins,
    }


def print_result(result: dict[str, Any]) -> None:
    join = result["join_ms"]
    print(
        f"join (ws open -> first video frame decoded), {result['count']} joins"
        f" ({result['missing']} without video): p50 {join['p50']} ms, p95 {join['p95']} ms,"
        f" max {join['max']} ms; load average {result['load_average'][0]:.2f}"
    )
    steps = result["step_medians_ms"]
    print(f"{'phase':<28}{'median at (ms)':>16}{'median step (ms)':>18}")
    for phase, at in result["phase_medians_ms"].items():
        print(f"{phase:<28}{at:>16}{steps.get(phase, '-')!s:>18}")
    if result["order_problems"]:
        print("ORDER PROBLEMS: " + "; ".join(result["order_problems"][:5]))


def to_text(result: dict[str, Any]) -> str:
    """The result as JSON, one line per join."""
    head = json.dumps({k: v for k, v in result.items() if k != "joins"}, indent=2)
    joins = ",\n    ".join(json.dumps(j) for j in result["joins"])
    return head[:-2] + f',\n  "joins": [\n    {joins}\n  ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_loopback_namespace(who="join")
    result = asyncio.run(run(args))
    print_result(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_text(result), encoding="utf-8")
    return 0 if result["count"] and not result["missing"] and not result["order_problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
