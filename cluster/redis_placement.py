"""The room → node map in Redis, and where a new room goes (the ``Placement`` protocol).

``{prefix}:room:{room}`` holds the owning node's id with a TTL (``room_ttl``) that the
owner refreshes every heartbeat while the room lives there (:meth:`RedisPlacement.hold`).
:meth:`RedisPlacement.place` returns the owner while its node key is alive; a room with no
owner, or whose owner's key expired (the node died, or stopped), is claimed — with a
compare-and-set, so two nodes placing the same room at once agree — for a node chosen by
**two random choices, lowest load** (:func:`two_choices`) among the live nodes that are
not draining, as LiveKit's node selector does. The load compared is the node's published
score with the rooms claimed for it since its last heartbeat counted as one participant
each (``{prefix}:pending``); scores within :data:`SCORE_TOLERANCE` of each other are
decided by rooms (plus those pending), so a burst of new rooms does not all land on the
node that was idlest a second ago, nor follow CPU jitter.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .placement import Target
from .registry import Keys, NodeLoad, live_nodes, load_score

if TYPE_CHECKING:
    from redis.asyncio import Redis  # imported when --redis is given (setup_redis_node)

#: seconds a room key lives without its owner refreshing it
ROOM_TTL = 3.0
#: scores closer than this are as good as equal (CPU readings jitter by several percent
#: on a shared host, even averaged): the node with fewer rooms (counting pending claims) is chosen
SCORE_TOLERANCE = 0.1

# KEYS[1] room key; ARGV: candidate node id, the owner seen before ("" for none), ttl ms.
# Claims the room for the candidate unless someone else changed the owner meanwhile;
# returns the owner after the call.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
return v
"""
# KEYS[1] room key; ARGV: node id, ttl ms. The owner's refresh: keeps (or takes back,
# after a Redis restart) a room it serves; returns the owner after the call.
_HOLD = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return v
"""
# KEYS[1] room key; ARGV[1] node id: delete the key only if that node owns it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


#: False when ``node`` is certainly down (nothing listens at its URL), True otherwise
Probe = Callable[[NodeLoad], Awaitable[bool]]


class NoNodeError(RuntimeError):
    """No live node takes rooms."""


def estimated_score(node: NodeLoad, pending: int) -> float:
    """The node's score with ``pending`` rooms claimed since its heartbeat counted as
    one participant each."""
    return load_score(node.cpu_percent, node.participants + pending, node.capacity, node.workers)


def two_choices(
    nodes: Sequence[NodeLoad], pending: Mapping[str, int], rng: random.Random
) -> NodeLoad | None:
    """Two distinct random nodes that are not draining; the less loaded of them, or, when
    their scores are within :data:`SCORE_TOLERANCE`, the one with fewer rooms (the first
    drawn on a tie). None when no node takes rooms."""
    healthy = [n for n in nodes if not n.draining]
    if len(healthy) <= 1:
        return healthy[0] if healthy else None
    a, b = rng.sample(healthy, 2)
    pending_a, pending_b = pending.get(a.node_id, 0), pending.get(b.node_id, 0)
    score_a, score_b = estimated_score(a, pending_a), estimated_score(b, pending_b)
    if abs(score_a - score_b) < SCORE_TOLERANCE:  # as loaded, within noise: fewer rooms
        return a if a.rooms + pending_a <= b.rooms + pending_b else b
    return a if score_a < score_b else b


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisPlacement:
    """``Placement`` over Redis. ``redis`` is shared with the node's registry and closed
    by whoever created it; :meth:`close` does nothing else."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys | None = None,
        *,
        room_ttl: float = ROOM_TTL,
        rng: random.Random | None = None,
        self_id: str | None = None,
        probe: Probe | None = None,
    ) -> None:
        self.redis = redis
        #: this node's id: never probed
        self.self_id = self_id
        #: asked before a room is sent to another node whose key is alive: a node killed a
        #: moment ago refuses connections long before its key expires
        self.probe = probe
        self.keys = keys or Keys()
        self.room_ttl_ms = int(room_ttl * 1000)
        self.rng = rng or random.Random()
        self._claim = redis.register_script(_CLAIM)
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    async def node(self, node_id: str) -> NodeLoad | None:
        value = await self.redis.get(self.keys.node(node_id))
        return None if value is None else NodeLoad.from_json(value)

    async def owner(self, room: str) -> str | None:
        value = await self.redis.get(self.keys.room(room))
        return None if value is None else _text(value)

    async def _up(self, load: NodeLoad) -> bool:
        return load.node_id == self.self_id or self.probe is None or await self.probe(load)

    async def place(self, room: str) -> Target:
        down: set[str] = set()
        for _ in range(3):
            owner = await self.owner(room)
            if owner is not None and owner not in down:
                load = await self.node(owner)
                if load is not None and await self._up(load):
                    return Target(load.ws_url, load.node_id)
                if load is not None:
                    down.add(owner)
            nodes = [n for n in await live_nodes(self.redis, self.keys) if n.node_id not in down]
            raw = await self.redis.hgetall(self.keys.pending)
            pending = {_text(k): int(v) for k, v in raw.items()}
            chosen = two_choices(nodes, pending, self.rng)
            if chosen is None:
                raise NoNodeError("no live node takes rooms")
            result = _text(
                await self._claim(
                    keys=[self.keys.room(room)],
                    args=[chosen.node_id, owner or "", self.room_ttl_ms],
                )
            )
            if result == chosen.node_id:
                await self.redis.hincrby(self.keys.pending, chosen.node_id, 1)
                return Target(chosen.ws_url, chosen.node_id)
            # another node claimed it first: take its answer on the next round
        raise NoNodeError(f"room {room!r}: its owner keeps changing")

    async def move(self, room: str, from_id: str) -> Target | None:
        """``from_id`` drains: claim ``room`` (which it serves) for another node, chosen
        as for a new room among the live, not draining nodes but ``from_id``; the owner
        already, when another live node holds it. None when no other node takes rooms
        (the room stays where it is)."""
        owner = await self.owner(room)
        if owner is not None and owner != from_id:
            load = await self.node(owner)
            if load is not None and not load.draining and await self._up(load):
                return Target(load.ws_url, load.node_id)
        nodes = [n for n in await live_nodes(self.redis, self.keys) if n.node_id != from_id]
        raw = await self.redis.hgetall(self.keys.pending)
        pending = {_text(k): int(v) for k, v in raw.items()}
        while (chosen := two_choices(nodes, pending, self.rng)) is not None:
            if await self._up(chosen):
                break
            nodes = [n for n in nodes if n.node_id != chosen.node_id]
        if chosen is None:
            return None
        result = _text(
            await self._claim(
                keys=[self.keys.room(room)], args=[chosen.node_id, owner or "", self.room_ttl_ms]
            )
        )
        if result == chosen.node_id:
            await self.redis.hincrby(self.keys.pending, chosen.node_id, 1)
            return Target(chosen.ws_url, chosen.node_id)
        load = await self.node(result) if result != from_id else None
        return None if load is None else Target(load.ws_url, load.node_id)

    async def forget(self, room: str, target: Target) -> None:
        await self._release(keys=[self.keys.room(room)], args=[target.node_id])

    async def hold(self, node_id: str, rooms: Iterable[str]) -> dict[str, str]:
        """Refresh ``node_id``'s claim on each of ``rooms`` (it serves them); returns the
        rooms another live node owns now (room → that node's ws URL). A room claimed by
        a node that died is taken back."""
        rooms = list(rooms)
        if not rooms:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                await self._hold(
                    keys=[self.keys.room(room)], args=[node_id, self.room_ttl_ms], client=pipe
                )
            owners = [_text(v) for v in await pipe.execute()]
        lost: dict[str, str] = {}
        for room, owner in zip(rooms, owners, strict=True):
            if owner == node_id:
                continue
            load = await self.node(owner)
            if load is not None:
                lost[room] = load.ws_url
                continue
            await self._claim(keys=[self.keys.room(room)], args=[node_id, owner, self.room_ttl_ms])
        return lost

    async def close(self) -> None:
        return None
