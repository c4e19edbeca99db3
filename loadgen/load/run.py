"""``parley load``: spawn synthetic participants against a server and measure what users feel.

The parent process plans the bots, encodes the media once (cached on disk), starts the
server when no ``--url`` is given, samples the server's CPU and RSS from ``/proc``,
spreads the bots over ``--processes`` worker processes (:mod:`loadgen.load.worker`),
shows live progress and writes the report (:mod:`loadgen.report.build`). See
``docs/loadgen.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loadgen.impair.schedule import LinkState, parse_schedule
from loadgen.load.bots import BotSpec
from loadgen.load.capacity import CapacitySearch, ServiceLevel, measure_step
from loadgen.load.metrics import KINDS, Interval
from loadgen.load.verdict import verdict_section
from loadgen.media.prepared import default_cache_dir, prepare_media
from loadgen.procfs import machine_cpu, process_cpu_seconds, process_rss_mb
from loadgen.report.build import RunData, ServerSample, build_report, summary_table
from loadgen.server_process import start_server, stop_server

logger = logging.getLogger(__name__)

#: Heights subscribers ask for in turn when publishers use simulcast.
LAYER_HEIGHTS = (180, 360, 720)


@dataclass(slots=True)
class LoadConfig:
    url: str | None
    rooms: int = 1
    publishers: int = 1
    subscribers: int = 2
    duration: float = 10.0
    simulcast: bool = False
    ramp: float = 10.0
    processes: int = 1
    server_pid: int | None = None
    json_path: str | None = None
    html_path: str | None = None
    fps: float = 15.0
    clip_seconds: float = 10.0
    ice_address: str = "127.0.0.1"
    cache_dir: str | None = None
    quiet: bool = False
    #: Glass to glass: publishers encode live, subscribers decode (loadgen/load/e2e.py).
    e2e: bool = False
    #: "parley" or "janus" (Janus's VideoRoom; ``url`` is then its websocket, ws://HOST:8188)
    target: str = "parley"
    #: How long to wait for every publisher's media before starting subscribers (s).
    publish_timeout: float = 20.0
    #: --find-capacity: add ``capacity_step`` subscribers per room every step.
    find_capacity: bool = False
    capacity_step: int = 2
    step_seconds: float = 10.0
    capacity_limit: int = 200
    slo_p99_ms: float = 50.0
    slo_loss_pct: float = 1.0
    #: service level: the longest video freeze (ms); with the two above, the exit code
    slo_freeze_ms: float = 1000.0
    #: Subscribers' receiver reports and NACKs (loadgen/load/rtcp.py).
    feedback: bool = True
    #: Per room: subscribers added behind an impaired link each (loadgen/impair/link.py).
    impaired_subscribers: int = 0
    #: Per room: the first publishers put behind an impaired link each.
    impaired_publishers: int = 0
    #: The impaired subscribers' downlink at the start: kbit/s (None: unlimited), loss %.
    link_rate: int | None = None
    link_loss: float = 0.0
    #: "SECONDS:STATE,..." changes of the subscribers' downlinks (loadgen/impair/schedule.py).
    link_schedule: str = ""
    #: The impaired publishers' uplink at the start, and its changes.
    uplink_rate: int | None = None
    uplink_loss: float = 0.0
    uplink_schedule: str = ""

    @property
    def impaired(self) -> bool:
        return self.impaired_subscribers > 0 or self.impaired_publishers > 0


# ----------------------------------------------------------------- /proc sampling


class ProcSampler:
    """CPU % (of one core) and RSS of one process, one sample per :meth:`sample` call."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[ServerSample] = []
        self._last: tuple[float, float] | None = None

    def sample(self, now: float) -> None:
        try:
            cpu = process_cpu_seconds(self.pid)
            rss = process_rss_mb(self.pid)
        except (OSError, ValueError, IndexError):
            return
        if self._last is not None:
            wall = now - self._last[0]
            if wall > 0:
                pct = 100.0 * (cpu - self._last[1]) / wall
                self.samples.append(ServerSample(now, pct, rss))
        self._last = (now, cpu)


# ----------------------------------------------------------------------- server


# ------------------------------------------------------------------------ plan


def plan_bots(config: LoadConfig, start: float) -> tuple[list[BotSpec], list[BotSpec]]:
    """Publishers and subscribers of every room, with ``start_at`` spaced by ``ramp``.

    Subscribers' ``start_at`` is relative (from 0): the run shifts them once every
    publisher's media flows. With simulcast, subscriber ``j`` asks for
    ``LAYER_HEIGHTS[j % 3]``.
    """
    step = 1.0 / config.ramp if config.ramp > 0 else 0.0
    publishers: list[BotSpec] = []
    for room in range(config.rooms):
        for p in range(config.publishers):
            index = len(publishers)
            publishers.append(
                BotSpec(
                    "publisher",
                    f"load-{room}",
                    f"pub-{room}-{p}",
                    index,
                    start + index * step,
                    simulcast=config.simulcast,
                    e2e=config.e2e,
                    watch=p < config.impaired_publishers,
                )
            )
    subscribers = subscriber_specs(config, 0, config.subscribers)
    step = 1.0 / config.ramp if config.ramp > 0 else 0.0
    for k in range(config.impaired_subscribers):
        for room in range(config.rooms):
            subscribers.append(
                BotSpec(
                    "subscriber",
                    f"load-{room}",
                    f"imp-{room}-{k}",
                    config.subscribers * config.rooms + k * config.rooms + room,
                    len(subscribers) * step,
                    max_height=LAYER_HEIGHTS[-1] if config.simulcast else None,
                    e2e=config.e2e,
                    watch=True,
                    feedback=config.feedback,
                )
            )
    return publishers, subscribers


def subscriber_specs(config: LoadConfig, first: int, count: int) -> list[BotSpec]:
    """Subscribers ``first`` .. ``first + count - 1`` of every room, interleaved by room,
    with relative ``start_at`` spaced by ``ramp``."""
    step = 1.0 / config.ramp if config.ramp > 0 else 0.0
    subscribers: list[BotSpec] = []
    for s in range(first, first + count):
        for room in range(config.rooms):
            index = s * config.rooms + room
            subscribers.append(
                BotSpec(
                    "subscriber",
                    f"load-{room}",
                    f"sub-{room}-{s}",
                    index,
                    len(subscribers) * step,
                    max_height=LAYER_HEIGHTS[index % len(LAYER_HEIGHTS)]
                    if config.simulcast
                    else None,
                    e2e=config.e2e,
                    # every subscriber of a room with an impaired participant is watched
                    watch=config.impaired,
                    feedback=config.feedback,
                )
            )
    return subscribers


# -------------------------------------------------------------- impaired links


@dataclass(slots=True)
class RunLink:
    """One bot behind an impaired link, its worker, and the link's changes."""

    bot: str
    room: str
    role: str  # "subscriber" (its downlink is shaped) or "publisher" (its uplink)
    link: Any  # loadgen.impair.link.ImpairedLink
    initial: LinkState
    #: relative to the schedule's zero until the run knows it, then time.monotonic()
    schedule: list[tuple[float, LinkState]]
    #: (time.monotonic(), state) of every state applied, the first at setup
    changes: list[tuple[float, LinkState]] = field(default_factory=list)
    worker: Any = None  # LinkWorker

    def apply(self, state: LinkState) -> None:
        from loadgen.impair.link import Shape

        shape = Shape(state.rate_kbit, state.loss_pct / 100.0)
        if self.role == "subscriber":
            self.link.shape(down=shape)
        else:
            self.link.shape(up=shape)
        self.changes.append((time.monotonic(), state))

    def to_json(self, t0: float) -> dict[str, Any]:
        return {
            "bot": self.bot,
            "room": self.room,
            "role": self.role,
            "index": self.link.index,
            "server_address": self.link.host_address,
            "bot_address": self.link.peer_address,
            "direction": "down" if self.role == "subscriber" else "up",
            "changes": [{"t_s": round(t - t0, 2), **s.to_json()} for t, s in self.changes],
        }


class LinkWorker:
    """A worker process inside a link's namespace (``nsenter``), talking over a socket
    pair: looks like a ``multiprocessing.Process`` to the run, its commands like a queue."""

    def __init__(self, link: Any, reports: Any, worker_args: dict[str, Any]) -> None:
        from loadgen.load.worker import ConnectionQueue

        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "loadgen.load.worker", "--fd", str(theirs.fileno())]
        self.proc = subprocess.Popen(link.command(command), pass_fds=(theirs.fileno(),))
        theirs.close()
        self.commands = ConnectionQueue(Connection(ours.detach()))
        self.commands.put(worker_args)
        self._reports = reports
        self._reader = threading.Thread(target=self._read, name="link-worker", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                item = self.commands.get(None)
            except (EOFError, OSError):
                return
            self._reports.put(item)

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()


# ------------------------------------------------------------------------- run


class LoadRun:
    """One run: workers, server sampling, progress; :meth:`run` returns the report."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.ctx = multiprocessing.get_context("spawn")
        self.reports: Any = self.ctx.Queue()
        self.commands: list[Any] = []
        self.workers: list[Any] = []
        self.server_proc: subprocess.Popen[bytes] | None = None
        self.url = config.url or ""
        self.sampler: ProcSampler | None = None
        self.progress: list[tuple[int, dict[str, Any]]] = []
        self.latest: dict[int, dict[str, Any]] = {}
        self.results: dict[int, dict[str, Any]] = {}
        self.started = 0.0
        self._tty = sys.stderr.isatty()
        self._last_line = 0.0
        self._machine: list[tuple[float, float, float]] = []
        self.search: CapacitySearch | None = None
        self._next_worker = 0
        #: bots behind impaired links (``--impaired-*``), and the schedule's zero
        self.links: list[RunLink] = []
        self.t0: float | None = None

    # ---- lifecycle

    def start(self) -> None:
        cfg = self.config
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        self._say(f"preparing media (encoded once, cached in {cache_dir})")
        prepare_media(cache_dir, fps=cfg.fps, seconds=cfg.clip_seconds)
        pid = cfg.server_pid
        if not cfg.url and cfg.target != "parley":
            raise SystemExit("--target janus needs --url (start Janus with bench/janus.py)")
        if cfg.impaired:
            self._start_links()
        if not cfg.url:
            hosts = tuple(link.link.host_address for link in self.links)
            self.server_proc, self.url = start_server(
                cfg.ice_address,
                extra_ice_addresses=hosts,
                # reachable over the links' host ends too (this namespace has only those
                # and lo under scripts/in_netns.py)
                host="0.0.0.0" if hosts else "127.0.0.1",
            )
            pid = self.server_proc.pid
            self._say(f"started parley serve (pid {pid}) at {self.url}")
        if pid is not None:
            self.sampler = ProcSampler(pid)
        from loadgen.load.worker import worker_main

        for w in range(cfg.processes):
            commands = self.ctx.Queue()
            proc = self.ctx.Process(
                target=worker_main,
                args=(
                    w,
                    self.url,
                    commands,
                    self.reports,
                    str(cache_dir),
                    cfg.fps,
                    cfg.clip_seconds,
                    cfg.ice_address,
                    cfg.target,
                ),
                name=f"parley-load-{w}",
                daemon=True,
            )
            proc.start()
            self.commands.append(commands)
            self.workers.append(proc)
        port = urllib.parse.urlsplit(self.url).port
        for k, link in enumerate(self.links):
            link.worker = LinkWorker(
                link.link,
                self.reports,
                {
                    "worker": cfg.processes + k,
                    "url": f"http://{link.link.host_address}:{port}",
                    "cache_dir": str(cache_dir),
                    "fps": cfg.fps,
                    "clip_seconds": cfg.clip_seconds,
                    "ice_address": link.link.peer_address,
                    "target": cfg.target,
                },
            )
            self.workers.append(link.worker)

    def _start_links(self) -> None:
        """One impaired link (namespace, veth, tc, iptables) per impaired bot."""
        from loadgen.impair.link import ImpairedLink, LinkError

        cfg = self.config
        down = LinkState(cfg.link_rate, cfg.link_loss)
        up = LinkState(cfg.uplink_rate, cfg.uplink_loss)
        pubs, subs = plan_bots(cfg, 0.0)
        impaired = [
            *(("publisher", p) for p in pubs if p.watch),
            *(("subscriber", s) for s in subs if s.name.startswith("imp-")),
        ]
        if len(impaired) > 256:
            raise SystemExit("at most 256 impaired links (10.99.0.0/16)")
        for index, (role, spec) in enumerate(impaired):
            link = ImpairedLink(index)
            try:
                link.start()
            except (LinkError, OSError) as exc:
                link.close()
                raise SystemExit(
                    "impaired links need CAP_NET_ADMIN (a network namespace, a veth pair, "
                    "tc and iptables): run parley load under scripts/in_netns.py, or as "
                    f"root. ({exc})"
                ) from exc
            sub = role == "subscriber"
            run_link = RunLink(
                spec.name,
                spec.room,
                role,
                link,
                down if sub else up,
                parse_schedule(cfg.link_schedule if sub else cfg.uplink_schedule),
            )
            self.links.append(run_link)
            try:
                run_link.apply(run_link.initial)
            except (LinkError, OSError) as exc:
                raise SystemExit(f"cannot shape impaired link {index}: {exc}") from exc
        self._say(
            f"{len(self.links)} impaired link(s): "
            + ", ".join(f"{x.bot} via {x.link.host_address}" for x in self.links)
        )

    def _apply_link_changes(self) -> None:
        if self.t0 is None:
            return
        now = time.monotonic()
        for link in self.links:
            while link.schedule and self.t0 + link.schedule[0][0] <= now:
                _, state = link.schedule.pop(0)
                link.apply(state)
                self._say(
                    f"[{now - self.t0:5.1f}s] {link.bot}'s "
                    f"{'downlink' if link.role == 'subscriber' else 'uplink'}: {state.describe()}"
                )

    def close(self) -> None:
        for proc in self.workers:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        self.workers.clear()
        for q in self.commands:
            q.close()
        self.commands.clear()
        for link in self.links:
            if link.worker is not None:
                link.worker.commands.close()
        if self.server_proc is not None:
            stop_server(self.server_proc)
            self.server_proc = None
        for link in self.links:
            link.link.close()

    def _send_bots(self, specs: list[BotSpec]) -> None:
        per_worker: list[list[dict[str, Any]]] = [[] for _ in self.commands]
        by_name = {link.bot: link for link in self.links}
        for spec in specs:
            link = by_name.get(spec.name)
            if link is not None:  # its own worker, inside the link's namespace
                link.worker.commands.put(("bots", [asdict(spec)]))
                continue
            # round robin, continued across calls (capacity steps)
            per_worker[self._next_worker % len(self.commands)].append(asdict(spec))
            self._next_worker += 1
        for q, chunk in zip(self.commands, per_worker, strict=True):
            if chunk:
                q.put(("bots", chunk))

    def _all_commands(self) -> list[Any]:
        return [*self.commands, *(link.worker.commands for link in self.links if link.worker)]

    def run(self) -> dict[str, Any]:
        cfg = self.config
        self.start()
        try:
            self.started = time.monotonic()
            self._machine.append((self.started, *machine_cpu()))
            pubs, subs = plan_bots(cfg, self.started + 0.5)
            self._send_bots(pubs)
            deadline = time.monotonic() + cfg.publish_timeout + len(pubs) / max(cfg.ramp, 1e-9)
            while self._count("publishing") < len(pubs) and time.monotonic() < deadline:
                self._pump(0.2)
            if self._count("publishing") < len(pubs):
                self._say(f"only {self._count('publishing')} of {len(pubs)} publishers send media")
            steady_from = self._start_subscribers(subs) + 1.0
            self.t0 = steady_from - 1.0
            if cfg.find_capacity:
                self.search = CapacitySearch(
                    cfg.subscribers,
                    cfg.capacity_step,
                    cfg.capacity_limit,
                    ServiceLevel(cfg.slo_p99_ms, cfg.slo_loss_pct),
                )
                steady_from = self._find_capacity(steady_from)
                end = time.monotonic()
            else:
                end = steady_from - 1.0 + cfg.duration
                self._wait_until(end)
            for q in self._all_commands():
                q.put(("stop", end))
            self._machine.append((time.monotonic(), *machine_cpu()))
            deadline = time.monotonic() + 30
            while len(self.results) < len(self.workers) and time.monotonic() < deadline:
                self._pump(0.2)
        finally:
            if self._tty and not cfg.quiet:
                sys.stderr.write("\n")
            self.close()
        errors = []
        expected_results = cfg.processes + len(self.links)
        if len(self.results) < expected_results:
            errors.append(f"{expected_results - len(self.results)} worker(s) sent no result")
        data = RunData(
            config=self._config_json(),
            started=self.started,
            steady_from=min(steady_from, end),
            end=end,
            progress=self.progress,
            results=[self.results[k] for k in sorted(self.results)],
            server=self.sampler.samples if self.sampler else [],
            server_pid=self.sampler.pid if self.sampler else None,
            cores=os.cpu_count() or 1,
            machine_cpu_pct=self._machine_pct(),
            errors=errors,
            t0=self.t0 if self.t0 is not None else self.started,
            links=[link.to_json(self.t0 or self.started) for link in self.links],
            link_changes={link.bot: [(t, st) for t, st in link.changes] for link in self.links},
        )
        report = build_report(data)
        if self.search is not None:
            report["capacity"] = self.search.to_json()
            report.update(verdict_section(report))
        return report

    def _wait_until(self, when: float) -> None:
        while time.monotonic() < when:
            self._pump(min(0.2, max(when - time.monotonic(), 0.0)))

    def _start_subscribers(self, subs: list[BotSpec]) -> float:
        """Send ``subs`` (relative ``start_at``) to start now; returns the last start time."""
        base = time.monotonic() + 0.2
        for spec in subs:
            spec.start_at += base
        self._send_bots(subs)
        return subs[-1].start_at if subs else base

    def _find_capacity(self, step_from: float) -> float:
        """Measure ``step_seconds`` at each level, then add subscribers, until the search
        stops. Returns when the last step's window began."""
        cfg = self.config
        search = self.search
        assert search is not None
        level = cfg.subscribers
        while True:
            self._wait_until(step_from + cfg.step_seconds)
            window_end = time.monotonic()
            samples = self.sampler.samples if self.sampler else []
            result = measure_step(
                [dict(data, worker=worker) for worker, data in self.progress],
                [x.cpu_pct for x in samples if step_from < x.t <= window_end],
                step_from,
                window_end,
                level,
                level * cfg.rooms,
            )
            following = search.record(result)
            verdict = "held" if result.passed else "broke: " + "; ".join(result.reasons)
            self._say(
                f"capacity step: {level} subscribers per room ({result.subscribers} in all): "
                f"p99 {_ms(result.p99_ms)} ms, loss {_ms(result.loss_pct)}%, "
                f"{result.received_pps:.0f} pkt/s, {verdict}"
                + (" (load generator saturated)" if result.loadgen_saturated else "")
            )
            if following is None:
                return step_from
            last = self._start_subscribers(subscriber_specs(cfg, level, following - level))
            level = following
            step_from = last + 2.0  # let the newcomers join before measuring

    def _machine_pct(self) -> float | None:
        if len(self._machine) < 2:
            return None
        (_, busy0, total0), (_, busy1, total1) = self._machine[0], self._machine[-1]
        return 100.0 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else None

    def _config_json(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["url"] = self.url
        return cfg

    # ---- reports from workers

    def _count(self, key: str) -> int:
        return sum(int(p.get(key, 0)) for p in self.latest.values())

    def _pump(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                kind, worker, data = self.reports.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                break
            if kind == "progress":
                self.progress.append((worker, data))
                self.latest[worker] = data
                self._on_second(data["t"])
            elif kind == "result":
                self.results[worker] = data
            self._apply_link_changes()
            if time.monotonic() >= deadline:
                break
        self._apply_link_changes()

    def _on_second(self, t: float) -> None:
        if self.sampler is not None and (
            not self.sampler.samples or t - self.sampler.samples[-1].t >= 0.9
        ):
            self.sampler.sample(time.monotonic())
        if self.config.quiet or t - self._last_line < (1.0 if self._tty else 5.0) - 0.05:
            return
        self._last_line = t
        self._say(self._status_line(t), live=True)

    def _status_line(self, t: float) -> str:
        second = [d for _, d in self.progress if abs(d["t"] - t) < 0.5]
        interval = Interval()
        for d in second:
            interval.merge(Interval.from_json(d["interval"]))
        lat = " ".join(
            f"{k} p50/p99 {_ms(interval.latency[k].percentile(50))}/{_ms(interval.latency[k].percentile(99))}"
            for k in KINDS
        )
        received = sum(interval.counters[k].received for k in KINDS)
        lost = sum(interval.counters[k].lost for k in KINDS)
        expected = sum(interval.counters[k].expected for k in KINDS)
        loss = f"{100.0 * lost / expected:.2f}%" if expected > 0 else "-"
        cpu = sum(d["cpu_pct"] for d in self.latest.values())
        server = ""
        if self.sampler is not None and self.sampler.samples:
            last = self.sampler.samples[-1]
            server = f" | server {last.cpu_pct:.0f}% {last.rss_mb:.0f} MB"
        return (
            f"[{t - self.started:5.0f}s] pubs {self._count('publishing')}/{self._count('publishers')}"
            f" subs {self._count('receiving')}/{self._count('subscribers')} errors {self._count('errors')}"
            f" | {received} pkt/s loss {loss} | {lat} ms | loadgen {cpu:.0f}%{server}"
        )

    def _say(self, text: str, live: bool = False) -> None:
        if self.config.quiet:
            return
        if live and self._tty:
            sys.stderr.write("\r\x1b[2K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def capacity_summary(capacity: dict[str, Any]) -> str:
    level = capacity["service_level"]
    best = capacity["max_subscribers_per_room"]
    head = (
        f"capacity (p99 <= {level['p99_ms']:g} ms, loss <= {level['loss_pct']:g}%): "
        + (
            f"{best} subscribers per room ({capacity['max_subscribers']} in all, "
            f"{capacity['max_forwarded_per_s']} forwarded pkt/s)"
            if best
            else "no level held"
        )
        + f"; stopped by {capacity['stopped_by']}"
        + (" (a lower bound)" if capacity["lower_bound"] else "")
    )
    return head


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# ------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley load",
        description="Synthetic participants against a server: latency, join time, loss, "
        "freezes, layer switches and server cost.",
    )
    parser.add_argument("--url", help="server base URL; without it a parley server is started")
    parser.add_argument(
        "--target",
        choices=("parley", "janus"),
        default="parley",
        help="the server's protocol: parley, or janus (VideoRoom over ws://HOST:PORT)",
    )
    parser.add_argument(
        "--rooms", type=int, default=1, help="rooms, each with its own bots (default 1)"
    )
    parser.add_argument("--publishers", type=int, default=1, help="per room (default 1)")
    parser.add_argument("--subscribers", type=int, default=2, help="per room (default 2)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds after the last bot started"
    )
    parser.add_argument("--simulcast", action="store_true", help="publish three VP8 layers")
    parser.add_argument(
        "--ramp",
        type=float,
        default=10.0,
        metavar="PER_SECOND",
        help="bots started per second (default 10)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, metavar="K", help="worker processes (default 1)"
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        metavar="PID",
        help="with --url: the server's process id, to report its CPU and memory "
        "(a server started by parley load is measured without it)",
    )
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the report here")
    parser.add_argument(
        "--html", dest="html_path", metavar="PATH", help="write an HTML report with plots"
    )
    parser.add_argument(
        "--e2e",
        action="store_true",
        help="glass to glass: publishers encode live frames stamped with their capture time, "
        "subscribers decode them and read it back",
    )
    parser.add_argument(
        "--fps", type=float, default=15.0, help="publishers' video frame rate (default 15)"
    )
    parser.add_argument(
        "--ice-address",
        default="127.0.0.1",
        help="local address the bots' ICE gathers candidates on (default 127.0.0.1)",
    )
    parser.add_argument("--cache-dir", default=None, help="where encoded clips are cached")
    parser.add_argument(
        "--find-capacity",
        action="store_true",
        help="add subscribers step by step until the service level breaks",
    )
    parser.add_argument("--step", type=int, default=2, help="subscribers per room added per step")
    parser.add_argument(
        "--step-seconds", type=float, default=10.0, help="measured seconds per step"
    )
    parser.add_argument(
        "--max-subscribers", type=int, default=200, help="per room; the search stops there"
    )
    parser.add_argument(
        "--slo-p99-ms",
        type=float,
        default=50.0,
        help="service level: p99 one-way latency of each kind, ms (default 50)",
    )
    parser.add_argument(
        "--slo-loss-pct",
        type=float,
        default=1.0,
        help="service level: loss of each kind, %% (default 1)",
    )
    parser.add_argument(
        "--slo-freeze-ms",
        type=float,
        default=1000.0,
        help="service level: the longest video freeze, ms (default 1000). The exit code is "
        "0 when the run met its service levels and every bot joined, 1 otherwise",
    )
    parser.add_argument(
        "--no-feedback",
        dest="feedback",
        action="store_false",
        help="subscribers send no receiver reports and no NACKs",
    )
    links = parser.add_argument_group(
        "impaired links",
        "participants in their own network namespace behind a veth pair with a tbf rate "
        "limit and iptables random loss (needs CAP_NET_ADMIN: run under "
        "scripts/in_netns.py); STATE is none, KBIT, P% or KBIT+P%",
    )
    links.add_argument(
        "--impaired-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="per room: N more subscribers, each behind its own link (asking for the top layer)",
    )
    links.add_argument(
        "--impaired-publishers",
        type=int,
        default=0,
        metavar="N",
        help="per room: the first N publishers are each behind their own link",
    )
    links.add_argument(
        "--link-rate", type=int, default=None, metavar="KBIT", help="subscribers' downlink rate"
    )
    links.add_argument(
        "--link-loss", type=float, default=0.0, metavar="PCT", help="subscribers' downlink loss %%"
    )
    links.add_argument(
        "--link-schedule",
        default="",
        metavar="T:STATE,...",
        help='downlink changes, seconds after the last subscriber started (e.g. "8:300,20:none")',
    )
    links.add_argument(
        "--uplink-rate", type=int, default=None, metavar="KBIT", help="publishers' uplink rate"
    )
    links.add_argument(
        "--uplink-loss", type=float, default=0.0, metavar="PCT", help="publishers' uplink loss %%"
    )
    links.add_argument(
        "--uplink-schedule", default="", metavar="T:STATE,...", help="uplink changes"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    return parser


def write_json(path: str, report: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(target)


def _check_links(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.impaired_subscribers < 0 or args.impaired_publishers < 0:
        parser.error("--impaired-subscribers and --impaired-publishers must be >= 0")
    if args.impaired_publishers > args.publishers:
        parser.error("--impaired-publishers must be at most --publishers")
    for name in ("link_schedule", "uplink_schedule"):
        try:
            parse_schedule(getattr(args, name))
        except ValueError as exc:
            parser.error(f"--{name.replace('_', '-')}: {exc}")
    for name in ("link_loss", "uplink_loss"):
        if not 0.0 <= getattr(args, name) < 100.0:
            parser.error(f"--{name.replace('_', '-')} is a percentage within [0, 100)")
    for name in ("link_rate", "uplink_rate"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.impaired_subscribers or args.impaired_publishers:
        if args.target != "parley":
            parser.error("impaired links work with --target parley only")
        if args.find_capacity:
            parser.error("impaired links and --find-capacity do not mix")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("rooms", "publishers", "processes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.subscribers < 0 or args.duration <= 0 or args.ramp <= 0 or args.fps <= 0:
        parser.error("--subscribers must be >= 0; --duration, --ramp and --fps positive")
    if args.slo_p99_ms <= 0 or args.slo_freeze_ms <= 0 or not 0 <= args.slo_loss_pct <= 100:
        parser.error(
            "--slo-p99-ms and --slo-freeze-ms must be positive, --slo-loss-pct in [0, 100]"
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = LoadConfig(
        url=args.url,
        rooms=args.rooms,
        publishers=args.publishers,
        subscribers=args.subscribers,
        duration=args.duration,
        simulcast=args.simulcast,
        ramp=args.ramp,
        processes=args.processes,
        server_pid=args.server_pid,
        json_path=args.json_path,
        html_path=args.html_path,
        fps=args.fps,
        ice_address=args.ice_address,
        cache_dir=args.cache_dir,
        quiet=args.quiet,
        target=args.target,
        e2e=args.e2e,
        find_capacity=args.find_capacity,
        capacity_step=args.step,
        step_seconds=args.step_seconds,
        capacity_limit=args.max_subscribers,
        slo_p99_ms=args.slo_p99_ms,
        slo_loss_pct=args.slo_loss_pct,
        slo_freeze_ms=args.slo_freeze_ms,
        feedback=args.feedback,
        impaired_subscribers=args.impaired_subscribers,
        impaired_publishers=args.impaired_publishers,
        link_rate=args.link_rate,
        link_loss=args.link_loss,
        link_schedule=args.link_schedule,
        uplink_rate=args.uplink_rate,
        uplink_loss=args.uplink_loss,
        uplink_schedule=args.uplink_schedule,
    )
    _check_links(parser, args)
    if args.find_capacity and (
        args.subscribers < 1 or args.step < 1 or args.max_subscribers < args.subscribers
    ):
        parser.error(
            "--find-capacity needs --subscribers >= 1, --step >= 1, --max-subscribers >= --subscribers"
        )
    report = LoadRun(config).run()
    if args.json_path:
        write_json(args.json_path, report)
    if args.html_path:
        from loadgen.report.html import write_html

        write_html(args.html_path, report)
    print(summary_table(report))
    if "capacity" in report:
        print(capacity_summary(report["capacity"]))
    print(f"parley load: {report['verdict']}", file=sys.stderr)
    return 0 if report["ok"] else 1
