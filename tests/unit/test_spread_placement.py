"""Placement per join (``cluster/spread.py``): which worker each join of a room goes to,
and which pipes the front asks for, with the workers' HTTP side replaced by a recorder
(the real thing: tests/integration/test_spread_workers.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.local_placement import NoLiveWorker
from cluster.placement import Target
from cluster.spread import SpreadPlacement

W0, W1, W2 = (Target(f"ws://127.0.0.1:{9000 + i}/ws", f"w{i}") for i in range(3))


class Linker:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = False

    async def link(self, room: str, a: Target, b: Target) -> None:
        if self.fail:
            raise RuntimeError("the worker did not answer")
        self.calls.append(("link", room, a.node_id, b.node_id))

    async def unlink(self, room: str, a: Target, b: Target) -> None:
        self.calls.append(("unlink", room, a.node_id, b.node_id))

    async def drop(self, dead: str, others: list[Target]) -> None:
        self.calls.append(("drop", dead, sorted(o.node_id for o in others)))


class Front:
    """The counts the front keeps: sessions per worker and per (room, worker)."""

    def __init__(self, after: int, workers: tuple[Target, ...] = (W0, W1)) -> None:
        self.sessions: dict[str, int] = {}
        self.room_sessions: dict[tuple[str, str], int] = {}
        self.linker = Linker()
        self.placement = SpreadPlacement(
            self.linker,  # type: ignore[arg-type]
            after,
            load=lambda n: self.sessions.get(n, 0),
            room_load=lambda r, n: self.room_sessions.get((r, n), 0),
        )
        for w in workers:
            self.placement.worker_up(w)

    async def join(self, room: str) -> str:
        target = await self.placement.place(room)
        node = target.node_id
        self.sessions[node] = self.sessions.get(node, 0) + 1
        self.room_sessions[(room, node)] = self.room_sessions.get((room, node), 0) + 1
        return node

    async def leave(self, room: str, node: str) -> None:
        self.sessions[node] -= 1
        self.room_sessions[(room, node)] -= 1
        if self.room_sessions[(room, node)] == 0:
            del self.room_sessions[(room, node)]
            target = next(t for t in (W0, W1, W2) if t.node_id == node)
            await self.placement.forget(room, target)


async def test_spread_alternates_joins_and_pipes_each_new_worker_once() -> None:
    front = Front(after=1)
    assert [await front.join("r") for _ in range(5)] == ["w0", "w1", "w0", "w1", "w0"]
    assert front.linker.calls == [("link", "r", "w0", "w1")]
    assert front.placement.rooms_of("w1") == ["r"] and front.placement.owner("r") == W0
    # a second room starts on the least-loaded worker (w1: 2 sessions against 3)
    assert await front.join("s") == "w1"


async def test_spread_after_k_fills_the_first_worker_first() -> None:
    front = Front(after=3, workers=(W0, W1, W2))
    assert [await front.join("r") for _ in range(3)] == ["w0"] * 3
    assert front.linker.calls == []
    # w0 holds 3 of the room: the next goes to the least-loaded, piped to w0
    assert await front.join("r") == "w1"
    assert await front.join("r") == "w1" and await front.join("r") == "w1"
    assert await front.join("r") == "w2"  # piped to both others
    assert front.linker.calls == [
        ("link", "r", "w0", "w1"),
        ("link", "r", "w0", "w2"),
        ("link", "r", "w1", "w2"),
    ]


async def test_a_worker_s_last_session_of_a_room_unpipes_it_and_a_dead_worker_is_dropped() -> None:
    front = Front(after=1, workers=(W0, W1, W2))
    for _ in range(3):
        await front.join("r")  # w0, w1, w2: three pipes
    front.linker.calls.clear()
    await front.leave("r", "w2")
    assert front.linker.calls == [("unlink", "r", "w0", "w2"), ("unlink", "r", "w1", "w2")]
    assert front.placement.rooms_of("w2") == []
    # w1 dies: out of the room, the others close their pipes to it
    assert front.placement.worker_down("w1") == []  # r still has w0
    await asyncio.sleep(0)
    assert front.linker.calls[-1] == ("drop", "w1", ["w0", "w2"])
    assert [t.node_id for t in front.placement.workers_of("r")] == ["w0"]
    # the last worker of a room gone: the room is lost (placed anew on its next join)
    assert front.placement.worker_down("w0") == ["r"]
    assert front.placement.owner("r") is None
    await front.placement.close()


async def test_a_failed_link_fails_the_join_and_nothing_is_recorded() -> None:
    front = Front(after=1)
    assert await front.join("r") == "w0"
    front.linker.fail = True
    with pytest.raises(RuntimeError):
        await front.join("r")  # the relay retries (and the client waits)
    assert front.placement.workers_of("r") == [W0]
    front.linker.fail = False
    assert await front.join("r") == "w1"
    for w in ("w0", "w1"):
        front.placement.worker_down(w)
    with pytest.raises(NoLiveWorker):
        await front.placement.place("r")
    await front.placement.close()


async def test_two_workers_leaving_a_room_at_once() -> None:
    """Two workers' last sessions of a room end together (two bots leave at once): each
    ``forget`` unpipes while the other takes its worker out of the room (a CI run's
    front raised "dictionary changed size during iteration" there)."""
    front = Front(after=1, workers=(W0, W1, W2))
    for _ in range(3):
        await front.join("r")  # w0, w1, w2

    async def slow_unlink(room: str, a: Target, b: Target) -> None:
        front.linker.calls.append(("unlink", room, a.node_id, b.node_id))
        await asyncio.sleep(0)  # the pipe's HTTP request: the other forget runs meanwhile

    front.linker.unlink = slow_unlink  # type: ignore[method-assign]
    await asyncio.gather(front.leave("r", "w1"), front.leave("r", "w2"))
    assert [t.node_id for t in front.placement.workers_of("r")] == ["w0"]
    assert ("unlink", "r", "w0", "w1") in front.linker.calls
    assert ("unlink", "r", "w0", "w2") in front.linker.calls
    await front.placement.close()
