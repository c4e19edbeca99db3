"""Interop tests: independent WebRTC stacks (tests/interop/*_client.*) against a real
Parley server in the loopback-only namespace (fixtures from ``tests/_server.py``)."""

from __future__ import annotations

from tests._server import (
    RunningServer,
    ServerFactory,
    _require_loopback_namespace,
    server,
    server_factory,
)

__all__ = [
    "RunningServer",
    "ServerFactory",
    "_require_loopback_namespace",
    "server",
    "server_factory",
]
