"""Where a room's signaling goes: the seam between the front (``cluster/front.py``) and
whatever knows the room → owner map (``LocalPlacement`` for workers on one host, a
Redis-backed one for many hosts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Target:
    #: where the room's websocket signaling goes, e.g. ws://127.0.0.1:41234/ws
    ws_url: str
    #: which node/worker owns it
    node_id: str


def http_base(ws_url: str) -> str:
    """A worker's or node's HTTP base (``http://host:port``) from its ``ws://…/ws`` URL."""
    return ws_url.replace("ws://", "http://", 1).removesuffix("/ws")


class Placement(Protocol):
    async def place(self, room: str) -> Target:
        """The owner of ``room``; claims it for the least-loaded if unowned."""
        ...

    async def forget(self, room: str, target: Target) -> None:
        """The room ended or its owner died."""
        ...

    async def close(self) -> None: ...
