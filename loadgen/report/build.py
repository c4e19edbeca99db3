"""The report of ``parley load``: JSON, the summary table, the saturation verdict. Pure.

:func:`build_report` takes what the run collected (worker results, per-second progress,
server samples) and returns the JSON document described in ``docs/loadgen.md``; its JSON
Schema is ``loadgen/report.schema.json`` (:func:`report_schema`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from loadgen.impair.schedule import LinkState, analyse_subscriber
from loadgen.join_phases import phase_medians
from loadgen.load.metrics import KINDS, FreezeStats, Interval, LatencyHistogram, nearest_rank
from loadgen.load.verdict import verdict_section

REPORT_VERSION = 1
#: The report's JSON Schema (draft 2020-12), shipped with the package.
SCHEMA_FILE = "report.schema.json"
#: A worker above this share of one core (steady window mean) is saturated.
WORKER_CPU_LIMIT = 85.0
#: A worker whose event loop wakes up this late (p99, ms) is saturated.
LOOP_LAG_LIMIT_MS = 50.0
#: A server above this share of one core (steady window mean) is saturated: its media
#: path runs on one thread.
SERVER_CPU_LIMIT = 85.0
#: Machine CPU (server + load generator) above this share of all cores is saturated.
MACHINE_CPU_LIMIT = 95.0


def report_schema() -> dict[str, Any]:
    """The JSON Schema every report of this version satisfies."""
    text = resources.files("loadgen").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(slots=True)
class ServerSample:
    t: float
    cpu_pct: float
    rss_mb: float


@dataclass(slots=True)
class RunData:
    """Everything a run collected, in ``time.monotonic()`` seconds."""

    config: dict[str, Any]
    started: float
    steady_from: float
    end: float
    progress: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    server: list[ServerSample] = field(default_factory=list)
    server_pid: int | None = None
    cores: int = 1
    machine_cpu_pct: float | None = None
    errors: list[str] = field(default_factory=list)
    #: the zero of ``--duration`` and of link schedules (the last subscriber's start)
    t0: float = 0.0
    #: impaired links (``RunLink.to_json``) and, by bot name, the states applied
    links: list[dict[str, Any]] = field(default_factory=list)
    link_changes: dict[str, list[tuple[float, LinkState]]] = field(default_factory=dict)


def impaired_section(data: RunData, bots: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report's ``impaired`` key: the links, and what each watched subscriber went
    through (``loadgen/impair/schedule.py``). Takes the raw ``watch`` data out of ``bots``."""
    watched = {b["name"]: b.pop("watch") for b in bots if "watch" in b}
    if not data.links:
        return None
    rooms = {b["name"]: b.get("room") for b in bots}

    def link_of(name: str) -> str | None:
        if name in data.link_changes:
            return name
        room = rooms.get(name)
        for role in ("publisher", "subscriber"):
            for link in data.links:
                if link["room"] == room and link["role"] == role:
                    return str(link["bot"])
        return None

    subscribers = []
    publishers = []
    for bot in bots:
        name = bot["name"]
        watch = watched.get(name)
        if watch is None:
            continue
        if bot["role"] == "publisher":
            publishers.append(
                {
                    "name": name,
                    "uplink_layer_changes": [
                        [round(t - data.t0, 2), n] for t, n in watch.get("uplink", [])
                    ],
                }
            )
            continue
        link = link_of(name)
        if link is None:
            continue
        analysis = analyse_subscriber(
            data.link_changes[link], watch["layers"], watch["timeline"], data.t0, data.end
        )
        subscribers.append(
            {
                "name": name,
                "impaired": name in data.link_changes,
                "link": link,
                "received_layers": watch.get("received_layers", {}),
                **analysis,
            }
        )
    return {"links": data.links, "subscribers": subscribers, "publishers": publishers}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def timeline(data: RunData) -> list[dict[str, Any]]:
    """Per second since the start: latency p50/p99 per kind, received pps, loss, CPU."""
    seconds: dict[int, Interval] = defaultdict(Interval)
    for _, progress in data.progress:
        second = int(round(progress["t"] - data.started))
        seconds[second].merge(Interval.from_json(progress["interval"]))
    server = {int(round(s.t - data.started)): s for s in data.server}
    out = []
    for second in sorted(seconds):
        interval = seconds[second]
        row: dict[str, Any] = {"t": second, "latency_ms": {}}
        for kind in KINDS:
            hist = interval.latency[kind]
            row["latency_ms"][kind] = {
                "p50": _round(hist.percentile(50), 3),
                "p99": _round(hist.percentile(99), 3),
            }
        received = sum(interval.counters[k].received for k in KINDS)
        lost = sum(interval.counters[k].lost for k in KINDS)
        expected = sum(interval.counters[k].expected for k in KINDS)
        row["received_pps"] = received
        row["loss_pct"] = _round(100.0 * lost / expected, 3) if expected > 0 else None
        sample = server.get(second)
        row["server_cpu_pct"] = _round(sample.cpu_pct, 1) if sample else None
        out.append(row)
    return out


def _in_window(data: RunData, t: float) -> bool:
    """Whether a sample taken at ``t`` (covering the second before it) is steady state."""
    return data.steady_from < t <= data.end + 0.5


def window_interval(data: RunData, start: float, end: float) -> Interval:
    """Merged per-second intervals whose second ended within ``(start, end]``."""
    total = Interval()
    for _, progress in data.progress:
        if start < progress["t"] <= end + 0.5:
            total.merge(Interval.from_json(progress["interval"]))
    return total


def saturation(data: RunData) -> tuple[bool, dict[str, Any]]:
    """Was the load generator itself the bottleneck? ``(verdict, details)``."""
    reasons: list[str] = []
    workers = []
    loadgen_cpu_total = 0.0
    for index, result in enumerate(data.results):
        steady = [c for t, c in result.get("cpu_samples", []) if _in_window(data, t)]
        cpu = _mean(steady)
        lag = LatencyHistogram.from_json(result["lag"]) if result.get("lag") else LatencyHistogram()
        p99 = lag.percentile(99)
        workers.append({"cpu_pct": _round(cpu, 1), "loop_lag_p99_ms": _round(p99, 1)})
        if cpu is not None:
            loadgen_cpu_total += cpu
            if cpu > WORKER_CPU_LIMIT:
                reasons.append(f"worker {index} used {cpu:.0f}% of a core")
        if p99 is not None and p99 > LOOP_LAG_LIMIT_MS:
            reasons.append(f"worker {index} event loop woke up {p99:.0f} ms late (p99)")
    machine = data.machine_cpu_pct
    if machine is not None and machine > MACHINE_CPU_LIMIT:
        server_cpu = _mean([s.cpu_pct for s in data.server]) or 0.0
        if loadgen_cpu_total >= server_cpu * 0.5:
            reasons.append(
                f"the machine's {data.cores} cores were {machine:.0f}% busy and the load "
                f"generator used {loadgen_cpu_total:.0f}% (server {server_cpu:.0f}%)"
            )
    details = {
        "processes": len(data.results),
        "workers": workers,
        "cpu_pct_total": _round(loadgen_cpu_total, 1),
        "machine_cpu_pct": _round(machine, 1),
        "cores": data.cores,
        "reasons": reasons,
    }
    return bool(reasons), details


def build_report(data: RunData) -> dict[str, Any]:
    total = Interval()
    freezes = FreezeStats()
    join_values: list[float] = []
    join_missing = 0
    join_phases: list[dict[str, float]] = []
    layer_switches = 0
    bots: list[dict[str, Any]] = []
    e2e = LatencyHistogram()
    e2e_decoded = e2e_unreadable = 0
    for result in data.results:
        if result.get("e2e"):
            e2e.merge(LatencyHistogram.from_json(result["e2e"]))
            e2e_decoded += int(result.get("e2e_decoded", 0))
            e2e_unreadable += int(result.get("e2e_unreadable", 0))
        total.merge(Interval.from_json(result["total"]))
        freeze = result["freezes"]
        freezes.merge(FreezeStats(freeze["count"], freeze["total_s"], freeze["max_s"]))
        join_phases.extend(p for p in result.get("join_phases_ms", []) if p)
        for value in result["join_ms"]:
            if value is None:
                join_missing += 1
            else:
                join_values.append(value)
        layer_switches += int(result["layer_switches"])
        bots.extend(result["bots"])
    impaired = impaired_section(data, bots)
    steady = window_interval(data, data.steady_from, data.end)
    steady_s = max(data.end - data.steady_from, 1e-9)
    # latency of the steady window: while a subscriber joins, the SFU replays the newest
    # keyframe and what followed it (up to 0.5 s old, to show a picture sooner), whose
    # age is not forwarding latency; the whole run's is ``latency_ms_run``
    latency = {
        kind: (steady if steady.latency[kind].count else total).latency[kind] for kind in KINDS
    }
    received_steady = sum(steady.counters[k].received for k in KINDS)
    forwarded_pps = received_steady / steady_s
    server_steady = [s for s in data.server if _in_window(data, s.t)]
    server_cpu = _mean([s.cpu_pct for s in server_steady])
    server: dict[str, Any] = {
        "pid": data.server_pid,
        "cpu_pct": _round(server_cpu, 1),
        "cpu_pct_max": _round(max((s.cpu_pct for s in server_steady), default=None), 1),
        "rss_mb": _round(max((s.rss_mb for s in data.server), default=None), 1),
        "samples": len(data.server),
        "cpu_us_per_forwarded_packet": _round(server_cpu * 1e4 / forwarded_pps, 2)
        if server_cpu is not None and forwarded_pps > 0
        else None,
    }
    saturated, loadgen = saturation(data)
    loadgen_cpu = loadgen["cpu_pct_total"] if data.results else None
    loadgen["cpu_us_per_received_packet"] = (
        _round(loadgen_cpu * 1e4 / forwarded_pps, 2)
        if loadgen_cpu is not None and forwarded_pps > 0
        else None
    )
    server_saturated = server_cpu is not None and server_cpu > SERVER_CPU_LIMIT
    run_s = data.end - data.started
    report = {
        "version": REPORT_VERSION,
        "config": data.config,
        "duration_s": round(run_s, 2),
        "steady_s": round(steady_s, 2),
        "latency_ms": {kind: latency[kind].summary() for kind in KINDS},
        "latency_ms_run": {kind: total.latency[kind].summary() for kind in KINDS},
        "join_ms": {
            "p50": _round(nearest_rank(join_values, 50), 1),
            "p95": _round(nearest_rank(join_values, 95), 1),
            "max": _round(max(join_values, default=None), 1),
            "count": len(join_values),
            "missing": join_missing,
        },
        "join_phases_ms": phase_medians(join_phases),
        "loss_pct": {kind: total.counters[kind].loss_pct() for kind in KINDS},
        "loss_before_repair_pct": {
            kind: total.counters[kind].loss_before_repair_pct() for kind in KINDS
        },
        "freezes": {
            "count": freezes.count,
            "total_ms": round(freezes.total_s * 1000, 1),
            "max_ms": round(freezes.max_s * 1000, 1),
        },
        "layer_switches": layer_switches,
        "e2e_ms": {**e2e.summary(), "decoded": e2e_decoded, "unreadable": e2e_unreadable}
        if data.config.get("e2e")
        else None,
        "packets": {
            "sent": sum(total.counters[k].sent for k in KINDS),
            "received": sum(total.counters[k].received for k in KINDS),
            "forwarded_per_s": round(forwarded_pps, 1),
            **{kind: total.counters[kind].to_json() for kind in KINDS},
        },
        "server": server,
        "loadgen_saturated": saturated,
        "server_saturated": server_saturated,
        "loadgen": loadgen,
        "bots": {
            "publishers": sum(b["role"] == "publisher" for b in bots),
            "subscribers": sum(b["role"] == "subscriber" for b in bots),
            "joined": sum(bool(b["joined"]) for b in bots),
            "errors": [f"{b['name']}: {e}" for b in bots for e in b["errors"]][:50],
            "list": bots,
        },
        "errors": list(data.errors),
        "timeline": timeline(data),
        "latency_cdf": {
            kind: [[round(ms, 4), round(frac, 5)] for ms, frac in latency[kind].cdf()]
            for kind in KINDS
        },
        "join_ms_values": [round(v, 1) for v in sorted(join_values)],
        "impaired": impaired,
    }
    report.update(verdict_section(report))
    return report


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def summary_table(report: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    lat = report["latency_ms"]
    join = report["join_ms"]
    server = report["server"]
    packets = report["packets"]
    rows = [
        (
            "latency audio p50/p95/p99/max ms",
            "/".join(_fmt(lat["audio"][k]) for k in ("p50", "p95", "p99", "max")),
        ),
        (
            "latency video p50/p95/p99/max ms",
            "/".join(_fmt(lat["video"][k]) for k in ("p50", "p95", "p99", "max")),
        ),
        (
            "join p50/p95/max ms",
            "/".join(_fmt(join[k]) for k in ("p50", "p95", "max"))
            + f"  ({join['count']} joined, {join['missing']} without video)",
        ),
        (
            "join phases, median ms",
            ", ".join(f"{k} {v:g}" for k, v in report.get("join_phases_ms", {}).items()) or "-",
        ),
        (
            "loss audio / video %",
            f"{_fmt(report['loss_pct']['audio'])} / {_fmt(report['loss_pct']['video'])}",
        ),
        (
            "freezes (count, total ms)",
            f"{report['freezes']['count']}, {report['freezes']['total_ms']}",
        ),
        ("layer switches", str(report["layer_switches"])),
        *(
            [
                (
                    "glass to glass p50/p95/p99/max ms",
                    "/".join(_fmt(report["e2e_ms"][k]) for k in ("p50", "p95", "p99", "max"))
                    + f"  ({report['e2e_ms']['count']} frames)",
                )
            ]
            if report.get("e2e_ms")
            else []
        ),
        ("packets sent by publishers", packets_sent_line(packets)),
        ("packets received by subscribers", packets_received_line(packets)),
        ("forwarded packets/s (steady)", _fmt(packets["forwarded_per_s"])),
        ("server CPU % (mean/max), RSS MB", server_line(server)),
        (
            "server CPU µs per forwarded packet",
            _fmt(server["cpu_us_per_forwarded_packet"]) if server["samples"] else "-",
        ),
        (
            "load generator CPU %, µs per received pkt",
            f"{_fmt(report['loadgen']['cpu_pct_total'])}, "
            f"{_fmt(report['loadgen'].get('cpu_us_per_received_packet'))}",
        ),
        (
            "load generator saturated",
            "YES: " + "; ".join(report["loadgen"]["reasons"])
            if report["loadgen_saturated"]
            else "no",
        ),
        ("server saturated", "YES" if report.get("server_saturated") else "no"),
    ]
    for sub in (report.get("impaired") or {}).get("subscribers", []):
        rows.append((f"{sub['name']} (link of {sub['link']})", impaired_line(sub)))
    if "verdict" in report:
        level = report["service_level"]
        levels = (
            f"p99 <= {level['p99_ms']:g} ms, loss <= {level['loss_pct']:g} %, "
            f"freeze <= {level['max_freeze_ms']:g} ms"
        )
        failures = "; ".join(f"{f['code']}: {f['message']}" for f in report["failed"])
        rows.append(
            (
                "service level",
                f"met ({levels})" if report["ok"] else f"NOT MET ({levels}): {failures}",
            )
        )
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    lines.append(PACKETS_NOTE)
    if report["bots"]["errors"]:
        lines.append(
            f"errors ({len(report['bots']['errors'])}): " + "; ".join(report["bots"]["errors"][:5])
        )
    return "\n".join(lines)


#: What the two packet rows count (printed under the table).
PACKETS_NOTE = (
    '(packets: "sent" counts every media packet the publishers sent, every simulcast layer;\n'
    ' "received" and "expected" are summed over subscribers, each expecting the packets of\n'
    " the streams it got from its first packet to its last, so expected is not sent x subscribers\n"
    " when subscribers join late or get one simulcast layer of three)"
)


def packets_sent_line(packets: dict[str, Any]) -> str:
    return f"{packets['sent']} (audio {packets['audio']['sent']}, video {packets['video']['sent']})"


def packets_received_line(packets: dict[str, Any]) -> str:
    """Received of expected, lost, and how much of it retransmissions repaired."""
    expected = sum(packets[k]["expected"] for k in KINDS)
    lost = sum(packets[k]["lost"] for k in KINDS)
    repaired = sum(packets[k].get("repaired", 0) for k in KINDS)
    share = f" ({100.0 * packets['received'] / expected:.2f} %)" if expected else ""
    return f"{packets['received']} of {expected} expected{share}, {lost} lost" + (
        f", {repaired} repaired by retransmission" if repaired else ""
    )


def server_line(server: dict[str, Any]) -> str:
    """The server's CPU and RSS, or why they were not measured."""
    if server["pid"] is None:
        return "not measured: pass --server-pid PID (or let parley load start the server)"
    if not server["samples"]:
        return f"not measured: no samples of pid {server['pid']} (gone, or /proc not readable)"
    return f"{_fmt(server['cpu_pct'])}/{_fmt(server['cpu_pct_max'])}, {_fmt(server['rss_mb'])}"


def impaired_line(sub: dict[str, Any]) -> str:
    """One watched subscriber in the summary table."""
    freezes = sub["freezes"]
    return (
        f"down after {_fmt(sub['switch_down_s'], ' s')}, top again after "
        f"{_fmt(sub['back_to_top_s'], ' s')}, {_fmt(sub['layer_switches_between'])} switches; "
        f"limited: audio loss {_fmt(sub['audio_loss_pct_limited'], ' %')}, video loss "
        f"{_fmt(sub['video_loss_pct_limited'], ' %')} "
        f"({_fmt(sub['video_loss_before_repair_pct_limited'], ' %')} before repair); "
        f"freezes {freezes['count']} ({freezes['total_ms']} ms)"
    )
