"""The signaling server's configuration (``ServerConfig``) and the keys of what it keeps
on the aiohttp application (the SFU, the config, the sessions, ...)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from sfu.config import SfuConfig
from sfu.room import Sfu

from . import messages as m
from .auth import (
    AuthConfig,
)
from .drain import DrainConfig
from .limits import (
    AddressBuckets,
    Limits,
)
from .origins import OriginPolicy
from .webhooks import WebhookConfig, Webhooks

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What an authorisation callback sees of a join."""

    room: str
    name: str
    token: str | None
    request: web.Request


#: Returns None to admit the join, or a reason (shown to the user) to refuse it.
Authorize = Callable[[JoinRequest], Awaitable[str | None]]
#: Room -> the ``ws://…/ws`` URL of the node that serves it, or None to serve it here
#: (``parley serve --redis``: ``cluster/redis_node.py``). The join is answered ``redirect``.
Route = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    sfu: SfuConfig = field(default_factory=SfuConfig)
    max_message_bytes: int = m.DEFAULT_MAX_MESSAGE_BYTES
    #: Seconds a client may take between opening the websocket and joining.
    join_timeout: float = 30.0
    authorize: Authorize | None = None
    #: API key and secret: with a secret, joins need a token (``signaling/auth.py``)
    auth: AuthConfig = field(default_factory=AuthConfig)
    #: What ``server_shutdown`` tells clients when the application stops.
    shutdown_reason: str = "server is shutting down"
    #: ``server_shutdown``'s hint of when to rejoin: about what a restart takes.
    shutdown_retry_after_ms: int = 2000
    #: ``server_shutdown``'s ``reconnect``: whether clients should rejoin (here or elsewhere).
    shutdown_reconnect: bool = True
    #: Seconds a client gets to take its ``server_shutdown`` and close frame before its
    #: connection is cut (a client that stopped reading must not hold the shutdown up).
    shutdown_grace: float = 0.3
    #: Seconds the whole shutdown of sessions may take; what is left is cancelled.
    #: (0.5 s leaves the process room to exit within a second of the signal on a busy host.)
    shutdown_timeout: float = 0.5
    limits: Limits = field(default_factory=Limits)
    origins: OriginPolicy = field(default_factory=OriginPolicy)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    #: where a room is served, when not every room is served here (a cluster of nodes)
    route: Route | None = None
    #: more fields for ``/healthz``'s operator view (a cluster node's ``load``)
    health: Callable[[], Mapping[str, object]] | None = None
    #: Waiting for rooms to empty before a stop (``signaling/drain.py``).
    drain: DrainConfig = field(default_factory=DrainConfig)
    #: Set on a worker behind ``parley serve --workers`` (cluster/front.py): a request
    #: carrying this key in ``X-Parley-Front-Key`` comes from the front, and its
    #: ``X-Forwarded-For`` is the client's address (join rate limits are per client).
    front_key: str | None = None


def client_address(request: web.Request, config: ServerConfig) -> str:
    """The client's address: the peer's, or the one the front forwarded with its key."""
    key = config.front_key
    if key and request.headers.get("X-Parley-Front-Key") == key:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.remote or ""


SFU_KEY = web.AppKey("parley_sfu", Sfu)
CONFIG_KEY = web.AppKey("parley_config", ServerConfig)
SESSIONS_KEY = web.AppKey("parley_sessions", set)
#: Set when the application starts shutting down: no new websocket is accepted.
STOPPING_KEY = web.AppKey("parley_stopping", asyncio.Event)
#: Joins per second per client address (``Limits.join_rate``).
JOIN_RATE_KEY = web.AppKey("parley_join_rate", AddressBuckets)
#: The webhook sender, when ``ServerConfig.webhooks`` has URLs.
WEBHOOKS_KEY = web.AppKey("parley_webhooks", Webhooks)
