"""``bench/congestion.py --chromium``: issue 14's table with a Chromium page as the slow
subscriber, each case run several times (every run reported, not the best), a table,
a JSON file and a plot of the estimate, the acknowledged rate and the layer over time.

The scenario and its figures are ``loadgen/browser_congestion.py`` and
``loadgen/congestion_figures.py`` (the acceptance test runs the same code once per case).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from loadgen.browser_congestion import CASES, run_case, series
from loadgen.congestion_figures import ACCEPTANCE

COLUMNS = (
    ("case", 6),
    ("run", 3),
    ("down s", 6),
    ("heights", 12),
    ("audio loss %", 12),
    ("concealed %", 11),
    ("min fps", 7),
    ("freeze s", 8),
    ("paused s", 8),
    ("changes", 7),
    ("top s", 6),
    ("low est k", 9),
    ("clean", 16),
    ("verdict", 7),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "/".join(str(v) for v in value)
    return str(value)


def row(case: str, index: int, result: dict[str, Any]) -> list[str]:
    f = result["figures"]
    if f is None:
        return [case, str(index), *["-"] * (len(COLUMNS) - 3), "error"]
    slow, clean, server = f["slow"], f["clean"], f["server"]
    down = (
        slow["switch_to_360_s"]
        if "switch_to_360_within_s" in ACCEPTANCE[case]
        else slow["switch_down_s"]
    )
    lowest = server["lowest_estimate"]
    clean_text = (
        f"{clean['samples_below_top']} low, "
        f"{clean['freeze']['freezes']:.0f}fz {clean['freeze']['longest_s']:.2f}s"
    )
    return [
        case,
        str(index),
        _cell(down),
        _cell(slow["heights_during_limit"]),
        _cell(slow["audio"]["loss_pct"]),
        _cell(slow["audio"]["concealed_pct"]),
        _cell(slow["min_fps_after_switch"]),
        _cell(slow["freeze"]["longest_s"]),
        _cell(slow["paused_s"]),
        _cell(slow["layer_changes"]),
        _cell(slow["back_to_top_s"]),
        "-" if lowest is None else f"{lowest / 1000:.0f}",
        clean_text,
        "pass" if not result["failed"] else "FAIL",
    ]


def table(rows: list[list[str]]) -> str:
    lines = ["  ".join(name.ljust(width) for name, width in COLUMNS)]
    for cells in rows:
        lines.append("  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    return "\n".join(lines)


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """One column per case, one row per run: the server's estimate, acknowledged rate
    and what it sent (kbit/s, left; the grey line is the link's rate), the slow page's
    decoded height and the layer the server forwards it (right; 0: nothing decoded for
    0.5 s, or paused); the limit starts at 0 s (red), the lift is green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(results)
    runs = max(len(r) for r in results.values())
    fig, axes = plt.subplots(
        runs, len(cases), figsize=(6 * len(cases), 3 * runs), squeeze=False, sharex=True
    )
    for c, case in enumerate(cases):
        for r, result in enumerate(results[case]):
            ax = axes[r][c]
            s = result["series"]
            if not s["server"]:
                continue
            t = [row[0] for row in s["server"]]
            for column, label, style in (
                (1, "estimate", "-"),
                (2, "acknowledged", "--"),
                (4, "sent", ":"),
            ):
                ax.plot(
                    t,
                    [None if row[column] is None else row[column] / 1000 for row in s["server"]],
                    style,
                    label=label,
                )
            rate = CASES[case].rate_kbit
            if rate is not None:
                ax.axhline(rate, color="grey", linewidth=0.8)
            ax.axvline(0, color="red", linewidth=0.8)
            for lifted in s["lifted_s"]:
                ax.axvline(lifted, color="green", linewidth=0.8)
            ax.set_ylabel("kbit/s")
            ax.set_ylim(bottom=0)
            ax.set_title(f"{case} run {r + 1}", fontsize=9)
            height = ax.twinx()
            height.step(
                [p[0] for p in s["page"]],
                [p[1] for p in s["page"]],
                where="post",
                color="black",
                linewidth=0.7,
                label="decoded height",
            )
            heights = {"q": 180, "h": 360, "f": 720, "paused": 0}
            height.step(
                t,
                [heights.get(row[5], 0) for row in s["server"]],
                where="post",
                color="purple",
                linewidth=0.7,
                alpha=0.6,
                label="layer forwarded",
            )
            height.set_ylim(0, 800)
            height.set_ylabel("decoded height")
            if r == 0 and c == 0:
                ax.legend(fontsize=7, loc="upper left")
                height.legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("s from the limit")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


async def _run_all(names: list[str], runs: int, keep: Path) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for index in range(runs):
        for name in names:
            started = time.monotonic()
            print(f"{name} run {index + 1}/{runs}", flush=True)
            try:
                result = await run_case(CASES[name], keep / f"{name}-{index}", log=print)
            except Exception as exc:  # one broken run is reported, the others go on
                result = {"case": name, "figures": None, "failed": [repr(exc)], "run": None}
            result["wall_s"] = round(time.monotonic() - started, 1)
            result["series"] = series(result) if result.get("run") else {"server": [], "page": []}
            results[name].append(result)
    return results


def main(names: list[str], runs: int, out: Path, keep_samples: bool) -> int:
    unknown = set(names) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s) for --chromium: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="parley-cc-") as tmp:
        results = asyncio.run(_run_all(names, runs, Path(tmp)))
    rows = [row(name, i + 1, r) for name, rs in results.items() for i, r in enumerate(rs)]
    print(table(rows))
    for name, rs in results.items():
        for i, r in enumerate(rs):
            for failure in r["failed"]:
                print(f"  {name} run {i + 1}: {failure}")
    compact = {
        name: [
            {
                "figures": r["figures"],
                "failed": r["failed"],
                "wall_s": r["wall_s"],
                "series": r["series"],
                **({"run": r["run"]} if keep_samples else {}),
            }
            for r in rs
        ]
        for name, rs in results.items()
    }
    out.write_text(
        json.dumps({"acceptance": ACCEPTANCE, "cases": compact}, indent=1, default=str) + "\n",
        encoding="utf-8",
    )
    png = out.with_suffix(".png")
    plot(results, png)
    print(f"written {out} and {png}")
    return 0
