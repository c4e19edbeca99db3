"""``parley load``: spawn synthetic participants against a server and measure what users feel.

The parent process plans the bots, encodes the media once (cached on disk), starts the
server when no ``--url`` is given, samples the server's CPU and RSS from ``/proc``,
spreads the bots over ``--processes`` worker processes (:mod:`loadgen.load.worker`),
shows live progress and writes the report (:mod:`loadgen.report.build`). See
``docs/loadgen.md``.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loadgen.impair.schedule import LinkState, parse_schedule
from loadgen.load.bots import BotSpec
from loadgen.load.capacity import CapacitySearch, ServiceLevel, measure_step
from loadgen.load.config import LoadConfig
from loadgen.load.links import LinkWorker, RunLink
from loadgen.load.metrics import KINDS, Interval
from loadgen.load.nodes import NodeSampler, nodes_section, reconnects_section
from loadgen.load.plan import plan_bots, subscriber_specs
from loadgen.load.verdict import verdict_section
from loadgen.media.prepared import default_cache_dir, prepare_media
from loadgen.procfs import machine_cpu, process_cpu_seconds, process_rss_mb
from loadgen.report.build import RunData, ServerSample, build_report
from loadgen.server_process import start_server, stop_server

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
        #: every node's /healthz, sampled once a second (a cluster: ``loadgen/load/nodes.py``)
        secret = config.api_secret
        self.nodes = NodeSampler(f"Bearer {secret}" if secret else None)

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
        self.nodes.close()
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

    def _token(self, spec: BotSpec) -> str | None:
        """The bot's join token: ``--token``, or one minted with the API secret."""
        cfg = self.config
        if cfg.api_secret is None:
            return cfg.token
        from signaling.auth import mint_token

        ttl = cfg.duration + cfg.ramp + cfg.publish_timeout + 3600
        return mint_token(
            cfg.api_key or "", cfg.api_secret, room=spec.room, identity=spec.name,
            ttl=ttl, now=time.time(),
        )  # fmt: skip

    def _send_bots(self, specs: list[BotSpec]) -> None:
        per_worker: list[list[dict[str, Any]]] = [[] for _ in self.commands]
        by_name = {link.bot: link for link in self.links}
        for spec in specs:
            spec.token = self._token(spec)
            spec.reconnect = self.config.reconnect
            spec.fallback_urls = tuple(self.config.fallback_urls)
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
        if cfg.target == "parley":
            self.nodes.see([self.url])
            self.nodes.start()
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
        if cfg.target == "parley":
            bots = report["bots"]["list"]
            report["nodes"] = nodes_section(bots, self.nodes.samples, data.steady_from, end)
            report["reconnects"] = reconnects_section(bots)
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
                f"{result.received_pps:.0f} pkt/s, CPU server {_ms(result.server_cpu_pct)}% "
                f"load generator {_ms(result.loadgen_cpu_pct)}%, {verdict}"
                + (f" ({result.saturated} saturated)" if result.saturated else "")
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
        for secret in ("token", "api_secret"):  # reports are shared: no credentials in them
            cfg[secret] = None if cfg[secret] is None else "(set)"
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
                self.nodes.see(data.get("nodes", ()))
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
