"""``parley serve`` in a real subprocess, for tests that signal it or watch its memory.

The server listens on an ephemeral port (``--port 0``) inside the test's loopback-only
network namespace and prints the URL it got. Its stdout and stderr are collected as they
come (so a chatty server never blocks on a full pipe); :meth:`ServerProcess.problems`
lists the log lines that show an unexpected exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

_URL = re.compile(r"Parley serving on (http://127\.0\.0\.1:(\d+))")

#: Log lines that mean the server hit something it did not expect.
PROBLEM_MARKERS = (
    "Traceback",
    "exception was never retrieved",
    "Unhandled exception",
    " ERROR ",
    " CRITICAL ",
)


def parley_command() -> list[str]:
    """The installed ``parley`` script of this interpreter's environment."""
    script = Path(sys.executable).with_name("parley")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "parley"]


@dataclass
class ServerProcess:
    proc: asyncio.subprocess.Process
    url: str = ""
    port: int = 0
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        """Resident set size now, from /proc/PID/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def problems(self) -> list[str]:
        return [line for line in self.stderr if any(m in line for m in PROBLEM_MARKERS)]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def drained(self) -> None:
        """Wait until both output pipes reached EOF (after the process exited)."""
        await asyncio.gather(*self._readers, return_exceptions=True)


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode(errors="replace").rstrip("\n"))


@contextlib.asynccontextmanager
async def parley_serve(*args: str, start_timeout: float = 30.0) -> AsyncIterator[ServerProcess]:
    """Run ``parley serve --port 0 ARGS...``; killed afterwards if it is still running."""
    proc = await asyncio.create_subprocess_exec(
        *parley_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    server = ServerProcess(proc)
    server._readers = [
        asyncio.ensure_future(_collect(proc.stdout, server.stdout)),
        asyncio.ensure_future(_collect(proc.stderr, server.stderr)),
    ]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + start_timeout
        while not server.url:
            for line in server.stdout:
                if match := _URL.search(line):
                    server.url, server.port = match.group(1), int(match.group(2))
            if proc.returncode is not None or loop.time() > deadline:
                raise AssertionError(
                    "parley serve did not start:\n" + "\n".join(server.stdout + server.stderr)
                )
            await asyncio.sleep(0.05)
        yield server
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        for reader in server._readers:
            reader.cancel()
        await asyncio.gather(*server._readers, return_exceptions=True)
