"""A real ``redis-server`` (Debian's) for the cluster tests: no persistence, on a free
port, killed at the end. A test that cannot start one fails: it never skips."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from collections.abc import AsyncIterator

from redis.asyncio import Redis


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server --port PORT --bind BIND --save '' --appendonly no``: ``start()``,
    ``kill()`` (SIGKILL: everything it held is gone), ``start()`` again on the same port."""

    def __init__(self, bind: str = "127.0.0.1", port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed (apt-get install redis-server)"
        self.binary = binary
        self.bind = bind
        self.port = port or free_port()
        self.proc: asyncio.subprocess.Process | None = None

    def url(self, host: str = "127.0.0.1") -> str:
        return f"redis://{host}:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.returncode is not None, "already running"
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "--port", str(self.port), "--bind", self.bind,
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = Redis.from_url(self.url(), socket_connect_timeout=0.5)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                assert self.proc.returncode is None, "redis-server exited at start"
                with contextlib.suppress(Exception):
                    if await client.ping():
                        return
                assert loop.time() < deadline, f"redis-server did not answer within {timeout} s"
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()


@contextlib.asynccontextmanager
async def redis_server(bind: str = "127.0.0.1") -> AsyncIterator[RedisServer]:
    server = RedisServer(bind)
    try:
        await server.start()
        yield server
    finally:
        await server.kill()
