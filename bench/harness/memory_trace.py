"""What holds a server's memory: RSS parts from ``/proc`` and the server's ``tracemalloc``
snapshots (``parley/memtrace.py``) grouped by package, file and line; the RSS each import
of ``parley serve`` adds. Used by ``bench/memory.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: What ``parley serve`` imports, in the order measured: each step's RSS increment is
#: what it adds on top of the steps before it (shared dependencies count once, first).
IMPORT_STEPS: tuple[tuple[str, str], ...] = (
    ("asyncio (+ ssl, OpenSSL's libcrypto)", "import asyncio"),
    ("parley.cli", "import parley.cli"),
    ("aiohttp", "import aiohttp.web"),
    ("cryptography, pyOpenSSL", "import cryptography.x509, OpenSSL.SSL"),
    ("aioice, pylibsrtp, google_crc32c", "import aioice, pylibsrtp, google_crc32c"),
    ("prometheus_client", "import prometheus_client"),
    ("aiortc (through sfu.aiortc_adapter: without PyAV)", "import sfu.aiortc_adapter"),
    ("sfu (rooms, sources, forwarders)", "import sfu.room"),
    ("signaling (server)", "import signaling.server"),
    ("cluster (front, redis node)", "import cluster.front, cluster.redis_node, cluster.workers"),
)
#: Measured after :data:`IMPORT_STEPS` (and after the heavy modules are listed): what
#: ``parley serve`` no longer loads.
EXTRA_STEPS: tuple[tuple[str, str], ...] = (
    ("av (PyAV, FFmpeg's libraries: not loaded by parley serve)", "import av"),
)

HEAVY = ("av", "numpy", "PIL", "redis", "matplotlib", "aiortc.codecs.vpx", "aiortc.codecs.h264")


def process_memory(pid: int) -> dict[str, float]:
    """VmRSS and its anonymous and file-backed parts, MB (10^6 bytes), from
    ``/proc/PID/status``."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = round(int(value.split()[0]) * 1024 / 1e6, 2)
    return out


_IMPORT_PROBE = """
import json, sys
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * {page} / 1e6
steps, extra = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = [["python", rss()]]
for label, code in steps:
    exec(code)
    out.append([label, rss()])
heavy = [m for m in {heavy!r} if m in sys.modules]
for label, code in extra:
    exec(code)
    out.append([label, rss()])
print(json.dumps({{"rss": out, "heavy_loaded": heavy}}))
"""


def import_costs() -> dict[str, Any]:
    """RSS of a fresh interpreter after each of :data:`IMPORT_STEPS`, and the increments."""
    import os

    code = _IMPORT_PROBE.format(page=os.sysconf("SC_PAGE_SIZE"), heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(IMPORT_STEPS), json.dumps(EXTRA_STEPS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(proc.stdout)
    steps = []
    previous = None
    for label, rss in data["rss"]:
        steps.append(
            {
                "step": label,
                "rss_mb": round(rss, 1),
                "added_mb": None if previous is None else round(rss - previous, 1),
            }
        )
        previous = rss
    return {"steps": steps, "heavy_loaded_by_serve_imports": data["heavy_loaded"]}


def _package(filename: str) -> str:
    """``aiortc``, ``sfu``, ``<frozen importlib>``... for a traced file name."""
    marker = "site-packages/"
    if marker in filename:
        return filename.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    try:
        rel = Path(filename).resolve().relative_to(REPO)
        return rel.parts[0].removesuffix(".py")
    except ValueError:
        pass
    if filename.startswith("<"):
        return filename
    return "stdlib:" + Path(filename).stem


def _short(filename: str) -> str:
    marker = "site-packages/"
    if marker in filename:
        return filename.split(marker, 1)[1]
    try:
        return str(Path(filename).resolve().relative_to(REPO))
    except ValueError:
        return "stdlib/" + Path(filename).name if not filename.startswith("<") else filename


def _filtered(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    return snapshot.filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<unknown>"))
    )


def summarize(snapshot: tracemalloc.Snapshot, top: int = 15) -> dict[str, Any]:
    """Traced bytes: total, by package, by file and by line (top entries)."""
    snap = _filtered(snapshot)
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    packages: dict[str, int] = {}
    files: dict[str, int] = {}
    for s in stats:
        name = s.traceback[0].filename
        packages[_package(name)] = packages.get(_package(name), 0) + s.size
        files[_short(name)] = files.get(_short(name), 0) + s.size

    def ranked(d: dict[str, int]) -> list[list[Any]]:
        rows = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [[k, round(v / 1e6, 3)] for k, v in rows]

    lines = [
        [
            f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
            round(s.size / 1e6, 3),
            s.count,
        ]
        for s in stats[:top]
    ]
    return {
        "traced_mb": round(total / 1e6, 2),
        "by_package_mb": ranked(packages),
        "by_file_mb": ranked(files),
        "by_line_mb_count": lines,
    }


def difference(
    new: tracemalloc.Snapshot, old: tracemalloc.Snapshot, per: int, top: int = 15
) -> dict[str, Any]:
    """What ``new`` holds beyond ``old``, by line and by traceback, divided by ``per``
    (participants added): KB each."""
    a, b = _filtered(new), _filtered(old)
    by_line = a.compare_to(b, "lineno")
    by_trace = a.compare_to(b, "traceback")
    total = sum(s.size_diff for s in by_line)
    per = max(per, 1)

    def where(tb: tracemalloc.Traceback) -> str:
        newest_first = list(tb)[::-1]  # a Traceback runs from the oldest frame
        return " <- ".join(f"{_short(f.filename)}:{f.lineno}" for f in newest_first[:3])

    return {
        "added_mb": round(total / 1e6, 3),
        "per_participant_kb": round(total / per / 1e3, 1),
        "by_line_kb_each": [
            [where(s.traceback), round(s.size_diff / per / 1e3, 2), round(s.count_diff / per, 1)]
            for s in by_line[:top]
        ],
        "by_traceback_kb_each": [
            [where(s.traceback), round(s.size_diff / per / 1e3, 2)] for s in by_trace[:top]
        ],
    }


def load_snapshot(path: Path) -> tracemalloc.Snapshot:
    return tracemalloc.Snapshot.load(str(path))
