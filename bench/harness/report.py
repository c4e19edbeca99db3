"""What the report says besides the measurements: the code and machine measured, the
tables printed, Parley / Janus ratios."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from harness.common import CLIENT_CPU, JANUS_ROOM, REPO, SERVER_CPU


def source_digest() -> str:
    """A digest of the SFU and signaling sources the server runs (they may change under us)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*REPO.glob("sfu/**/*.py"), *REPO.glob("signaling/**/*.py")]):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_state() -> dict[str, Any]:

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *argv], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "sfu_signaling_dirty": bool(git("status", "--porcelain", "--", "sfu", "signaling")),
    }


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    openssl = None
    with contextlib.suppress(Exception):
        from OpenSSL import SSL

        openssl = SSL.SSLeay_version(SSL.SSLEAY_VERSION).decode()
    rmem = {}
    for name in ("rmem_default", "rmem_max", "wmem_default"):
        with contextlib.suppress(OSError):
            rmem[name] = int(Path(f"/proc/sys/net/core/{name}").read_text())
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiortc": version("aiortc"),
        "aioice": version("aioice"),
        "pylibsrtp": version("pylibsrtp"),
        "openssl": openssl,
        "pinning": (
            {"sfu_cpu": SERVER_CPU, "clients_cpu": CLIENT_CPU}
            if args.pin
            else "none (scheduler places processes)"
        ),
        "net_core": rmem,
        "client_socket_rcvbuf": args.client_rcvbuf,
    }


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def print_step(step: dict[str, Any]) -> None:
    print(
        f"  sweep {step['target']} K={step['fanout']:>2} target {step['target_pps']:>7.0f} pps: in {step['in_pps']:>8.0f} "
        f"fwd {step['forwarded_pps']:>8.0f} SFU {step['sfu_core_pct']:>5.1f}% "
        f"{_fmt(step['sfu_us_per_fwd'], '.1f')} us/fwd  SFU loss {_fmt(step['sfu_loss_pct'], '.3f')}% "
        f"(client sockets dropped {step['udp_drops_client_sockets']}) clients {step['clients_core_pct']:.0f}%",
        flush=True,
    )


def print_table(results: list[dict[str, Any]]) -> None:
    head = (
        f"{'server':>6} {'K':>3} {'in pps':>8} {'fwd pps':>9} {'SFU %core':>9} {'us/in':>7} {'us/fwd':>7} "
        f"{'loss %':>7} {'SFU loss %':>10} {'srv drops':>9} {'cli drops':>9} {'pub %':>6} {'subs %':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        subs = sum(v["core_pct"] for k, v in r["cpu"].items() if k.startswith("subs"))
        print(
            f"{r['target']:>6} {r['fanout']:>3} {r['in_pps']:>8.0f} {r['forwarded_pps']:>9.0f} {r['sfu_core_pct']:>9.1f} "
            f"{_fmt(r['sfu_us_per_in'], '.2f'):>7} {_fmt(r['sfu_us_per_fwd'], '.2f'):>7} "
            f"{_fmt(r['loss_pct'], '.3f'):>7} {_fmt(r['sfu_loss_pct'], '.3f'):>10} "
            f"{r['udp_drops_server_sockets']:>9} {r['udp_drops_client_sockets']:>9} "
            f"{r['cpu']['publisher']['core_pct']:>6.1f} {subs:>7.1f}"
        )
    for r in results:
        if r["saturated_clients"]:
            print(
                f"  {r['target']} K={r['fanout']}: client process(es) above 90% of a core: {', '.join(r['saturated_clients'])}"
            )
        if r["clients_core_pct"] > 90:
            print(
                f"  {r['target']} K={r['fanout']}: the client processes together used {r['clients_core_pct']}% of a core"
            )


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(report: dict[str, Any], other: str = "janus") -> dict[str, Any]:
    """Parley / ``other`` per fan-out (same rates, same run): CPU per packet, and the sweeps'."""
    out: dict[str, Any] = {}
    by = {(r["target"], r["fanout"]): r for r in report["results"]}
    for (target, fanout), parley in sorted(by.items(), key=lambda kv: kv[0][1]):
        theirs = by.get((other, fanout))
        if target != "parley" or theirs is None:
            continue
        out[f"fanout_{fanout}"] = {
            "in_pps": [parley["in_pps"], theirs["in_pps"]],
            "parley_us_per_fwd": parley["sfu_us_per_fwd"],
            f"{other.replace('-', '_')}_us_per_fwd": theirs["sfu_us_per_fwd"],
            "us_per_fwd": _ratio(parley["sfu_us_per_fwd"], theirs["sfu_us_per_fwd"]),
            "us_per_in": _ratio(parley["sfu_us_per_in"], theirs["sfu_us_per_in"]),
            "sfu_loss_pct": [parley["sfu_loss_pct"], theirs["sfu_loss_pct"]],
        }
    sweeps = {(s["target"], s["fanout"]): s for s in report.get("sweep", [])}
    for (target, fanout), parley in sorted(sweeps.items(), key=lambda kv: kv[0][1]):
        theirs = sweeps.get((other, fanout))
        if target != "parley" or theirs is None:
            continue
        out[f"sweep_fanout_{fanout}"] = {
            "max_clean_forwarded_pps": _ratio(
                parley["max_clean_forwarded_pps"], theirs["max_clean_forwarded_pps"]
            ),
            "stopped_by": [parley["stopped_by"], theirs["stopped_by"]],
        }
    return out


def janus_info(args: argparse.Namespace) -> dict[str, Any]:
    """What the JSON records about the Janus under test."""

    version = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(
            ["janus", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
        match = re.search(r"Janus version:\s*(\S+)\s*\(([^)]*)\)", text)
        version = match.group(2) if match else text.strip().splitlines()[0]
    return {
        "version": version,
        "event_loops": args.janus_event_loops,
        "pinned_cpu": SERVER_CPU if args.pin else None,
        "room": JANUS_ROOM,
        "signaling": "websockets transport (janus-protocol), loadgen.load.janus.JanusSession",
        "notes": (
            "janus.jcfg from bench/janus_server.py: only the VideoRoom plugin and the "
            "websockets transport loaded, event handlers off, debug_level 3, ICE only on "
            "the veth (ice_enforce_list), no full trickle; the VideoRoom's own jcfg is empty"
        ),
        "config_files": getattr(args, "janus_config_files", None),
    }
