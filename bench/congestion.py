"""Congestion benchmark: how a subscriber's video and audio fare when a link changes.

Three ``parley load`` runs (1 simulcast publisher, 3 subscribers on loopback asking for
180, 360 and 720 pixels, plus the impaired participant), each with a server of its own:

* ``limit``: one more subscriber (asking for 720) behind a link limited to 300 kbit/s
  at 8 s and lifted at 20 s;
* ``loss``: one more subscriber behind a link losing 5 % of what the server sends it
  from 5 s to 20 s;
* ``uplink``: the publisher behind an uplink limited to 1.5 Mbit/s at 8 s, lifted at
  20 s (its three layers need about 2.2 Mbit/s).

Impaired links need CAP_NET_ADMIN, so the script re-executes itself under
``scripts/in_netns.py`` (a user and network namespace where it is root and only ``lo``
exists). It prints a table and writes ``bench/results/congestion.json`` (the headline
figures and every run's full report). See ``docs/benchmarks.md``.

    .venv/bin/python bench/congestion.py [--only limit,loss,uplink] [--processes 1]

``--chromium`` runs issue 14's table instead: a ``parley bot --simulcast`` publisher,
a Chromium page as the slow subscriber behind 300 kbit/s, 1 Mbit/s or 5 % loss (10 s
clean, 25 s impaired, 25 s lifted) and a clean Chromium page, ``--runs`` times each
(default 3; every run reported), writing ``bench/results/congestion-chromium.json``
and a plot next to it (``bench/harness/congestion_chromium.py``):

    .venv/bin/python bench/congestion.py --chromium [--only 300k,1m,loss5] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from loadgen.netns import ensure_loopback_namespace  # noqa: E402

SCENARIOS: dict[str, list[str]] = {
    "limit": ["--impaired-subscribers", "1", "--link-schedule", "8:300,20:none", "--duration", "40"],
    "loss": ["--impaired-subscribers", "1", "--link-schedule", "5:5%,20:none", "--duration", "26"],
    "uplink": ["--impaired-publishers", "1", "--uplink-schedule", "8:1500,20:none", "--duration", "40"],
}  # fmt: skip
COMMON = ["--simulcast", "--subscribers", "3", "--quiet"]
COLUMNS = (
    ("scenario", 8),
    ("subscriber", 10),
    ("impaired", 8),
    ("down s", 7),
    ("top s", 7),
    ("switches", 8),
    ("audio loss %", 12),
    ("video loss % (before repair)", 28),
    ("freezes (ms)", 14),
)


def reexec_in_netns() -> None:
    """Run again inside a fresh loopback-only namespace unless already there."""
    ensure_loopback_namespace(who="congestion")


def run_scenario(name: str, out_dir: Path, processes: int) -> dict[str, Any]:
    path = out_dir / f"congestion-{name}.json"
    command = [
        sys.executable, "-m", "parley", "load", *COMMON, *SCENARIOS[name],
        "--processes", str(processes), "--json", str(path),
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    # exit code 1: the run missed parley load's service levels, as impaired links make it
    if proc.returncode not in (0, 1) or not path.exists():
        raise SystemExit(f"{name}: parley load failed\n{proc.stdout}\n{proc.stderr}")
    report: dict[str, Any] = json.loads(path.read_text())
    report["bench"] = {"command": command[1:], "wall_s": round(time.monotonic() - started, 1)}
    return report


def headline(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The subscribers that matter: the impaired ones, and those whose top layer is f."""
    rows = []
    for sub in report["impaired"]["subscribers"]:
        if not sub["impaired"] and "f" not in sub["top_layer"].values():
            continue
        rows.append(
            {
                "subscriber": sub["name"],
                "impaired": sub["impaired"],
                "switch_down_s": sub["switch_down_s"],
                "back_to_top_s": sub["back_to_top_s"],
                "layer_switches": sub["layer_switches_between"],
                "audio_loss_pct": sub["audio_loss_pct_limited"],
                "video_loss_pct": sub["video_loss_pct_limited"],
                "video_loss_before_repair_pct": sub["video_loss_before_repair_pct_limited"],
                "freezes": sub["freezes"]["count"],
                "freeze_ms": sub["freezes"]["total_ms"],
                "layer_changes": sub["layer_changes"],
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["  ".join(name.ljust(width) for name, width in COLUMNS)]
    for scenario, rows in results.items():
        for row in rows:
            cells = [
                scenario,
                row["subscriber"],
                "yes" if row["impaired"] else "no",
                _cell(row["switch_down_s"]),
                _cell(row["back_to_top_s"]),
                _cell(row["layer_switches"]),
                _cell(row["audio_loss_pct"]),
                f"{_cell(row['video_loss_pct'])} ({_cell(row['video_loss_before_repair_pct'])})",
                f"{_cell(row['freezes'])} ({_cell(row['freeze_ms'])})",
            ]
            lines.append(
                "  ".join(c.ljust(width) for c, (_, width) in zip(cells, COLUMNS, strict=True))
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="scenarios (or --chromium cases) to run")
    parser.add_argument("--processes", type=int, default=1, help="parley load worker processes")
    parser.add_argument("--json", default=None, help="where to write the results")
    parser.add_argument(
        "--chromium",
        action="store_true",
        help="issue 14's table with a Chromium subscriber (cases 300k, 1m, loss5)",
    )
    parser.add_argument("--runs", type=int, default=3, help="--chromium: runs of each case")
    parser.add_argument(
        "--keep-samples", action="store_true", help="--chromium: keep every getStats sample"
    )
    args = parser.parse_args()
    if args.chromium:
        from harness import congestion_chromium  # bench/ is this script's directory

        cases = (args.only or "300k,1m,loss5").split(",")
        reexec_in_netns()
        out = Path(args.json or REPO / "bench" / "results" / "congestion-chromium.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        return congestion_chromium.main(cases, args.runs, out, args.keep_samples)
    args.only = args.only or ",".join(SCENARIOS)
    args.json = args.json or str(REPO / "bench" / "results" / "congestion.json")
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    reexec_in_netns()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    reports: dict[str, dict[str, Any]] = {}
    results: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        print(f"running {name}: parley load {' '.join(COMMON + SCENARIOS[name])}", flush=True)
        reports[name] = run_scenario(name, out.parent, args.processes)
        results[name] = headline(reports[name])
    print(table(results))
    out.write_text(
        json.dumps({"headline": results, "reports": reports}, indent=1) + "\n", encoding="utf-8"
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
