"""The HTML report of ``parley load --html``: the summary, the verdict and four plots.

The plots are drawn with matplotlib (its Agg renderer, no display needed) and embedded
as base64 PNG images, so the page is one self-contained file that loads nothing from the
network when viewed. Each plot has labelled axes with ticks and its legend above the
plotting area, where it cannot cover the lines.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from loadgen.report.build import summary_table

#: Figure size (inches) and resolution: 880 x 360 pixels, readable on a laptop screen.
FIGSIZE = (8.8, 3.6)
DPI = 100
COLORS = {"audio": "#1f77b4", "video": "#d62728", "join": "#2ca02c", "cpu": "#7f7f7f"}


def _number(value: float, _pos: int | None = None) -> str:
    """Tick labels as plain numbers (1, 10, 0.5), not powers of ten."""
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return f"{value:,.0f}" if value == int(value) else f"{value:g}"
    return f"{value:.3g}"


def _legend_above(ax: Axes, columns: int) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            loc="lower left",
            bbox_to_anchor=(0.0, 1.01),
            ncol=columns,
            frameon=False,
            fontsize=9,
            borderaxespad=0.0,
        )


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    fig.suptitle(title, fontsize=12, fontweight="bold")
    ax.grid(True, which="major", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    return fig, ax


def png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def latency_over_time(report: dict[str, Any]) -> Figure:
    """p50 and p99 one-way latency per kind, per second, on a log axis."""
    fig, ax = _figure("One-way latency over time (per second)")
    timeline = report.get("timeline", [])
    values: list[float] = []
    for kind in ("audio", "video"):
        for q, style in (("p50", "-"), ("p99", "--")):
            points = [
                (row["t"], row["latency_ms"][kind][q])
                for row in timeline
                if row["latency_ms"][kind][q] is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, color=COLORS[kind], label=f"{kind} {q}", linewidth=1.6)
                values.extend(y for y in ys if y > 0)
    if not values:
        _no_data(ax)
        return fig
    steady = report.get("steady_s")
    duration = report.get("duration_s")
    if isinstance(steady, int | float) and isinstance(duration, int | float) and steady > 0:
        ax.axvspan(duration - steady, duration, color="#f2f2f2", zorder=0, label="steady window")
    if max(values) / min(values) >= 20:  # p99 spikes: a log axis keeps p50 visible
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("latency, ms (log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8))
        ax.set_ylabel("latency, ms")
    ax.yaxis.set_major_formatter(FuncFormatter(_number))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    ax.set_xlabel("seconds since the run started")
    _legend_above(ax, 5)
    return fig


def latency_cdf(report: dict[str, Any]) -> Figure:
    """Share of packets with at most a given latency, per kind, latency on a log axis."""
    fig, ax = _figure("Latency distribution (all packets)")
    drawn = False
    for kind in ("audio", "video"):
        points = report.get("latency_cdf", {}).get(kind) or []
        if points:
            xs, ys = zip(*points, strict=True)
            count = report["latency_ms"][kind]["count"]
            ax.step(xs, ys, where="post", color=COLORS[kind], label=f"{kind} ({count:,} packets)")
            drawn = True
    if not drawn:
        _no_data(ax)
        return fig
    for q in (0.5, 0.99):
        ax.axhline(q, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_number))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.02)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 0.9, 0.99])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}" if v < 0.99 else "99%"))
    ax.set_xlabel("one-way latency, ms (log scale)")
    ax.set_ylabel("packets with at most this latency")
    _legend_above(ax, 2)
    return fig


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


def join_times(report: dict[str, Any]) -> Figure:
    """How long subscribers took from opening the websocket to their first video frame."""
    fig, ax = _figure("Join time: websocket opened to first decodable video frame")
    values = report.get("join_ms_values", [])
    bins = join_histogram(values)
    if not bins:
        _no_data(ax)
        return fig
    width = (bins[1][0] - bins[0][0]) if len(bins) > 1 else 1.0
    ax.bar(
        [x for x, _ in bins],
        [y for _, y in bins],
        width=width * 0.9,
        align="edge",
        color=COLORS["join"],
        label=f"{len(values)} subscribers",
    )
    ax.set_ylim(0, max(max(y for _, y in bins) * 1.15, 3))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10))
    ax.xaxis.set_major_formatter(FuncFormatter(_number))
    ax.set_xlabel("join time, ms")
    ax.set_ylabel("subscribers")
    _legend_above(ax, 1)
    return fig


def traffic_and_cpu(report: dict[str, Any]) -> Figure:
    """Packets received per second (all subscribers) and the server's CPU over time."""
    fig, ax = _figure("Packets received per second (all subscribers) and server CPU")
    timeline = report.get("timeline", [])
    if not timeline:
        _no_data(ax)
        return fig
    xs = [row["t"] for row in timeline]
    ax.plot(xs, [row["received_pps"] for row in timeline], color=COLORS["audio"], label="packets/s")
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("packets received per second")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    ax.set_ylim(bottom=0)
    cpu = [
        (row["t"], row["server_cpu_pct"]) for row in timeline if row["server_cpu_pct"] is not None
    ]
    handles, labels = ax.get_legend_handles_labels()
    if cpu:
        right = ax.twinx()
        cx, cy = zip(*cpu, strict=True)
        right.plot(cx, cy, color=COLORS["cpu"], linestyle="--", label="server CPU %")
        right.set_ylabel("server CPU, % of one core")
        right.set_ylim(bottom=0)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    else:
        labels = [*labels[:-1], "packets/s (server CPU not measured: no --server-pid)"]
    ax.legend(
        handles,
        labels,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncol=2,
        frameon=False,
        fontsize=9,
        borderaxespad=0.0,
    )
    return fig


PLOTS = (
    ("latency over time", latency_over_time),
    ("latency distribution", latency_cdf),
    ("join times", join_times),
    ("traffic and server CPU", traffic_and_cpu),
)


def render_plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    """``(title, base64 PNG)`` of every plot of the report."""
    return [(title, png_base64(draw(report))) for title, draw in PLOTS]


def render_html(report: dict[str, Any]) -> str:
    plots = render_plots(report)
    config = html.escape(json.dumps(report.get("config", {}), indent=1))
    saturated = report.get("loadgen_saturated")
    warning = (
        '<p class="bad"><b>The load generator was saturated; these figures are not trusted:</b> '
        + html.escape("; ".join(report["loadgen"]["reasons"]))
        + "</p>"
        if saturated
        else ""
    )
    verdict = report.get("verdict")
    verdict_html = (
        f'<p class="{"good" if report.get("ok") else "bad"}"><b>Service level:</b> '
        f"{html.escape(str(verdict))}</p>"
        if verdict is not None
        else ""
    )
    images = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>'
        for title, data in plots
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>parley load report</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:1em auto;padding:0 8px}"
        "pre{background:#f6f6f6;padding:8px;overflow-x:auto}figure{margin:1em 0}"
        "img{max-width:100%;height:auto}.bad{color:#b00}.good{color:#060}</style>"
        "</head><body><h1>parley load</h1>"
        + verdict_html
        + warning
        + f"<pre>{html.escape(summary_table(report))}</pre>"
        + images
        + f"<h2>Configuration</h2><pre>{config}</pre></body></html>\n"
    )


def write_html(path: str, report: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(render_html(report), encoding="utf-8")
    tmp.replace(target)
