"""Shared fixtures for tests that run the real server: integration and browser tests.

A real Parley server on an ephemeral port, real UDP on loopback. These tests open real
peer connections, so they must run inside a network namespace that has only ``lo``
(``make test`` does this with ``scripts/in_netns.py``): no packet can leave the machine
even by mistake, and they refuse to run anywhere else. A ``conftest.py`` imports the
fixtures it wants from here (pytest registers fixtures found in a conftest's namespace).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web

from sfu.room import Sfu
from signaling.server import SESSIONS_KEY, SFU_KEY, ServerConfig, create_app


def _only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.fixture(autouse=True)
def _require_loopback_namespace() -> None:
    if not _only_loopback():
        pytest.fail(
            "integration tests open real peer connections and must run in a network namespace "
            "with only 'lo': run them with `make test` (scripts/in_netns.py)"
        )


@dataclass
class RunningServer:
    url: str
    port: int
    app: web.Application

    @property
    def sfu(self) -> Sfu:
        return self.app[SFU_KEY]


ServerFactory = Callable[[ServerConfig], Awaitable[RunningServer]]


@pytest.fixture
async def server_factory() -> AsyncIterator[ServerFactory]:
    """Start real servers (aiohttp on an ephemeral port); all are stopped afterwards."""
    runners: list[web.AppRunner] = []

    async def start(config: ServerConfig) -> RunningServer:
        app = create_app(config)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return RunningServer(url=f"http://127.0.0.1:{port}", port=port, app=app)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    return await server_factory(ServerConfig())


class RestartableServer:
    """A real server that can be stopped and started again on the same port.

    ``stop()`` is what a server restart looks like to its clients: every websocket is
    closed (code 1012, "service restart"), then the listening socket, the peer
    connections and the SFU go away. ``start()`` serves a fresh application (a new SFU,
    no rooms) on the port of the first start.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self.current: RunningServer | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RunningServer:
        assert self._runner is None, "already running"
        app = create_app(self.config)
        runner = web.AppRunner(app, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner
        self.current = RunningServer(url=self.url, port=self.port, app=app)
        return self.current

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self.current = None
        if runner is None:
            return
        for session in list(runner.app[SESSIONS_KEY]):
            await session.ws.close(code=1012, message=b"service restart")
        await runner.cleanup()


@pytest.fixture
async def restartable_server() -> AsyncIterator[RestartableServer]:
    """A started :class:`RestartableServer` (default config); stopped afterwards."""
    server = RestartableServer(ServerConfig())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
