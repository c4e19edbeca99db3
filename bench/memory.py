"""Parley's memory: base RSS and RSS per publisher and per subscriber (issue 18).

For each level (participants in all: ``--levels 1,50,200``) a fresh ``parley serve`` is
started (real server, real peer connections), left idle, and its RSS read (base). Then
``parley load``'s lean bots join: one simulcast publisher (three VP8 layers and Opus) per
room and subscribers, rooms of at most ``--room-size`` participants. RSS is read once
the publishers send and have settled, and again once every subscriber has received for
``--settle`` seconds; the increments give MB per publisher and per subscriber. After
the bots leave it is read once more, with the server's participant count. Runs in a
loopback-only network namespace (``scripts/in_netns.py``'s). Prints a table and writes
``bench/results/memory.json``.

``--trace`` runs the levels again with ``PARLEY_TRACEMALLOC`` set (``parley/memtrace.py``):
tracemalloc snapshots at each phase say which files and lines hold the Python heap
(per publisher, per subscriber, and what stays after they leave); ``--imports`` adds
what each import of ``parley serve`` costs in RSS.

    .venv/bin/python bench/memory.py --levels 1,50,200 --trace --imports
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "bench"):  # run as a script from anywhere
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from harness.memory_trace import (  # noqa: E402
    difference,
    import_costs,
    load_snapshot,
    process_memory,
    summarize,
)
from janus_server import CLIENT_ADDRESS, IsolatedServer  # noqa: E402

from loadgen.load.config import LoadConfig  # noqa: E402
from loadgen.load.run import LoadRun  # noqa: E402
from loadgen.netns import ensure_loopback_namespace  # noqa: E402
from loadgen.server_process import (  # noqa: E402
    free_port,
    serve_command,
    stop_server,
    wait_for_healthz,
)


def sample_memory(pid: int, seconds: float = 1.0, samples: int = 5) -> dict[str, float]:
    """Median over ``samples`` reads spread over ``seconds`` of each RSS figure."""
    reads = []
    for _ in range(samples):
        reads.append(process_memory(pid))
        time.sleep(seconds / samples)
    return {key: round(statistics.median(r[key] for r in reads), 2) for key in reads[0]}


def healthz(url: str) -> dict[str, Any] | None:
    """Parley's ``/healthz`` (rooms, participants, forwarders), None for Janus."""
    if not url.startswith("http"):
        return None
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


class Tracer:
    """Asks the server for tracemalloc snapshots (SIGUSR2) and waits for each."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.taken: dict[str, Path] = {}

    def snap(self, pid: int, phase: str) -> None:
        if self.directory is None:
            return
        n = len(self.taken)
        os.kill(pid, signal.SIGUSR2)
        done = self.directory / f"modules-{n}.txt"
        deadline = time.monotonic() + 120
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if done.exists():
            self.taken[phase] = self.directory / f"snapshot-{n}.pickle"


class MemoryRun(LoadRun):
    """A load run that reads the server's memory once publishers send (before the first
    subscriber starts) and once subscribers have settled."""

    def __init__(self, config: LoadConfig, settle: float, tracer: Tracer) -> None:
        super().__init__(config)
        self.settle = settle
        self.tracer = tracer
        self.phases: dict[str, dict[str, Any]] = {}
        self._subscribers_started: float | None = None
        self.server_pid = config.server_pid or 0

    def _read(self, phase: str) -> None:
        memory = sample_memory(self.server_pid)
        self.phases[phase] = {**memory, "health": healthz(self.url)}
        self.tracer.snap(self.server_pid, phase)

    def _start_subscribers(self, subs: list[Any]) -> float:
        self._wait_until(time.monotonic() + self.settle)
        self._read("publishers")
        last = super()._start_subscribers(subs)
        self._subscribers_started = last
        return last

    def _on_second(self, t: float) -> None:
        super()._on_second(t)
        started = self._subscribers_started
        if (
            started is not None
            and "all" not in self.phases
            and time.monotonic() >= started + self.settle
        ):
            self._read("all")


def plan(level: int, room_size: int) -> tuple[int, int]:
    """(rooms, subscribers per room) for ``level`` participants: one publisher a room."""
    rooms = -(-level // room_size)
    return rooms, (level - rooms) // rooms


class Server:
    """``parley serve`` on loopback here, or Janus in its own namespace over a veth pair
    (``bench/janus_server.py``, as ``bench/compare.py`` runs it)."""

    def __init__(self, target: str, trace_dir: Path | None) -> None:
        self.target = target
        self.janus: IsolatedServer | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        if target == "janus":
            self.janus = IsolatedServer("janus")
            self.pid, self.url, self.ice_address = self.janus.pid, self.janus.url, CLIENT_ADDRESS
            return
        port = free_port()
        env = dict(os.environ)
        if trace_dir is not None:
            env["PARLEY_TRACEMALLOC"] = str(trace_dir)
        cmd = serve_command("127.0.0.1", port, ("127.0.0.1",))
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        self.pid, self.url, self.ice_address = (
            self.proc.pid,
            f"http://127.0.0.1:{port}",
            "127.0.0.1",
        )
        proc = self.proc
        try:
            wait_for_healthz(self.url, lambda: proc.poll() is None, 60)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)
        if self.janus is not None:
            self.janus.close()


def run_level(
    level: int, args: argparse.Namespace, trace_dir: Path | None, target: str = "parley"
) -> dict[str, Any]:
    rooms, subs = plan(level, args.room_size)
    server = Server(target, trace_dir)
    tracer = Tracer(trace_dir)
    try:
        time.sleep(args.idle)
        base = sample_memory(server.pid)
        tracer.snap(server.pid, "base")
        config = LoadConfig(
            url=server.url, rooms=rooms, publishers=1, subscribers=subs, simulcast=True,
            duration=args.settle + 4.0, ramp=args.ramp, processes=args.processes,
            server_pid=server.pid, quiet=True, target=target, ice_address=server.ice_address,
        )  # fmt: skip
        run = MemoryRun(config, args.settle, tracer)
        report = run.run()
        time.sleep(args.settle)
        after = {**sample_memory(server.pid), "health": healthz(server.url)}
        tracer.snap(server.pid, "after_leave")
    finally:
        server.close()
    pubs, subscribers = rooms, rooms * subs
    pub_phase = run.phases.get("publishers", {})
    all_phase = run.phases.get("all", {})
    result: dict[str, Any] = {
        "target": target,
        "level": level,
        "rooms": rooms,
        "publishers": pubs,
        "subscribers": subscribers,
        "base": base,
        "publishers_sending": pub_phase,
        "all_joined": all_phase,
        "after_leave": after,
        "load": {
            "joined": report["bots"]["joined"],
            "errors": report["bots"]["errors"][:5],
            "forwarded_per_s": report["packets"]["forwarded_per_s"],
            "loss_pct": report["loss_pct"],
        },
    }
    if pub_phase:
        result["per_publisher_mb"] = round((pub_phase["VmRSS"] - base["VmRSS"]) / pubs, 3)
    if pub_phase and all_phase and subscribers:
        result["per_subscriber_mb"] = round(
            (all_phase["VmRSS"] - pub_phase["VmRSS"]) / subscribers, 3
        )
    if trace_dir is not None:
        result["trace"] = trace_summary(tracer.taken, pubs, subscribers)
    return result


def trace_summary(taken: dict[str, Path], pubs: int, subs: int) -> dict[str, Any]:
    snaps = {phase: load_snapshot(path) for phase, path in taken.items()}
    out: dict[str, Any] = {}
    if "base" in snaps:
        out["base"] = summarize(snaps["base"])
    if "base" in snaps and "publishers" in snaps:
        out["per_publisher"] = difference(snaps["publishers"], snaps["base"], pubs)
    if "publishers" in snaps and "all" in snaps and subs:
        out["per_subscriber"] = difference(snaps["all"], snaps["publishers"], subs)
    if "base" in snaps and "after_leave" in snaps:
        out["left_after_leave"] = difference(snaps["after_leave"], snaps["base"], pubs + subs)
    return out


def table(levels: list[dict[str, Any]]) -> str:
    head = f"{'server':>6} {'participants':>12} {'pubs':>5} {'subs':>5} {'base MB':>8} {'pubs MB':>8} {'all MB':>8} {'left MB':>8} {'MB/pub':>7} {'MB/sub':>7} {'anon all':>8} {'file all':>8}"
    rows = [head]
    for r in levels:
        a = r.get("all_joined") or r.get("publishers_sending") or {}
        rows.append(
            f"{r.get('target', 'parley'):>6} {r['level']:>12} {r['publishers']:>5} {r['subscribers']:>5} {r['base']['VmRSS']:>8.1f} "
            f"{r.get('publishers_sending', {}).get('VmRSS', float('nan')):>8.1f} "
            f"{r.get('all_joined', {}).get('VmRSS', float('nan')):>8.1f} {r['after_leave']['VmRSS']:>8.1f} "
            f"{r.get('per_publisher_mb', float('nan')):>7.2f} {r.get('per_subscriber_mb', float('nan')):>7.3f} "
            f"{a.get('RssAnon', float('nan')):>8.1f} {a.get('RssFile', float('nan')):>8.1f}"
        )
    return "\n".join(rows)


def trace_text(level: dict[str, Any]) -> str:
    trace = level.get("trace", {})
    out = [f"-- tracemalloc, {level['level']} participants"]
    if "base" in trace:
        out.append(f"base: {trace['base']['traced_mb']} MB traced; by package:")
        out += [f"   {mb:8.2f} MB  {name}" for name, mb in trace["base"]["by_package_mb"][:10]]
    for key in ("per_publisher", "per_subscriber", "left_after_leave"):
        if key in trace:
            d = trace[key]
            out.append(f"{key}: {d['per_participant_kb']} KB each (traced); top lines, KB each:")
            out += [f"   {kb:8.1f}  {where}" for where, kb, _ in d["by_line_kb_each"][:10]]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,50,200", help="participants in all, comma-separated")
    parser.add_argument("--room-size", type=int, default=50, help="participants per room at most")
    parser.add_argument("--ramp", type=float, default=20.0, help="bots started per second")
    parser.add_argument("--processes", type=int, default=2, help="load worker processes")
    parser.add_argument("--idle", type=float, default=3.0, help="s idle before the base reading")
    parser.add_argument(
        "--settle", type=float, default=6.0, help="s after joining before a reading"
    )
    parser.add_argument("--trace", action="store_true", help="also run with tracemalloc")
    parser.add_argument("--trace-levels", default="", help="levels traced (default: --levels)")
    parser.add_argument("--imports", action="store_true", help="RSS added by each import step")
    parser.add_argument(
        "--targets", default="parley", help="parley,janus: Janus too, same bots, same run"
    )
    parser.add_argument("--json", dest="json_path", default="bench/results/memory.json")
    args = parser.parse_args()
    ensure_loopback_namespace(who="bench/memory.py")
    result: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k != "json_path"},
        "machine": {"cores": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "levels": [],
    }
    if args.imports:
        result["imports"] = import_costs()
        for step in result["imports"]["steps"]:
            print(f"{step['rss_mb']:7.1f} MB  (+{step['added_mb'] or 0:5.1f})  {step['step']}")
        print("heavy modules loaded:", result["imports"]["heavy_loaded_by_serve_imports"])
    for level in (int(x) for x in args.levels.split(",")):
        for target in args.targets.split(","):
            print(f"--- {target}, {level} participants", flush=True)
            result["levels"].append(run_level(level, args, None, target))
            print(table(result["levels"][-1:]), flush=True)
    if args.trace:
        result["traced"] = []
        for level in (int(x) for x in (args.trace_levels or args.levels).split(",")):
            directory = Path(tempfile.mkdtemp(prefix="parley-memtrace-"))
            try:
                traced = run_level(level, args, directory)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            result["traced"].append(traced)
            print(trace_text(traced), flush=True)
    result["machine"]["loadavg_end"] = os.getloadavg()
    print(table(result["levels"]))
    print(
        "load average at start / end:",
        result["machine"]["loadavg_start"],
        result["machine"]["loadavg_end"],
    )
    path = Path(args.json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
