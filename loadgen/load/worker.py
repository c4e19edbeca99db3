"""One worker process of ``parley load``: runs the bots it is given, reports every second.

The parent talks to a worker through two ``multiprocessing`` queues. Commands in:
``("bots", [BotSpec fields...])`` adds bots (each starts at its ``start_at``, a
``time.monotonic()`` value: every process on the machine shares that clock) and
``("stop", at)`` ends the run at ``at``. Reports out, each ``(kind, worker, data)``:
``"progress"`` once a second (that second's latencies and counters, bot counts, the
worker's own CPU and event-loop lag) and ``"result"`` once at the end.

A worker for a participant behind an impaired link runs inside the link's network
namespace (``nsenter``), so it is not a ``multiprocessing`` child: the parent starts
``python -m loadgen.load.worker --fd N`` with one end of a socket pair, sends the
:func:`worker_main` arguments first and then the same commands; reports come back the
same way (:class:`ConnectionQueue`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import queue
import sys
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loadgen.load.bots import BotSpec, SessionFactory, WorkerMetrics
from loadgen.load.metrics import FreezeStats, LatencyHistogram
from loadgen.load.publisher import LoadPublisher
from loadgen.load.session import ParleySession
from loadgen.load.subscriber import LoadSubscriber
from loadgen.media.prepared import prepare_media

logger = logging.getLogger(__name__)

#: Period of the event-loop lag probe (s).
LAG_PROBE = 0.05


def worker_main(
    worker: int,
    url: str,
    commands: Any,
    reports: Any,
    cache_dir: str,
    fps: float,
    clip_seconds: float,
    ice_address: str,
    target: str = "parley",
) -> None:
    """Process entry point (``multiprocessing`` target)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(
            Worker(
                worker,
                url,
                commands,
                reports,
                Path(cache_dir),
                fps,
                clip_seconds,
                ice_address,
                target,
            ).run()
        )
    except KeyboardInterrupt:
        pass


class Worker:
    def __init__(
        self,
        worker: int,
        url: str,
        commands: Any,
        reports: Any,
        cache_dir: Path,
        fps: float,
        clip_seconds: float,
        ice_address: str,
        target: str = "parley",
    ) -> None:
        self.worker = worker
        self.session_factory: SessionFactory = ParleySession
        if target == "janus":
            from loadgen.load.janus import JanusSession

            self.session_factory = JanusSession
        self.url = url
        self.commands = commands
        self.reports = reports
        self.media = prepare_media(cache_dir, fps=fps, seconds=clip_seconds)
        self.ice_address = ice_address
        self.metrics = WorkerMetrics()
        self.publishers: list[LoadPublisher] = []
        self.subscribers: list[LoadSubscriber] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.lag = LatencyHistogram()
        self._lag_second = 0.0
        self.cpu_samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop_reading = threading.Event()

        def read_commands() -> None:
            while not stop_reading.is_set():
                try:
                    command = self.commands.get(timeout=0.2)
                except queue.Empty:
                    continue
                loop.call_soon_threadsafe(inbox.put_nowait, command)
                if command[0] == "stop":
                    return

        reader = threading.Thread(target=read_commands, name="load-commands", daemon=True)
        reader.start()
        probes = [
            asyncio.ensure_future(self._lag_probe()),
            asyncio.ensure_future(self._progress()),
        ]
        stop_at: float | None = None
        try:
            while stop_at is None:
                kind, data = await inbox.get()
                if kind == "bots":
                    for fields in data:
                        self._add(BotSpec(**fields))
                elif kind == "stop":
                    stop_at = float(data)
            delay = stop_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            end = time.monotonic()
            for sub in self.subscribers:
                sub.finish(end)
            for bot in [*self.subscribers, *self.publishers]:
                bot.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 15)
            self.metrics.finish_counters()
            self.reports.put(("result", self.worker, self._result(end)))
        finally:
            stop_reading.set()
            for task in [*probes, *self.tasks]:
                task.cancel()
            await asyncio.gather(*probes, *self.tasks, return_exceptions=True)

    def _add(self, spec: BotSpec) -> None:
        if spec.role == "publisher":
            pub = LoadPublisher(
                spec, self.url, self.metrics, self.media, self.ice_address, self.session_factory
            )
            self.publishers.append(pub)
            self.tasks.append(asyncio.ensure_future(pub.run()))
        else:
            sub = LoadSubscriber(
                spec, self.url, self.metrics, self.ice_address, self.session_factory
            )
            self.subscribers.append(sub)
            self.tasks.append(asyncio.ensure_future(sub.run()))

    async def _lag_probe(self) -> None:
        """How late the event loop wakes up: a loop that is always late is saturated."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE)
            late_ms = (time.monotonic() - before - LAG_PROBE) * 1000.0
            self.lag.record(max(late_ms, 0.0))
            self._lag_second = max(self._lag_second, late_ms)

    async def _progress(self) -> None:
        last_wall = time.monotonic()
        last_cpu = time.process_time()
        while True:
            now = time.monotonic()
            await asyncio.sleep(1.0 - (now % 1.0) + 0.001)  # on whole seconds, like the others
            wall = time.monotonic()
            cpu = time.process_time()
            cpu_pct = 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-6)
            last_wall, last_cpu = wall, cpu
            self.cpu_samples.append((wall, cpu_pct))
            interval = self.metrics.take_interval()
            lag = self._lag_second
            self._lag_second = 0.0
            self.reports.put(
                (
                    "progress",
                    self.worker,
                    {
                        "t": wall,
                        "interval": interval.to_json(),
                        "cpu_pct": cpu_pct,
                        "lag_ms": lag,
                        "publishers": len(self.publishers),
                        "publishing": sum(p.media_started_at is not None for p in self.publishers),
                        "subscribers": len(self.subscribers),
                        "joined": sum(b.joined for b in [*self.publishers, *self.subscribers]),
                        "receiving": sum(s.first_frame_at is not None for s in self.subscribers),
                        "errors": sum(len(b.errors) for b in [*self.publishers, *self.subscribers]),
                        "nodes": sorted(
                            {
                                b.session.node_url
                                for b in [*self.publishers, *self.subscribers]
                                if b.session.node_url is not None
                            }
                        ),
                    },
                )
            )

    def _result(self, end: float) -> dict[str, Any]:
        freezes = FreezeStats()
        for sub in self.subscribers:
            freezes.merge(sub.freezes())
        return {
            "end": end,
            "total": self.metrics.total.to_json(),
            "join_ms": [s.join_ms for s in self.subscribers],
            "join_phases_ms": [s.join_phases for s in self.subscribers],
            "freezes": asdict(freezes),
            "layer_switches": sum(s.layer_switches() for s in self.subscribers),
            "e2e": self.metrics.e2e.to_json(),
            "e2e_decoded": sum(s.decoder.decoded for s in self.subscribers if s.decoder),
            "e2e_unreadable": sum(s.decoder.unreadable for s in self.subscribers if s.decoder),
            "cpu_samples": self.cpu_samples,
            "lag": self.lag.to_json(),
            "bots": [
                {**b.summary(), **b.cluster_summary()}
                for b in [*self.publishers, *self.subscribers]
            ],
        }


class ConnectionQueue:
    """A ``multiprocessing`` connection with the two queue methods workers use: ``get``
    (raises ``queue.Empty`` after ``timeout``, ``EOFError`` once the other end closed) and
    ``put``. One thread may get while another puts."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def get(self, timeout: float | None = None) -> Any:
        if not self.conn.poll(timeout):
            raise queue.Empty
        return self.conn.recv()

    def put(self, item: Any) -> None:
        with self._lock:
            self.conn.send(item)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m loadgen.load.worker --fd N``: a worker talking over an inherited socket."""
    parser = argparse.ArgumentParser(prog="python -m loadgen.load.worker")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket (from the parent)")
    args = parser.parse_args(argv)
    channel = ConnectionQueue(Connection(args.fd))
    try:
        kwargs = channel.get(None)
        worker_main(commands=channel, reports=channel, **kwargs)
    except EOFError:
        return 1
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
