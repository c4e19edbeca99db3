"""``parley serve --workers N --redis URL``: a front and its workers as one node of a
cluster (docs/scaling.md, "A node of workers").

The front registers the node in Redis (the workers never do: they run without
``--redis``); its load is the node's: participants are the clients the front relays,
rooms the rooms they are in, published tracks and forwarders the workers' own (remote
publishers of a spread room left out), forwarded packets per second summed over every
worker's forwarders, CPU the front's and every worker's together, with ``workers`` N
(the score divides the CPU share by N cores). A join at the front is routed as at a
single-process node (``RedisNode.route``): ``redirect`` to the node serving the room,
or placed on one of this node's workers as without Redis. The heartbeat holds the
rooms that have relayed sessions here; a room another node took is ended here with
``server_shutdown`` (its clients rejoin through their entry, which redirects them); a
draining node moves its rooms the same way as a single process does.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from .front import FRONT_KEY, Front
from .pipe_auth import SIGNATURE_HEADER, sign
from .placement import http_base
from .redis_node import MOVE_REASON, MOVED_REASON, RedisNode, new_node, run_node
from .worker_pipes import LOAD_PATH
from .workers import cpu_seconds

logger = logging.getLogger(__name__)

#: seconds a worker has to answer the heartbeat's load request
LOAD_TIMEOUT = 0.5


class FrontRedisNode(RedisNode):
    """A :class:`RedisNode` whose rooms are the front's relayed sessions."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.front: Front | None = None
        #: the workers' counts at the last heartbeat (``GET /_parley/load``)
        self._counts: dict[str, int] = {}
        self._packets: dict[int, int] = {}

    @property
    def ready(self) -> bool:
        return self.front is not None

    def served_rooms(self) -> list[str]:
        if self.front is None:
            return []
        return sorted({room for room, _ in self.front.room_sessions})

    def serves(self, room: str) -> bool:
        return self.front is not None and any(r == room for r, _ in self.front.room_sessions)

    async def _shutdown_relays(self, rooms: Mapping[str, object] | set[str], reason: str) -> int:
        if self.front is None:
            return 0
        relays = [r for r in self.front.relays if r.room in rooms]
        await asyncio.gather(
            *(r.shutdown(reason, 0, self.shutdown_grace) for r in relays), return_exceptions=True
        )
        return len(relays)

    async def end_room(self, room_id: str) -> None:
        await self._shutdown_relays({room_id}, MOVED_REASON)

    async def shutdown_rooms(self, rooms: Mapping[str, str]) -> int:
        return await self._shutdown_relays(rooms, MOVE_REASON)

    def _stats(self) -> Mapping[str, Any]:
        if self.front is None:
            return {}
        counts = self._counts
        return {
            "rooms": len(self.served_rooms()),
            "participants": sum(self.front.sessions.values()),
            "published_tracks": counts.get("published_tracks", 0),
            "forwarders": counts.get("forwarders", 0),
        }

    def _packet_counts(self) -> Mapping[int, int]:
        return self._packets

    async def refresh(self) -> None:
        """The workers' counts, for the sample that follows (a worker that does not answer
        within ``LOAD_TIMEOUT`` counts nothing this time)."""
        front = self.front
        if front is None or front.http is None:
            return
        http = front.http
        key = front.key

        async def one(node_id: str, base: str) -> tuple[str, dict[str, Any] | None]:
            try:
                async with http.get(
                    base + LOAD_PATH,
                    headers={SIGNATURE_HEADER: sign(key, "GET", LOAD_PATH, b"", time.time())},
                    timeout=aiohttp.ClientTimeout(total=LOAD_TIMEOUT),
                ) as response:
                    if response.status != 200:
                        return node_id, None
                    body: dict[str, Any] = await response.json()
                    return node_id, body
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return node_id, None

        live = [(t.node_id, http_base(t.ws_url)) for t in front.placement.live]
        answers = await asyncio.gather(*(one(n, b) for n, b in live))
        counts = {"published_tracks": 0, "forwarders": 0}
        packets: dict[int, int] = {}
        for node_id, body in answers:
            if body is None:
                continue
            for name in counts:
                counts[name] += int(body.get(name, 0))
            for forwarder, sent in dict(body.get("packets", {})).items():
                packets[hash((node_id, forwarder))] = int(sent)
        self._counts, self._packets = counts, packets

    def cpu(self) -> float:
        """CPU seconds of the front and its running workers (a restarted worker starts
        again from 0: that interval counts what the others used)."""
        total = cpu_seconds(os.getpid()) or 0.0
        if self.front is not None:
            for worker in self.front.supervisor.workers:
                if worker.proc is not None and worker.target is not None:
                    total += cpu_seconds(worker.proc.pid) or 0.0
        return total


def setup_front_redis_node(
    app: web.Application, args: argparse.Namespace, workers: int
) -> FrontRedisNode | None:
    """With ``--redis``: make the front (``create_front_app``) a node of the cluster."""
    if not args.redis:
        return None
    holder: list[FrontRedisNode] = []

    async def refresh() -> None:
        await holder[0].refresh()

    node = new_node(
        args, FrontRedisNode, refresh=refresh, cpu_seconds=lambda: holder[0].cpu(), workers=workers
    )
    holder.append(node)
    front = app[FRONT_KEY]
    # a client of a stopping node rejoins at once: another node takes its room
    front.config = dataclasses.replace(front.config, shutdown_retry_after_ms=0)
    front.route = node.route
    front.health = node.health
    node.shutdown_grace = front.config.shutdown_grace

    def serving() -> None:
        node.front = front  # the front's context (its workers up) ran before this one

    run_node(app, node, args.redis, serving)
    return node
