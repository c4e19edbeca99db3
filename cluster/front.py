"""The front of ``parley serve --workers N``: one public address, N SFU worker processes.

The front serves the page and its files, ``/ws`` (relayed to the room's worker:
``cluster/relay.py``), ``/healthz`` (the workers' counts, summed and per worker) and
``/metrics`` (every worker's metrics, each sample labelled ``worker="wN"``). Placement
is :class:`cluster.local_placement.LocalPlacement`, fed with the number of sessions the
front relays to each worker. See docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from signaling.auth import may_see_load
from signaling.drain import DRAINING_KEY, is_draining
from signaling.origins import origin_refusal
from signaling.server import CONFIG_KEY, ParleyWebSocket, ServerConfig, index, page_files

from .admin_proxy import add_admin_proxy_routes
from .local_placement import LocalPlacement
from .metrics_merge import merge_metrics
from .placement import http_base
from .relay import Relay
from .spread import PipeLinker, SpreadPlacement
from .workers import HANG_TIMEOUT, Supervisor, cpu_seconds

logger = logging.getLogger(__name__)


class Front:
    """The state of the front: workers, placement, the relays it runs."""

    def __init__(
        self,
        config: ServerConfig,
        workers: int,
        worker_argv: list[str],
        spread_after: int | None = None,
        hang_timeout: float = HANG_TIMEOUT,
    ) -> None:
        self.config = config
        self.key = secrets.token_urlsafe(24)
        self.relays: set[Relay] = set()
        #: sessions relayed now, by worker and by (room, worker)
        self.sessions: dict[str, int] = {}
        self.room_sessions: dict[tuple[str, str], int] = {}
        self.http: aiohttp.ClientSession | None = None
        self.placement: LocalPlacement | SpreadPlacement
        if spread_after is None:  # a room lives on one worker
            self.placement = LocalPlacement(load=lambda node_id: self.sessions.get(node_id, 0))
        else:  # a join goes where there is room: one room over several workers, piped
            self.placement = SpreadPlacement(
                PipeLinker(self._http, self.key),
                spread_after,
                load=lambda node_id: self.sessions.get(node_id, 0),
                room_load=lambda room, node_id: self.room_sessions.get((room, node_id), 0),
            )
        self.supervisor = Supervisor(
            workers,
            worker_argv,
            self.key,
            self.placement.worker_up,
            self._worker_down,
            hang_timeout=hang_timeout,
        )
        self.stopping = asyncio.Event()
        #: with ``--redis`` (``cluster/front_node.py``): the URL of the node serving a
        #: room, None to serve it here; and the node's load for ``/healthz``
        self.route: Callable[[str], Awaitable[str | None]] | None = None
        self.health: Callable[[], Mapping[str, object]] | None = None

    def _http(self) -> aiohttp.ClientSession:
        assert self.http is not None, "the front has not started"
        return self.http

    def _worker_down(self, node_id: str) -> None:
        rooms = self.placement.worker_down(node_id)
        logger.warning("worker %s is down; its rooms %s move on their next join", node_id, rooms)

    def attach(self, relay: Relay) -> None:
        assert relay.target is not None and relay.room is not None
        node = relay.target.node_id
        self.sessions[node] = self.sessions.get(node, 0) + 1
        key = (relay.room, node)
        self.room_sessions[key] = self.room_sessions.get(key, 0) + 1

    async def detach(self, relay: Relay) -> None:
        """A relayed session ended; the room is forgotten with its last session here."""
        if relay.target is None or relay.room is None:
            return
        node = relay.target.node_id
        self.sessions[node] -= 1
        key = (relay.room, node)
        self.room_sessions[key] -= 1
        if self.room_sessions[key] == 0:
            del self.room_sessions[key]
            await self.placement.forget(relay.room, relay.target)

    async def worker_json(self, path: str, auth: str | None) -> list[Any]:
        """GET ``path`` of every live worker (None for one that does not answer)."""
        assert self.http is not None
        headers = {"Authorization": auth} if auth else {}

        async def one(worker: dict[str, Any]) -> Any:
            if not worker["alive"]:
                return None
            url = http_base(str(worker["ws_url"])) + path
            assert self.http is not None
            try:
                async with self.http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(
                    total=2.0)) as response:  # fmt: skip
                    if path.startswith("/metrics"):
                        return await response.text() if response.status == 200 else None
                    return await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return None

        return list(await asyncio.gather(*(one(w) for w in self.supervisor.info())))


FRONT_KEY = web.AppKey("parley_front", Front)


def _front(request: web.Request) -> Front:
    return request.app[FRONT_KEY]


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    front = _front(request)
    config = front.config
    if front.stopping.is_set():
        raise web.HTTPServiceUnavailable(text=config.shutdown_reason)
    origin = request.headers.get("Origin")
    if (refused := origin_refusal(origin, request.host, config.origins)) is not None:
        raise web.HTTPForbidden(text=refused)
    ws = ParleyWebSocket(config.max_message_bytes, heartbeat=config.sfu.websocket_heartbeat)
    await ws.prepare(request)
    assert front.http is not None
    relay = Relay(ws, request, config, front.placement, front.http, front.key, front.attach)
    relay.draining = lambda: is_draining(request.app)
    relay.route = front.route
    front.relays.add(relay)
    try:
        await relay.run()
    finally:
        front.relays.discard(relay)
        await front.detach(relay)
        if not ws.closed:
            await ws.close()
    return ws


def _allowed(request: web.Request) -> bool:
    auth = _front(request).config.auth
    return may_see_load(auth, request.headers.get("Authorization"), now=time.time())


async def healthz(request: web.Request) -> web.Response:
    """Liveness for anyone (``draining`` with 503 while draining); with the operator's
    access, every worker's counts, summed (the keys of one process's /healthz) and per
    worker under ``workers``."""
    draining = is_draining(request.app)
    status = {"status": "draining" if draining else "ok"}
    if not _allowed(request):
        return web.json_response(status, status=503 if draining else 200)
    front = _front(request)
    bodies = await front.worker_json("/healthz", request.headers.get("Authorization"))
    workers = []
    totals: dict[str, Any] = {}
    for info, body in zip(front.supervisor.info(), bodies, strict=True):
        counts = {k: v for k, v in (body or {}).items() if k != "status"}
        for key, value in counts.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
        relayed = front.sessions.get(str(info["id"]), 0)
        rooms = front.placement.rooms_of(str(info["id"]))
        workers.append({**info, "relayed_sessions": relayed, "placed_rooms": len(rooms),
                        "answered": body is not None, **counts})  # fmt: skip
    front_cpu = cpu_seconds(os.getpid())
    body = {**status, **totals, "front_cpu_seconds": front_cpu, "workers": workers}
    if front.health is not None:
        body.update(front.health())
    return web.json_response(body, status=503 if draining else 200)


async def metrics(request: web.Request) -> web.Response:
    if not _allowed(request):
        return web.Response(
            status=401,
            text="the metrics need Authorization: Bearer <API secret or admin token>\n",
            headers={"WWW-Authenticate": "Bearer"},
        )
    front = _front(request)
    texts = await front.worker_json("/metrics", request.headers.get("Authorization"))
    labelled = [(str(i["id"]), t) for i, t in zip(front.supervisor.info(), texts, strict=True)]
    ws = front.supervisor.workers
    own: list[tuple[str, str, str, dict[str, int | float]]] = [
        ("parley_front_relayed_sessions", "gauge", "Websocket sessions the front relays now.",
         {w.node_id: front.sessions.get(w.node_id, 0) for w in ws}),
        ("parley_worker_restarts_total", "counter", "Times a worker was restarted.",
         {w.node_id: w.restarts for w in ws}),
        ("parley_worker_hangs_total", "counter",
         "Times a worker was killed for not answering its health ping.",
         {w.node_id: w.hangs for w in ws}),
        ("parley_worker_up", "gauge", "1 while the worker answers, 0 while it restarts.",
         {w.node_id: int(w.target is not None) for w in ws}),
    ]  # fmt: skip
    body = merge_metrics([(w, t) for w, t in labelled if t is not None], own)
    return web.Response(text=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})  # fmt: skip


def relayed_sessions(app: web.Application) -> int:
    """Clients relayed now (what a drain waits for to reach 0)."""
    return len(app[FRONT_KEY].relays)


def is_front(app: web.Application) -> bool:
    return FRONT_KEY in app


def _file(path: Any) -> Any:
    async def serve(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    return serve


async def _shutdown(app: web.Application) -> None:
    """``on_shutdown``: every client gets ``server_shutdown``, then the workers stop."""
    front = app[FRONT_KEY]
    front.stopping.set()
    config = front.config
    closing = [
        asyncio.ensure_future(
            r.shutdown(
                config.shutdown_reason, config.shutdown_retry_after_ms, config.shutdown_grace
            )  # fmt: skip
        )
        for r in list(front.relays)
    ]
    if closing:
        await asyncio.wait(closing, timeout=config.shutdown_timeout)
    await front.supervisor.stop(timeout=0.5)


def create_front_app(
    config: ServerConfig,
    workers: int,
    worker_argv: list[str],
    spread_after: int | None = None,
    hang_timeout: float = HANG_TIMEOUT,
) -> web.Application:
    app = web.Application()
    front = Front(config, workers, worker_argv, spread_after, hang_timeout)
    app[FRONT_KEY] = front
    app[CONFIG_KEY] = config  # what `parley serve` reads of any app (drain)
    app[DRAINING_KEY] = asyncio.Event()

    async def context(app: web.Application) -> AsyncIterator[None]:
        front.http = aiohttp.ClientSession()
        try:
            await front.supervisor.start()
        except BaseException:
            await front.supervisor.stop()
            await front.http.close()
            raise
        yield
        await front.supervisor.stop()
        await front.placement.close()
        with contextlib.suppress(Exception):
            await front.http.close()

    app.cleanup_ctx.append(context)
    app.on_shutdown.append(_shutdown)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_admin_proxy_routes(app, front)
    app.router.add_get("/", index)
    for path in page_files():
        app.router.add_get(f"/static/{path.name}", _file(path))
    return app
