"""The worker processes of ``parley serve --workers N``: start, watch, restart, stop.

Each worker is an ordinary ``parley serve`` on ``127.0.0.1`` and a free port, with the
front's own options (tokens, limits, ICE, data limits...) but not ``--workers``,
``--host`` or ``--port``. Once its ``/healthz`` answers the worker is up (``on_up``). When it exits for any reason other than the front stopping,
``on_down`` is called at once and it is started again after 0.2 s (doubling up to 5 s
while it dies before answering or within 3 s of answering: a crash loop). A worker also gets SIGTERM if the front
dies (``PR_SET_PDEATHSIG``), so none outlives it.

A worker that is alive but does not answer (stopped with SIGSTOP, deadlocked, its event
loop stuck) is found by a health watch: its ``/healthz`` is asked every
``HEALTH_INTERVAL`` seconds; when no answer has come for ``HANG_TIMEOUT`` seconds it is
killed (SIGKILL), which breaks its relayed websockets (the front tells those clients
``server_shutdown``, as for a crash) and goes down the crash path above: out of
placement at once, started again. A worker that never answers at start is killed after
``START_TIMEOUT`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from .placement import Target

logger = logging.getLogger(__name__)

#: Environment variable carrying the key the front sends with each relayed join, so a
#: worker honours the ``X-Forwarded-For`` it sends (signaling/server.py: client_address).
FRONT_KEY_ENV = "PARLEY_FRONT_KEY"

#: Options of the front that workers do not get (the front sets their own).
FRONT_ONLY = (
    "--workers", "--worker-hang-timeout", "--host", "--port",
    # the front is the node of a Redis cluster, not its workers (cluster/front_node.py)
    "--redis", "--node-url", "--node-id", "--capacity", "--redis-prefix", "--node-spread",
    "--node-spread-after",
)  # fmt: skip
#: ... of which these take no value
FRONT_ONLY_FLAGS = ("--node-spread",)

FIRST_RESTART_DELAY = 0.2
MAX_RESTART_DELAY = 5.0
#: A worker that dies within this many seconds of answering is in a crash loop.
CRASH_LOOP_S = 3.0
#: Seconds between two health pings of a running worker.
HEALTH_INTERVAL = 0.5
#: Seconds one health ping may take.
HEALTH_PING_TIMEOUT = 1.0
#: Seconds without an answer after which a running worker is hung: it is killed.
HANG_TIMEOUT = 2.5
#: Seconds a starting worker may take to answer its first /healthz.
START_TIMEOUT = 60.0


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        default=None,
        metavar="N",
        help="run N SFU worker processes behind this address ('auto': one per core); "
        "a room lives on one worker, a new room goes to the least-loaded one "
        "(default: one process, no workers)",
    )
    parser.add_argument(
        "--worker-hang-timeout",
        type=_hang_timeout,
        default=HANG_TIMEOUT,
        metavar="S",
        help="with --workers: a worker whose /healthz has not answered for S seconds is hung "
        f"(stopped, its event loop stuck): killed and restarted (default {HANG_TIMEOUT:g}; "
        "0: never)",
    )


def _hang_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def worker_count(value: str | None) -> int | None:
    """``--workers``: None (one process), a positive count, or ``auto`` (one per core)."""
    if value is None:
        return None
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        count = int(value)
    except ValueError:
        raise SystemExit(
            f"parley serve: --workers must be a number or 'auto', not {value!r}"
        ) from None
    if count <= 0:
        raise SystemExit(f"parley serve: --workers must be positive, not {count}")
    return count


def worker_argv(argv: list[str]) -> list[str]:
    """``argv`` (already accepted by the serve parser) without the front-only options,
    in either form (``--port 8080``, ``--port=8080``, or an abbreviation argparse took)."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = token.partition("=")
        if len(name) > 2 and any(o.startswith(name) for o in FRONT_ONLY) and name.startswith("--"):
            skip = not eq and not any(f.startswith(name) for f in FRONT_ONLY_FLAGS)
            continue
        out.append(token)
    return out


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system, s) a process has used, from /proc; None if it is gone."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def free_port() -> int:
    """A port free on 127.0.0.1 now (a worker that then fails to bind it is restarted)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _answers(http: aiohttp.ClientSession, url: str) -> bool:
    """Whether ``url`` answered 200 within the session's timeout."""
    try:
        async with http.get(url) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # SIGKILL ends a stopped process too


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Worker:
    node_id: str
    proc: asyncio.subprocess.Process | None = None
    target: Target | None = None
    restarts: int = 0
    #: times it was killed for not answering (a hang)
    hangs: int = 0
    started_at: float = 0.0
    up_at: float = 0.0
    up: asyncio.Event = field(default_factory=asyncio.Event)

    def info(self) -> dict[str, object]:
        pid = self.proc.pid if self.proc is not None else None
        return {
            "id": self.node_id,
            "pid": pid,
            "cpu_seconds": cpu_seconds(pid) if self.target is not None else None,
            "ws_url": self.target.ws_url if self.target is not None else None,
            "alive": self.target is not None,
            "restarts": self.restarts,
            "hangs": self.hangs,
        }


class Supervisor:
    """Runs ``count`` workers; ``on_up(target)`` / ``on_down(node_id)`` as they come and go."""

    def __init__(
        self,
        count: int,
        argv: list[str],
        front_key: str,
        on_up: Callable[[Target], None],
        on_down: Callable[[str], None],
        hang_timeout: float = HANG_TIMEOUT,
    ) -> None:
        self.workers = [Worker(f"w{i}") for i in range(count)]
        self.hang_timeout = hang_timeout
        self._argv = argv
        self._env = {**os.environ, FRONT_KEY_ENV: front_key, "PYTHONUNBUFFERED": "1"}
        self._on_up = on_up
        self._on_down = on_down
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self, timeout: float = 60.0) -> None:
        """Start every worker and wait until each answers."""
        self._tasks = [asyncio.ensure_future(self._run(w)) for w in self.workers]
        waits = [asyncio.ensure_future(w.up.wait()) for w in self.workers]
        done, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            raise RuntimeError(f"{len(pending)} worker(s) did not start within {timeout:g} s")

    async def _spawn(self, port: int) -> asyncio.subprocess.Process:
        command = [sys.executable, "-m", "parley", "serve", "--host", "127.0.0.1"]
        # stdout is not kept: a worker must not depend on a pipe to the front (after the
        # front died, its "shutting down" line would raise on a broken pipe)
        return await asyncio.create_subprocess_exec(
            *command, "--port", str(port), *self._argv,
            stdout=asyncio.subprocess.DEVNULL, env=self._env, preexec_fn=_die_with_parent,
        )  # fmt: skip

    async def _until_up(self, proc: asyncio.subprocess.Process, port: int) -> bool:
        """Poll the worker's /healthz until it answers (True), the process exits, or
        ``START_TIMEOUT`` passes (then it is killed)."""
        url = f"http://127.0.0.1:{port}/healthz"
        loop = asyncio.get_running_loop()
        give_up = loop.time() + START_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http:
            while proc.returncode is None:
                if await _answers(http, url):
                    return True
                if loop.time() > give_up:
                    logger.warning("worker (pid %d) did not answer within %g s: killing it",
                                   proc.pid, START_TIMEOUT)  # fmt: skip
                    _kill(proc)
                    break
                await asyncio.sleep(0.05)
        return False

    async def _watch_health(self, worker: Worker, proc: asyncio.subprocess.Process,
                            port: int) -> None:  # fmt: skip
        """Ping the running worker's /healthz; kill it when nothing answered for
        ``hang_timeout`` seconds (it is stopped or stuck: it would hold its clients in
        calls without media forever). Returns once it killed it."""
        if self.hang_timeout <= 0:  # --worker-hang-timeout 0: not watched
            return
        url = f"http://127.0.0.1:{port}/healthz"
        loop = asyncio.get_running_loop()
        answered = loop.time()
        timeout = aiohttp.ClientTimeout(total=min(HEALTH_PING_TIMEOUT, self.hang_timeout))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while proc.returncode is None and not self._stopping:
                started = loop.time()
                if await _answers(http, url):
                    answered = loop.time()
                elif loop.time() - answered >= self.hang_timeout and proc.returncode is None:
                    logger.warning("worker %s (pid %d) has not answered for %.1f s: killing it",
                                   worker.node_id, proc.pid, loop.time() - answered)  # fmt: skip
                    worker.hangs += 1
                    _kill(proc)
                    return
                await asyncio.sleep(max(0.0, HEALTH_INTERVAL - (loop.time() - started)))

    async def _run(self, worker: Worker) -> None:
        delay = FIRST_RESTART_DELAY
        while not self._stopping:
            worker.started_at = time.monotonic()
            port = free_port()
            proc = worker.proc = await self._spawn(port)
            if await self._until_up(proc, port) and not self._stopping:
                worker.up_at = time.monotonic()
                worker.target = Target(f"ws://127.0.0.1:{port}/ws", worker.node_id)
                worker.up.set()
                self._on_up(worker.target)
                watch = asyncio.ensure_future(self._watch_health(worker, proc, port))
                try:
                    code = await proc.wait()
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
            else:
                code = await proc.wait()
            was_up = worker.target is not None
            worker.target = None
            worker.up.clear()
            if self._stopping:
                return
            logger.warning("worker %s (pid %d) exited with %s: restarting", worker.node_id,
                           proc.pid, code)  # fmt: skip
            if was_up:
                self._on_down(worker.node_id)
            # a worker that dies before it answers, or within seconds of answering (a
            # crash loop), is restarted less and less often; one that ran is restarted
            # at once
            if was_up and time.monotonic() - worker.up_at > CRASH_LOOP_S:
                delay = FIRST_RESTART_DELAY
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)
            worker.restarts += 1

    async def stop(self, timeout: float = 0.6) -> None:
        """SIGTERM every worker (each tells its own clients ``server_shutdown``), SIGKILL
        those still running after ``timeout`` seconds."""
        self._stopping = True
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in procs]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def info(self) -> list[dict[str, object]]:
        return [w.info() for w in self.workers]
