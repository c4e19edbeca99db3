"""The HTML report of ``parley load --html``: the summary and three plots, as inline SVG.

No plotting library: the plots are a few lines of SVG each (latency over time, latency
CDF on a log axis, join-time histogram), so the report is one self-contained file.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .load_report import summary_table

WIDTH = 640
HEIGHT = 300
_MARGIN = (56, 16, 24, 40)  # left, right, top, bottom
COLORS = {"audio": "#1f77b4", "video": "#d62728", "audio p99": "#6baed6", "video p99": "#fc9272"}

Series = tuple[str, Sequence[tuple[float, float]], str]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step) * step
    return [start + i * step for i in range(int((high - start) / step) + 1)]


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.0e}"


def line_plot(
    title: str,
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    *,
    log_x: bool = False,
    bars: bool = False,
) -> str:
    """An SVG plot of ``(name, points, color)`` series (lines, or bars for one series)."""
    left, right, top, bottom = _MARGIN
    points = [p for _, pts, _ in series for p in pts]
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">'
    parts = [
        head,
        f'<text x="{WIDTH / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
    ]
    if not points:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text></svg>'
        )
        return "".join(parts)

    def tx(x: float) -> float:
        return math.log10(max(x, 1e-6)) if log_x else x

    xs = [tx(x) for x, _ in points]
    x0, x1 = min(xs), max(xs)
    if bars:  # room for the last bar: one bin width
        x1 += (xs[1] - xs[0]) if len(xs) > 1 else 1.0
    if x1 == x0:
        x1 = x0 + 1
    y1 = max(y for _, y in points) * 1.05 or 1.0
    plot_w = WIDTH - left - right
    plot_h = HEIGHT - top - bottom

    def sx(x: float) -> float:
        return left + (tx(x) - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - y / y1 * plot_h

    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
    )
    for y in _ticks(0, y1):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{_fmt(y)}</text>')
    if log_x:
        x_ticks = [10.0**e for e in range(math.floor(x0), math.ceil(x1) + 1)]
    else:
        x_ticks = _ticks(x0, x1)
    for x in x_ticks:
        px = sx(x)
        if left <= px <= left + plot_w:
            parts.append(
                f'<text x="{px:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{_fmt(x)}</text>'
            )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">{html.escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 12 {top + plot_h / 2})">{html.escape(y_label)}</text>'
    )
    legend_y = top + 12
    for name, pts, color in series:
        if bars:
            width = max((sx(pts[1][0]) - sx(pts[0][0]) if len(pts) > 1 else plot_w) * 0.8, 1)
            for x, y in pts:
                parts.append(
                    f'<rect x="{sx(x):.1f}" y="{sy(y):.1f}" width="{width:.1f}" height="{sy(0) - sy(y):.1f}" fill="{color}"/>'
                )
        else:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>'
            )
        parts.append(
            f'<text x="{left + plot_w - 8}" y="{legend_y}" text-anchor="end" fill="{color}">{html.escape(name)}</text>'
        )
        legend_y += 14
    parts.append("</svg>")
    return "".join(parts)


def join_histogram(values: Sequence[float], bins: int = 20) -> list[tuple[float, float]]:
    """``(bin start ms, count)`` over ``values``, ``bins`` equal bins."""
    if not values:
        return []
    low, high = min(values), max(values)
    width = (high - low) / bins if high > low else 1.0
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / width), bins - 1)] += 1
    return [(low + i * width, float(c)) for i, c in enumerate(counts)]


def render_html(report: dict[str, Any]) -> str:
    timeline = report.get("timeline", [])
    over_time: list[Series] = []
    for kind in ("audio", "video"):
        for q in ("p50", "p99"):
            pts = [
                (float(row["t"]), float(row["latency_ms"][kind][q]))
                for row in timeline
                if row["latency_ms"][kind][q] is not None
            ]
            name = kind if q == "p50" else f"{kind} p99"
            over_time.append((f"{kind} {q}", pts, COLORS[name]))
    cdf: list[Series] = [
        (kind, [(ms, frac) for ms, frac in report["latency_cdf"][kind]], COLORS[kind])
        for kind in ("audio", "video")
    ]
    joins = join_histogram(report.get("join_ms_values", []))
    plots = [
        line_plot("One-way latency over time", over_time, "seconds since start", "ms"),
        line_plot("Latency CDF", cdf, "ms (log scale)", "fraction of packets", log_x=True),
        line_plot(
            "Join time (websocket open to first video frame)",
            [("subscribers", joins, "#2ca02c")],
            "ms",
            "subscribers",
            bars=True,
        ),
    ]
    config = html.escape(json.dumps(report.get("config", {}), indent=1))
    saturated = report.get("loadgen_saturated")
    warning = (
        '<p style="color:#b00"><b>The load generator was saturated; these figures are not trusted:</b> '
        + html.escape("; ".join(report["loadgen"]["reasons"]))
        + "</p>"
        if saturated
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>parley load report</title>"
        "<style>body{font-family:sans-serif;max-width:700px;margin:1em auto}pre{background:#f6f6f6;padding:8px}</style>"
        "</head><body><h1>parley load</h1>"
        + warning
        + f"<pre>{html.escape(summary_table(report))}</pre>"
        + "".join(f"<div>{plot}</div>" for plot in plots)
        + f"<h2>Configuration</h2><pre>{config}</pre></body></html>\n"
    )


def write_html(path: str, report: dict[str, Any]) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(target)
