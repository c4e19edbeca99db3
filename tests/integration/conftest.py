"""Integration fixtures: a real Parley server on an ephemeral port, real UDP on loopback.

These tests open real peer connections. They must run inside a network namespace
that has only ``lo`` (``make test`` does this with ``scripts/in_netns.py``), so no
packet can leave the machine even by mistake; they refuse to run anywhere else.
The fixtures live in ``tests/_server.py``, shared with the browser tests.
"""

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
