"""The orchestrator's side of the processes: :class:`Worker` (a child speaking JSON
lines), the server started as a worker or in a namespace of its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.common import BENCH_SCRIPT, REPO, SERVER_CPU, SERVER_ENV
from loadgen import server_process


class BenchError(RuntimeError):
    pass


class Worker:
    """A child process; JSON lines on stdin (commands) and stdout (replies and events)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def spawn(cls, name: str, argv: list[str], env: dict[str, str] | None = None) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_SCRIPT),
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(REPO),
            env=env,
        )
        return cls(name, proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            rid = message.get("id")
            if rid is not None and rid in self._replies:
                future = self._replies.pop(rid)
                if not future.done():
                    future.set_result(message)
            else:
                await self.events.put(message)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(BenchError(f"{self.name} exited"))
        await self.events.put({"event": "exited", "who": self.name})

    async def request(self, command: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        self.proc.stdin.write((json.dumps({**command, "id": rid}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.request({"cmd": "quit"}, timeout=3)
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.terminate()
                try:
                    await asyncio.wait_for(self.proc.wait(), 3)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


async def start_server(args: argparse.Namespace, port: int, target: str = "parley") -> Worker:

    argv = ["--worker", "server", "--port", str(port)]
    if args.gc_log:
        argv.append("--gc-log")
    if args.pin:
        argv += ["--cpu", str(SERVER_CPU)]
    # parley-py: the same server forwarding in Python (as bench/janus_server.py does it)
    # and the other variants (SERVER_ENV)
    env = dict(os.environ, **SERVER_ENV[target]) if target in SERVER_ENV else None
    server = await Worker.spawn("server", argv, env)
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(
            server_process.wait_for_healthz, url, lambda: server.proc.returncode is None, 30
        )
    except server_process.ServerStartError as exc:
        await server.stop()
        raise BenchError(str(exc)) from None
    return server


class IsolatedHandle:
    """A server in a network namespace of its own (``bench/janus_server.IsolatedServer``)."""

    name = "server"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.pid: int = server.pid
        self.url: str = server.url

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.close)


def janus_server_module() -> Any:
    bench_dir = str(REPO / "bench")
    if bench_dir not in sys.path:
        sys.path.insert(0, bench_dir)
    import janus_server

    return janus_server


def isolated(args: argparse.Namespace, target: str) -> bool:
    """Whether ``target`` runs in a namespace of its own (Janus always; Parley with --isolated)."""
    return target == "janus" or bool(args.isolated)


async def start_isolated_server(args: argparse.Namespace, target: str) -> IsolatedHandle:
    js = janus_server_module()
    log = Path(args.json).resolve().with_suffix(f".{target}.log")
    try:
        server = await asyncio.to_thread(
            js.IsolatedServer,
            target,
            event_loops=args.janus_event_loops,
            log=log,
            cpu=SERVER_CPU if args.pin else None,
        )
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        raise BenchError(
            f"could not start {target} in its own namespace: {exc} (log: {log})"
        ) from exc
    if target == "janus":
        args.janus_config_files = server.config_files
    return IsolatedHandle(server)
