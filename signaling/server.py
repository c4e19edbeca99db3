"""The aiohttp signaling server: ``/ws`` (JSON protocol), ``/healthz``, ``/`` (the web page).

Embedders call :func:`setup_parley` on their own ``web.Application``;
:func:`create_app` does the same on a fresh one (that is what ``parley serve`` runs).
When the application shuts down (``on_shutdown``), every client is sent
``server_shutdown`` and its websocket is closed (1001) at once, and the SFU is closed,
so no handler keeps the process alive.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import cast

from aiohttp import WSMsgType, web

from sfu.room import Sfu

from .auth import (
    may_see_load,
)
from .config import (
    CONFIG_KEY,
    JOIN_RATE_KEY,
    SESSIONS_KEY,
    SFU_KEY,
    STOPPING_KEY,
    WEBHOOKS_KEY,
    Authorize,
    JoinRequest,
    Route,
    ServerConfig,
    client_address,
)
from .drain import DRAINING_KEY, is_draining
from .limits import (
    RATE_CLOSE_CODE,
    AddressBuckets,
    MessageGate,
)
from .metrics import setup_metrics
from .oplog import OperatorLog
from .origins import origin_refusal
from .session import (
    MAX_QUEUED_MESSAGES,
    REPLACED_REASON,
    ParleyWebSocket,
    Session,
    apply_grants,
    is_hidden,
    session_of,
)
from .webhooks import Webhooks

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_KEY",
    "JOIN_RATE_KEY",
    "MAX_QUEUED_MESSAGES",
    "REPLACED_REASON",
    "SESSIONS_KEY",
    "SFU_KEY",
    "STOPPING_KEY",
    "WEBHOOKS_KEY",
    "Authorize",
    "JoinRequest",
    "ParleyWebSocket",
    "Route",
    "ServerConfig",
    "Session",
    "apply_grants",
    "client_address",
    "create_app",
    "healthz",
    "index",
    "is_hidden",
    "page_files",
    "session_of",
    "setup_parley",
    "shutdown_sessions",
    "websocket_handler",
]

#: Files of the page served under ``/static/``: nothing else of the ``web`` package.
STATIC_SUFFIXES = frozenset({".html", ".js", ".css", ".png", ".svg", ".ico"})


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    sfu = request.app[SFU_KEY]
    config = request.app[CONFIG_KEY]
    if request.app[STOPPING_KEY].is_set():
        raise web.HTTPServiceUnavailable(text=config.shutdown_reason)
    origin = request.headers.get("Origin")
    if (refused := origin_refusal(origin, request.host, config.origins)) is not None:
        logger.info("refused a websocket from %s: origin %r", request.remote, origin)
        raise web.HTTPForbidden(text=refused)
    ws = ParleyWebSocket(config.max_message_bytes, heartbeat=config.sfu.websocket_heartbeat)
    await ws.prepare(request)
    session = Session(ws, request, sfu, config)
    session.handler = asyncio.current_task()
    sessions = request.app[SESSIONS_KEY]
    sessions.add(session)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.join_timeout
    gate = MessageGate(config.limits, loop.time())
    try:
        while not ws.closed:
            timeout = None if session.state != "new" else max(0.0, deadline - loop.time())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                session.error("wrong_state", "join timeout: send join first")
                break
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                verdict = gate.admit(loop.time())
                if verdict == "ok":
                    await session.handle(msg.data)
                elif verdict == "refuse":
                    session.error("rate_limited", "too many messages: this one was dropped")
                else:
                    logger.info(
                        "closing a websocket from %s: over its message rate", request.remote
                    )
                    session.error("rate_limited", "too many messages: closing the connection")
                    await session._flush_and_close(RATE_CLOSE_CODE, b"message rate exceeded")
                    break
            elif msg.type in (
                WSMsgType.CLOSE,
                WSMsgType.CLOSING,
                WSMsgType.CLOSED,
                WSMsgType.ERROR,
            ):
                break
            if session.state == "closed":
                break
    finally:
        await session.close()
        sessions.discard(session)
        if not ws.closed:
            await ws.close()
    return ws


async def healthz(request: web.Request) -> web.Response:
    """Liveness for anyone (``draining`` with 503 while draining: a load balancer takes
    this instance out); the counts only for the operator (``auth.may_see_load``)."""
    draining = is_draining(request.app)
    body: dict[str, object] = {"status": "draining" if draining else "ok"}
    auth = request.app[CONFIG_KEY].auth
    if may_see_load(auth, request.headers.get("Authorization"), now=time.time()):
        body.update(request.app[SFU_KEY].stats())
        health = request.app[CONFIG_KEY].health
        if health is not None:
            body.update(health())
    return web.json_response(body, status=503 if draining else 200)


def web_root() -> Path:
    return Path(str(resources.files("web")))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(web_root() / "index.html")


def page_files() -> list[Path]:
    """The files of the page (``web/``) that ``/static/`` serves: no Python, no dotfiles."""
    return sorted(
        path
        for path in web_root().iterdir()
        if path.is_file() and path.suffix in STATIC_SUFFIXES and not path.name.startswith(".")
    )


def _file_handler(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def serve_file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    return serve_file


def _redirect_handler(location: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def redirect(request: web.Request) -> web.StreamResponse:
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPPermanentRedirect(location + query)

    return redirect


async def shutdown_sessions(app: web.Application) -> None:
    """``on_shutdown``: tell every client why, close every websocket and session, close the SFU.

    aiohttp waits for running handlers (up to its ``shutdown_timeout``, 60 s by default)
    before ``on_cleanup``; a websocket handler runs as long as its client stays connected,
    so the sessions must end here, at once, or stopping hangs until clients give up.
    """
    config = app[CONFIG_KEY]
    app[STOPPING_KEY].set()
    sessions = list(cast("set[Session]", app[SESSIONS_KEY]))
    if sessions:
        logger.info("shutting down: closing %d session(s)", len(sessions))
    closing = [
        asyncio.ensure_future(
            s.shutdown(
                config.shutdown_reason,
                config.shutdown_retry_after_ms,
                config.shutdown_grace,
                config.shutdown_reconnect,
            )
        )
        for s in sessions
    ]
    closing.append(asyncio.ensure_future(app[SFU_KEY].close()))
    # the websocket handlers end once their session is closed; aiohttp would wait for
    # them up to its shutdown_timeout (60 s by default), so they are waited for here
    handlers = [s.handler for s in sessions if s.handler is not None]
    # goodbyes are bounded by shutdown_grace and closing peer connections takes
    # milliseconds, but nothing that hangs may keep the process from exiting
    done, pending = await asyncio.wait([*closing, *handlers], timeout=config.shutdown_timeout)
    for task in pending:
        task.cancel()
    if pending:
        logger.warning("shutting down: %d task(s) did not end in time, cancelled", len(pending))
        await asyncio.wait(pending, timeout=0.1)
    for task in done:
        if task in closing and not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("closing a session at shutdown failed", exc_info=exc)


def setup_parley(
    app: web.Application,
    config: ServerConfig | None = None,
    prefix: str = "",
) -> None:
    """Mount Parley's routes under ``prefix`` on ``app`` and tie the SFU's life to it.

    Routes: ``{prefix}/ws``, ``{prefix}/healthz``, the page at ``{prefix}/`` (``{prefix}``
    redirects there) and its files under ``{prefix}/static/``. The SFU is created at
    start-up; at shutdown every client gets ``server_shutdown`` and the SFU is closed.
    """
    config = config or ServerConfig()
    app[CONFIG_KEY] = config
    app[SESSIONS_KEY] = set()
    app[STOPPING_KEY] = asyncio.Event()
    app[DRAINING_KEY] = asyncio.Event()
    limits = config.limits
    app[JOIN_RATE_KEY] = AddressBuckets(
        limits.join_rate, limits.join_burst, limits.max_tracked_addresses
    )

    async def sfu_context(app: web.Application) -> AsyncIterator[None]:
        sfu = Sfu(config.sfu)
        sfu.add_observer(OperatorLog())  # one log line per join, leave, publish, unpublish
        app[SFU_KEY] = sfu
        webhooks = Webhooks(config.webhooks) if config.webhooks.urls else None
        if webhooks is not None:
            app[WEBHOOKS_KEY] = webhooks
            sfu.add_observer(webhooks)
        yield
        await sfu.close()
        if webhooks is not None:  # after the SFU: its last events go out too
            await webhooks.close()

    app.cleanup_ctx.append(sfu_context)
    setup_metrics(
        app,
        SFU_KEY,
        prefix,
        # with an API secret, as /healthz's counts: the secret or an admin token
        allowed=lambda request: may_see_load(
            request.app[CONFIG_KEY].auth, request.headers.get("Authorization"), now=time.time()
        ),
    )
    app.on_shutdown.append(shutdown_sessions)
    app.router.add_get(f"{prefix}/ws", websocket_handler)
    app.router.add_get(f"{prefix}/healthz", healthz)
    from .admin import add_admin_routes  # admin.py builds on this module's sessions

    add_admin_routes(app, prefix)
    app.router.add_get(f"{prefix}/", index)
    if prefix:
        app.router.add_get(prefix, _redirect_handler(f"{prefix}/"))
    for path in page_files():
        app.router.add_get(f"{prefix}/static/{path.name}", _file_handler(path))


async def freeze_startup_objects(app: web.Application) -> None:
    """An ``on_startup`` hook for a process that runs Parley alone (``parley serve``).

    Everything allocated at start-up (modules, aiortc, codec tables) lives as long as
    the process: moving it out of the cyclic collector's reach stops full collections
    from walking it, which stalled the event loop for 20-50 ms at a time under load
    (see docs/benchmarks.md). It changes process-wide state, so embedders opt in.
    """
    gc.collect()
    gc.freeze()


def create_app(config: ServerConfig | None = None, *, freeze_gc: bool = False) -> web.Application:
    """A new application serving Parley at ``/``; ``freeze_gc`` for a dedicated process."""
    app = web.Application()
    setup_parley(app, config)
    if freeze_gc:
        app.on_startup.append(freeze_startup_objects)
    return app
