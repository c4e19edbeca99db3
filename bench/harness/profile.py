"""``--profile``: py-spy the server during a step and sum its time by category."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import linecache
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from harness.common import CLIENT_CPU, REPO
from harness.measure import measure, start_scenario, wait_for_quiet
from harness.sweep import fanout_pps

# --------------------------------------------------------------- profiling

_EPOLL_WAIT = "epoll wait (idle, or the syscall and wake-up)"
_CATEGORIES = (
    _EPOLL_WAIT,
    "event loop (epoll, scheduling)",
    "recvfrom (syscall + asyncio read)",
    "SRTP unprotect",
    "parse (RTP header, VP8 descriptor)",
    "ingress bookkeeping (stats, NACK, cache)",
    "per-subscriber rewrite",
    "native loop (sfu/_native.c: rewrite, bookkeeping)",
    "dispatch (fast path, demux, send wrapper)",
    "SRTP protect",
    "sendto (syscall incl. loopback delivery)",
    "RTCP, timers, control",
    "other",
)

# Python frames: "func (file:line)"; native ones (py-spy --native): "func (library)"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frame_category(func: str, path: str, line: int) -> str | None:
    """The category of one frame, or None to decide from its caller."""
    short = func.rsplit(".", 1)[-1]
    base = os.path.basename(path)
    if short.startswith("srtp_unprotect"):  # libsrtp itself (native frames)
        return "SRTP unprotect"
    if short.startswith("srtp_protect"):
        return "SRTP protect"
    if base.startswith("_native."):  # sfu/_native.c; its calls into libsrtp/libc are leaves
        return "native loop (sfu/_native.c: rewrite, bookkeeping)"
    if base.startswith("libc.so"):
        if "sendto" in short or "sendmsg" in short:
            return "sendto (syscall incl. loopback delivery)"
        if "recvfrom" in short or "recvmsg" in short:
            return "recvfrom (syscall + asyncio read)"
        if "epoll" in short:  # asleep, or the syscall: what the measured CPU leaves
            return _EPOLL_WAIT
        return None
    if "pylibsrtp" in path:
        if short.startswith("unprotect"):
            return "SRTP unprotect"
        if short.startswith("protect"):
            return "SRTP protect"
        return None
    text = linecache.getline(path, line) if line > 0 else ""
    if base in ("aiortc_adapter.py", "media_port.py"):  # sfu/aiortc_adapter/media_port.py
        if short == "srtp_unprotect":
            return "SRTP unprotect"
        if short == "srtp_protect":
            return "SRTP protect"
        if short == "read_ready":
            if "recvfrom(" in text:
                return "recvfrom (syscall + asyncio read)"
            return "dispatch (fast path, demux, send wrapper)"
        if "unprotect" in text:
            return "SRTP unprotect"
        if ".protect(" in text or "protect_rtcp(" in text:
            return "SRTP protect"
        if "sendto(" in text:
            return "sendto (syscall incl. loopback delivery)"
        if short in ("datagram_received", "_rtp_in", "send", "send_rtp"):
            return "dispatch (fast path, demux, send wrapper)"
        return "RTCP, timers, control"
    if base == "selector_events.py":
        if short == "sendto":
            return "sendto (syscall incl. loopback delivery)"
        if short.startswith("_read_ready"):
            return "recvfrom (syscall + asyncio read)"
        return "event loop (epoll, scheduling)"
    if (
        base in ("selectors.py", "base_events.py", "events.py")
        and "asyncio" in path
        or base == "selectors.py"
    ):
        return "event loop (epoll, scheduling)"
    if "/sfu/" in path:
        if base == "packet.py":
            if short.startswith("build_"):
                return "per-subscriber rewrite"
            return "parse (RTP header, VP8 descriptor)"
        if base == "rewrite.py":
            return "per-subscriber rewrite"
        if base == "forwarder.py":
            if short in ("forward", "_render", "_extension", "skip"):
                return "per-subscriber rewrite"
            return "RTCP, timers, control"
        if base in ("receive_stats.py", "nack.py", "packet_cache.py", "seq.py"):
            return "ingress bookkeeping (stats, NACK, cache)"
        if base == "source.py":
            if short == "on_rtp":
                if "fanout(" in text:
                    return "native loop (sfu/_native.c: rewrite, bookkeeping)"
                if "forward(" in text or "for forwarder" in text:
                    return "dispatch (fast path, demux, send wrapper)"
                if "Vp8Descriptor(" in text:
                    return "parse (RTP header, VP8 descriptor)"
                return "ingress bookkeeping (stats, NACK, cache)"
            return "RTCP, timers, control"
        if base in ("participant.py", "publish_side.py", "egress.py"):
            if short in ("_on_publisher_rtp", "on_rtp"):  # PublishSide.on_rtp
                if "RtpView(" in text:
                    return "parse (RTP header, VP8 descriptor)"
                return "dispatch (fast path, demux, send wrapper)"
            if short == "send_rtp":
                return "dispatch (fast path, demux, send wrapper)"
            return "RTCP, timers, control"
        return "RTCP, timers, control"
    if "aiortc" in path or "aioice" in path or "aiohttp" in path:
        return "RTCP, timers, control"
    return None


def _categorize(stack: list[tuple[str, str, int]]) -> str:
    """Map one sampled stack (root first) to a category, deciding from the leaf up."""
    for func, path, line in reversed(stack):
        category = _frame_category(func, path, line)
        if category is not None:
            return category
    return "other"


def summarise_profile(raw_path: Path) -> dict[str, Any]:
    samples: dict[str, int] = dict.fromkeys(_CATEGORIES, 0)
    leaves: dict[str, int] = {}
    total = 0
    for line in raw_path.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames: list[tuple[str, str, int]] = []
        for part in stack_text.split(";"):
            match = _FRAME.match(part)
            if match:
                frames.append((match["func"], match["file"], int(match["line"] or 0)))
        if not frames:
            continue
        category = _categorize(frames)
        samples[category] += count
        total += count
        leaf = frames[-1]
        key = f"{leaf[0]} ({os.path.relpath(leaf[1], REPO) if leaf[1].startswith(str(REPO)) else os.path.basename(leaf[1])}:{leaf[2]})"
        leaves[key] = leaves.get(key, 0) + count
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:25]
    return {
        "samples": total,
        "sample_counts": samples,
        "share_of_samples_pct": {
            k: round(100 * v / total, 1) if total else 0.0 for k, v in samples.items()
        },
        "top_leaf_lines": [{"frame": k, "pct": round(100 * v / total, 1)} for k, v in top],
    }


async def run_profile(args: argparse.Namespace, fanout: int, out_dir: Path) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return {"fanout": fanout, "error": "py-spy not installed (pip install py-spy)"}
    scenario = await start_scenario(args, fanout, fanout_pps(args, fanout), "parley")
    raw = out_dir / f"profile-fanout{fanout}.txt"
    try:
        await asyncio.sleep(args.warmup)
        await wait_for_quiet(args, scenario)
        cmd = [
            spy,
            "record",
            "--pid",
            str(scenario.server.pid),
            "--duration",
            str(int(args.window)),
            "--rate",
            str(args.profile_rate),
            "--full-filenames",
            "--format",
            "raw",
            "--output",
            str(raw),
        ]
        if not args.profile_blocking:
            cmd.append("--nonblocking")
        else:  # py-spy samples native frames only while it stops the process
            cmd.append("--native")  # frames inside sfu/_native.c, libsrtp and libc too
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        if args.pin:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, {CLIENT_CPU})
        await asyncio.sleep(0.5)  # let py-spy attach
        measured = await measure(args, scenario, args.window - 1.0, {"py-spy": proc.pid})
        try:
            _, err = await asyncio.wait_for(proc.communicate(), args.window + 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"fanout": fanout, "error": "py-spy did not finish"}
        if proc.returncode != 0 or not raw.exists():
            return {
                "fanout": fanout,
                "error": f"py-spy failed: {err.decode(errors='replace')[-500:]}",
            }
    finally:
        await scenario.stop()
    summary = summarise_profile(raw)
    # py-spy samples wall-clock time and, here, does not drop the samples where the
    # thread sleeps in epoll_wait. So: the time in each category is samples / rate; per
    # incoming packet, divide by the packets of the recording; the epoll line gets what
    # the measured CPU time leaves (the syscall, context switches, wake-ups).
    duration = float(int(args.window))
    packets = measured["in_pps"] * duration
    counts = summary.pop("sample_counts")
    per_packet = {
        k: 1e6 * n / args.profile_rate / packets for k, n in counts.items() if k != _EPOLL_WAIT
    }
    cpu_per_packet = measured["sfu_us_per_in"] or 0.0
    sampled = sum(per_packet.values())
    summary["sampled_vs_measured_cpu"] = (
        round(sampled / cpu_per_packet, 2) if cpu_per_packet else None
    )
    if sampled > cpu_per_packet > 0:  # more samples than CPU time: scale down to the CPU time
        per_packet = {k: v * cpu_per_packet / sampled for k, v in per_packet.items()}
    per_packet[_EPOLL_WAIT] = max(0.0, cpu_per_packet - sum(per_packet.values()))
    summary["us_per_incoming_packet"] = {k: round(v, 2) for k, v in per_packet.items()}
    summary["us_per_incoming_packet_total_cpu"] = cpu_per_packet
    summary["share_of_cpu_pct"] = {
        k: round(100 * v / cpu_per_packet, 1) if cpu_per_packet else 0.0
        for k, v in per_packet.items()
    }
    summary.update(
        fanout=fanout,
        sfu_source_digest=scenario.source_digest,
        raw_file=str(raw),
        rate_hz=args.profile_rate,
        duration_s=duration,
        measured_during_profile={
            k: measured[k]
            for k in (
                "in_pps",
                "forwarded_pps",
                "sfu_core_pct",
                "sfu_us_per_in",
                "sfu_us_per_fwd",
                "sfu_loss_pct",
            )
        },
        sfu_user_system_s=[
            measured["cpu"]["server"]["user_s"],
            measured["cpu"]["server"]["system_s"],
        ],
        blocking=args.profile_blocking,
    )
    return summary


# --------------------------------------------------------------- calibration
