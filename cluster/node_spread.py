"""One room over several nodes of a Redis cluster (``parley serve --redis URL
--node-spread``; docs/scaling.md, "One room over several nodes").

Without it a room lives on one node and a join reaching another node is redirected
there. With it, a join reaching a live node that is not draining is **served where it
arrives**: that node becomes a *member* of the room and pipes it (``sfu/pipe.py``) to the
room's owner and to every other member, as the front does between workers
(``cluster/spread.py``'s :class:`PipeLinker`, over the nodes' ``/_parley/pipes`` routes,
``cluster/worker_pipes.py``). So clients behind a load balancer, or joining through
different nodes, meet in one room without redirects, and a room can outgrow one node.

Redis holds, besides the owner (``{prefix}:room:{room}``):

* ``{prefix}:spread:{room}`` — a hash: member node id → ``{"url", "at"}``, written when
  the node joins the room and refreshed by its heartbeat (a member not refreshed for
  ``MEMBER_TTL`` seconds, or whose node key expired, is out); the key itself expires
  when no member refreshes it;
* ``{prefix}:cluster_key`` — the key the nodes' pipe routes demand (``X-Parley-Front-Key``),
  drawn by the first node (``SET NX``): whoever reaches Redis runs the cluster anyway.

Every heartbeat a member drops the rooms where it has no participant of its own left:
it unexports them both ways with each peer (their remote publishers leave) and closes
the pipes no room uses any more. The owner's room key is held as before; a member
does not end its participants when it finds the room owned by another node (that is
what a member is). A member that dies is noticed by the others' pipes (5 s of silence:
its remote publishers leave); its clients rejoin through their entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import aiohttp

from .placement import Target
from .redis_placement import Probe, two_choices
from .registry import Keys, NodeLoad, live_nodes
from .spread import PipeLinker
from .worker_pipes import WorkerPipes

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

#: seconds a member stays listed without refreshing its entry
MEMBER_TTL = 3.0
#: seconds a room being joined here is kept shared although no participant of this node
#: is in it yet (from the join's routing to the participant's arrival)
JOIN_GRACE = 5.0


def spread_key(keys: Keys, room: str) -> str:
    return f"{keys.prefix}:spread:{room}"


def cluster_key_name(keys: Keys) -> str:
    return f"{keys.prefix}:cluster_key"


def idle_rooms(
    linked: Mapping[str, Mapping[str, Target]],
    joining: Mapping[str, float],
    local_participants: Callable[[str], int],
    now: float,
) -> list[str]:
    """The shared rooms this node leaves: no participant of its own, and no join routed
    here within ``JOIN_GRACE`` seconds (``joining``: room → when; a beat between a join's
    routing and its participant's arrival must not unpipe the room under it)."""
    return [
        room
        for room in linked
        if local_participants(room) == 0 and now - joining.get(room, -JOIN_GRACE) >= JOIN_GRACE
    ]


def unused_peers(
    initiated: Collection[str], linked: Mapping[str, Mapping[str, Target]]
) -> set[str]:
    """The peers this node opened pipes to that no shared room links any more."""
    used = {peer for peers in linked.values() for peer in peers}
    return set(initiated) - used


class NodeSpread:
    """The rooms this node shares with other nodes, and its pipes to them."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        me: Target,
        pipes: WorkerPipes,
        local_participants: Callable[[str], int],
        probe: Probe | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.me = me
        self.pipes = pipes
        #: participants of a room connected here (remote publishers left out)
        self.local_participants = local_participants
        #: False when a node is certainly down (``redis_node.listening``)
        self.probe = probe
        #: the cluster's pipe key (from Redis; None until read)
        self.key: str | None = None
        self.http: aiohttp.ClientSession | None = None
        #: rooms shared with other nodes: room → the peers linked for it
        self.linked: dict[str, dict[str, Target]] = {}
        #: rooms this node has listed itself in (``{prefix}:spread:{room}``)
        self.enrolled: set[str] = set()
        #: peers this node opened pipes to (it closes them; the peer's end closes on
        #: the ``bye``, or after 5 s of silence when this node died)
        self.initiated: set[str] = set()
        #: rooms joined here lately: room → ``time.monotonic()`` of the join's routing
        self.joining: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._rng = random.Random()
        self.links = 0

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        await self.read_key()

    async def read_key(self) -> str | None:
        """The cluster's pipe key, drawn by the first node that asks."""
        if self.key is None:
            name = cluster_key_name(self.keys)
            await self.redis.set(name, secrets.token_urlsafe(24), nx=True)
            value = await self.redis.get(name)
            if value is not None:
                self.key = value.decode() if isinstance(value, bytes) else str(value)
        return self.key

    def _linker(self) -> PipeLinker:
        assert self.key is not None and self.http is not None
        http = self.http
        return PipeLinker(lambda: http, self.key)

    async def members(self, room: str) -> dict[str, Target]:
        """The room's live members (this node included), by node id."""
        return {n: t for n, (t, _) in (await self.counts(room)).items()}

    async def counts(self, room: str) -> dict[str, tuple[Target, int]]:
        """The room's live members with the participants each has of its own (as of
        its last heartbeat), by node id."""
        raw = await self.redis.hgetall(spread_key(self.keys, room))
        now = time.time()
        found: dict[str, tuple[Target, int]] = {}
        for field, value in raw.items():
            node_id = field.decode() if isinstance(field, bytes) else str(field)
            try:
                entry = json.loads(value)
            except ValueError:
                continue
            if now - float(entry.get("at", 0)) <= MEMBER_TTL:
                found[node_id] = (Target(str(entry["url"]), node_id), int(entry.get("n", 0)))
        alive = await self.redis.mget([self.keys.node(n) for n in found]) if found else []
        return {n: e for (n, e), v in zip(found.items(), alive, strict=True) if v is not None}

    async def spill_target(self, room: str, after: int) -> Target | None:
        """Where a join goes when this node holds ``after`` of the room's participants:
        the member with the fewest under ``after`` (then the lowest id); else a live node
        that is not draining and not in the room yet, by two random choices; None when
        every node is full or draining (the join is served here)."""
        members = await self.counts(room)
        roomy = sorted((n, node_id) for node_id, (_, n) in members.items() if n < after
                       and node_id != self.me.node_id)  # fmt: skip
        if roomy:
            return members[roomy[0][1]][0]
        others = [
            n for n in await live_nodes(self.redis, self.keys)
            if n.node_id not in members and n.node_id != self.me.node_id
        ]  # fmt: skip
        chosen = two_choices(others, {}, self._rng)
        return Target(chosen.ws_url, chosen.node_id) if chosen is not None else None

    async def _enrol(self, room: str) -> None:
        self.enrolled.add(room)
        entry = json.dumps(
            {"url": self.me.ws_url, "at": time.time(), "n": self.local_participants(room)}
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(spread_key(self.keys, room), self.me.node_id, entry)
            pipe.pexpire(spread_key(self.keys, room), int(MEMBER_TTL * 3000))
            await pipe.execute()

    async def join_here(self, room: str, owner: Target) -> None:
        """Serve ``room`` here although ``owner`` owns it: enrol, then pipe the room to
        the owner and every member not linked yet (raises if a link fails: the caller
        redirects the join instead)."""
        if await self.read_key() is None:
            raise RuntimeError("no cluster key in Redis")
        self.joining[room] = time.monotonic()
        lock = self._locks.setdefault(room, asyncio.Lock())
        async with lock:  # one join of the room at a time: its links finish first
            await self._enrol(room)
            peers = await self.members(room)
            peers[owner.node_id] = owner
            peers.pop(self.me.node_id, None)
            for peer in peers.values():
                linked = self.linked.setdefault(room, {})
                if peer.node_id in linked and peer.node_id in self.pipes.pipes:
                    continue
                # listed before the link is made: a heartbeat meanwhile keeps its pipe
                linked[peer.node_id] = peer
                self.initiated.add(peer.node_id)
                try:
                    await self._linker().link(room, self.me, peer)
                except BaseException:
                    self.linked.get(room, {}).pop(peer.node_id, None)
                    raise
                self.links += 1
                logger.info("room %r piped between nodes %s and %s", room, self.me.node_id,
                            peer.node_id)  # fmt: skip
            self.joining[room] = time.monotonic()

    def shares(self, room: str) -> bool:
        return room in self.linked

    async def beat(self, served: list[str], now: float) -> None:
        """Enrol every room ``served`` here (with its count: the owner too, which spill
        decisions read); leave the rooms shared with others where this node has no
        participant of its own left and no join under way (unexported both ways); close
        the pipes no room uses. ``now`` is ``time.monotonic()``."""
        if self.key is None:
            await self.read_key()
        for room in served:
            if room not in self.linked:
                await self._enrol(room)
        for room in self.enrolled - set(served) - set(self.linked):
            # a room this node served (as its owner) and no longer does: unlisted now,
            # not when its entry expires
            self.enrolled.discard(room)
            await self.redis.hdel(spread_key(self.keys, room), self.me.node_id)
        # the rooms left are taken out at once (a join starting meanwhile links anew)
        dropped = {
            room: self.linked.pop(room)
            for room in idle_rooms(self.linked, self.joining, self.local_participants, now)
        }
        for room in dropped:
            self.joining.pop(room, None)
            self.enrolled.discard(room)
        for room in list(self.linked):
            await self._enrol(room)
        for room, peers in dropped.items():
            lock = self._locks.setdefault(room, asyncio.Lock())
            async with lock:  # a join of the room waits for its unlinking
                await self.redis.hdel(spread_key(self.keys, room), self.me.node_id)
                if self.key is not None:
                    linker = self._linker()
                    for peer in peers.values():
                        await linker.unlink(room, self.me, peer)
            if room not in self.linked and not lock.locked():
                self._locks.pop(room, None)
        for node_id in unused_peers(self.initiated, self.linked):
            if node_id not in unused_peers(self.initiated, self.linked):
                continue  # a join linked it again meanwhile
            self.initiated.discard(node_id)
            await self.pipes.close_peer(node_id, "no room shared with that node any more")
        await self._drop_dead_peers()

    async def _drop_dead_peers(self) -> None:
        """Close the pipes to nodes that are gone (key expired, or their address refuses
        connections: killed a moment ago): their remote publishers leave now, not after
        the pipe's 5 s of silence."""
        peers = list(self.pipes.pipes)
        if not peers:
            return
        values = await self.redis.mget([self.keys.node(p) for p in peers])
        for node_id, value in zip(peers, values, strict=True):
            if value is None:
                gone = True
            else:
                gone = self.probe is not None and not await self.probe(NodeLoad.from_json(value))
            if gone:
                logger.warning("node %s is gone: closing the pipe to it", node_id)
                self.initiated.discard(node_id)
                for peers_of_room in self.linked.values():
                    peers_of_room.pop(node_id, None)
                await self.pipes.close_peer(node_id, "the peer node is gone")

    async def close(self) -> None:
        await self.pipes.close()
        if self.http is not None:
            await self.http.close()
