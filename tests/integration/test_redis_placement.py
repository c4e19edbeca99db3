"""``cluster/registry.py`` and ``cluster/redis_placement.py`` against a real redis-server:
registration with a TTL, the room → node map, claims, releases, a dead owner's rooms
placed anew, the owner's refresh, and a Redis restart (no parley process here: the
two-node tests are in test_redis_nodes.py)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping

import pytest
from redis.asyncio import Redis

from cluster.redis_placement import NoNodeError, RedisPlacement
from cluster.registry import Keys, NodeLoad, Registry, live_nodes

from ._redis import RedisServer, redis_server


@pytest.fixture
async def redis() -> AsyncIterator[tuple[RedisServer, Redis]]:
    async with redis_server() as server:
        client = Redis.from_url(server.url(), socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            yield server, client
        finally:
            await client.aclose()


def registry(
    client: Redis, node_id: str, participants: int = 0, *, interval: float = 0.2, ttl: float = 0.6
) -> Registry:
    stats: Mapping[str, int] = {"rooms": 0, "participants": participants}
    return Registry(
        client,
        node_id=node_id,
        ws_url=f"ws://127.0.0.1:{9000 + len(node_id)}/ws",
        capacity=10,
        stats=lambda: stats,
        packet_counts=dict,
        interval=interval,
        ttl=ttl,
    )


async def test_a_node_is_listed_while_it_beats_and_out_once_its_ttl_passed(redis) -> None:
    _, client = redis
    node = registry(client, "a", participants=3)
    assert await node.beat()
    (load,) = await live_nodes(client, Keys())
    assert (load.node_id, load.participants, load.capacity) == ("a", 3, 10)
    assert 0 < await client.pttl("parley:node:a") <= 600
    node.start()
    await asyncio.sleep(1.0)  # longer than the TTL: the beats keep it alive
    assert [n.node_id for n in await live_nodes(client, Keys())] == ["a"]
    await node.close()  # no more beats: out within the TTL
    await asyncio.sleep(0.8)
    assert await live_nodes(client, Keys()) == []
    assert await client.smembers("parley:nodes") == set()  # the stale id was pruned


async def test_rooms_are_claimed_kept_released_and_placed_anew_when_the_owner_dies(
    redis,
) -> None:
    _, client = redis
    a, b = registry(client, "a"), registry(client, "b", participants=9)  # b: 90 % full
    await a.beat()
    await b.beat()
    placement = RedisPlacement(client, room_ttl=0.6, rng=random.Random(1))
    first = await placement.place("r1")
    assert first.node_id == "a" and first.ws_url == "ws://127.0.0.1:9001/ws"
    assert await placement.owner("r1") == "a"
    assert await placement.place("r1") == first  # owned: the same answer
    await placement.forget("r1", first)
    assert await placement.owner("r1") is None
    # forget by a node that does not own it does nothing
    await placement.place("r2")
    await placement.forget("r2", type(first)("ws://x/ws", "b"))
    assert await placement.owner("r2") == "a"
    # a's key expires (no beats): its room goes to b on the next place
    b.start()
    await asyncio.sleep(0.8)
    assert (await placement.place("r2")).node_id == "b"
    await b.close()


async def test_a_probe_that_finds_the_owner_down_moves_the_room_before_the_ttl(redis) -> None:
    _, client = redis
    a, b = registry(client, "a", ttl=30), registry(client, "b", participants=5, ttl=30)
    await a.beat()
    await b.beat()
    down = {"a"}

    async def probe(node: NodeLoad) -> bool:
        return node.node_id not in down

    placement = RedisPlacement(client, rng=random.Random(2))
    assert (await placement.place("r")).node_id == "a"
    prober = RedisPlacement(client, rng=random.Random(2), probe=probe)
    assert (await prober.place("r")).node_id == "b"  # a's key lives, but it is down
    assert await placement.owner("r") == "b"


async def test_no_live_node_is_an_error(redis) -> None:
    _, client = redis
    with pytest.raises(NoNodeError):
        await RedisPlacement(client).place("r")


async def test_the_owner_holds_its_rooms_and_learns_of_one_taken_by_another(redis) -> None:
    _, client = redis
    a, b = registry(client, "a", ttl=30), registry(client, "b", ttl=30)
    await a.beat()
    await b.beat()
    placement = RedisPlacement(client, room_ttl=0.6)
    assert await placement.hold("a", ["r1", "r2"]) == {}
    assert await placement.owner("r1") == "a"
    await client.set("parley:room:r2", "b")  # another node took r2 meanwhile
    await asyncio.sleep(0.4)
    assert await placement.hold("a", ["r1", "r2"]) == {"r2": b.ws_url}
    await asyncio.sleep(0.4)  # past r1's first TTL: the hold refreshed it
    assert await placement.owner("r1") == "a"
    # a room claimed by a node that is gone is taken back
    await client.set("parley:room:r3", "ghost")
    assert await placement.hold("a", ["r3"]) == {}
    assert await placement.owner("r3") == "a"


async def test_registration_and_rooms_come_back_after_a_redis_restart(
    redis, caplog: pytest.LogCaptureFixture
) -> None:
    server, client = redis
    placement = RedisPlacement(client, room_ttl=3.0)
    node = registry(client, "a", interval=0.2, ttl=0.6)

    async def hold() -> None:
        await placement.hold("a", ["r1"])

    node.on_beat = hold
    node.start()
    await asyncio.sleep(0.5)
    assert await placement.owner("r1") == "a"
    with caplog.at_level(logging.WARNING, logger="cluster.registry"):
        await server.kill()
        beats = node.beats
        await asyncio.sleep(1.5)  # about seven failed beats
        assert node.beats == beats
        await server.start()  # empty: no node, no room
        await asyncio.sleep(0.8)
    assert [n.node_id for n in await live_nodes(client, Keys())] == ["a"]
    assert await placement.owner("r1") == "a"
    assert node.beats > beats
    failures = [r for r in caplog.records if "heartbeat" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]  # logged once
    await node.close()


async def test_a_drained_node_keeps_its_rooms_and_gets_no_new_ones(redis) -> None:
    _, client = redis
    a, b = registry(client, "a", ttl=30), registry(client, "b", participants=9, ttl=30)
    await a.beat()
    await b.beat()
    placement = RedisPlacement(client, rng=random.Random(3))
    assert (await placement.place("old")).node_id == "a"  # b is 90 % full
    await client.set("parley:drain:a", "1")  # what an autoscaler does
    await a.beat()
    (load,) = [n for n in await live_nodes(client, Keys()) if n.node_id == "a"]
    assert load.draining and a.draining
    for i in range(10):
        assert (await placement.place(f"new-{i}")).node_id == "b"
    assert (await placement.place("old")).node_id == "a"
    await client.delete("parley:drain:a")  # undrained
    await a.beat()
    assert not a.draining
    assert (await placement.place("after")).node_id == "a"


async def test_a_draining_node_s_room_is_moved_to_a_live_node_that_takes_rooms(redis) -> None:
    _, client = redis
    a, b, c = (registry(client, n, ttl=30) for n in ("a", "b", "c"))
    for node in (a, b, c):
        await node.beat()
    placement = RedisPlacement(client, rng=random.Random(5))
    await client.set("parley:room:r1", "a")
    await client.set("parley:drain:c", "1")  # c takes no rooms
    await c.beat()
    await client.set("parley:drain:a", "move")
    await a.beat()
    assert a.draining and a.drain_move and not c.drain_move
    target = await placement.move("r1", "a")
    assert target is not None and target.node_id == "b", target
    assert await placement.owner("r1") == "b"
    assert await placement.move("r1", "a") == target  # moved already: the same answer
    # no other node takes rooms: the room stays where it is
    await client.set("parley:room:r2", "a")
    await client.set("parley:drain:b", "1")
    await b.beat()
    assert await placement.move("r2", "a") is None
    assert await placement.owner("r2") == "a"
