"""Rooms on the workers of one host (``parley serve --workers N``): the front's own map.

A room lives on one worker. A new room goes to the least-loaded live worker: the fewest
participants (as counted by the caller's ``load`` function: the front counts the sessions
it relays to each worker, so two joins in a row see each other at once, without polling),
then the fewest rooms, then the first in start order. A worker that died is taken out
(:meth:`worker_down`) and forgets its rooms: each is placed anew on its next join. A
restarted worker comes back with a new address (:meth:`worker_up`).
"""

from __future__ import annotations

from collections.abc import Callable

from .placement import Target


class NoLiveWorker(Exception):
    """Every worker is down (all restarting): the join cannot be placed now."""


class LocalPlacement:
    """:class:`cluster.placement.Placement` for the workers of one host."""

    def __init__(self, load: Callable[[str], int] | None = None) -> None:
        #: live workers by node id, in the order they first came up
        self._workers: dict[str, Target] = {}
        self._order: dict[str, int] = {}
        self._rooms: dict[str, Target] = {}
        self._load = load if load is not None else (lambda node_id: 0)

    # ------------------------------------------------------------ workers

    def worker_up(self, target: Target) -> None:
        """``target`` answers (started or restarted, possibly at a new address)."""
        self._order.setdefault(target.node_id, len(self._order))
        self._workers[target.node_id] = target

    def worker_down(self, node_id: str) -> list[str]:
        """The worker died: it gets no room until it is up again; returns its rooms."""
        self._workers.pop(node_id, None)
        lost = [room for room, t in self._rooms.items() if t.node_id == node_id]
        for room in lost:
            del self._rooms[room]
        return lost

    @property
    def live(self) -> list[Target]:
        return sorted(self._workers.values(), key=lambda t: self._order[t.node_id])

    def rooms_of(self, node_id: str) -> list[str]:
        return [room for room, t in self._rooms.items() if t.node_id == node_id]

    def owner(self, room: str) -> Target | None:
        return self._rooms.get(room)

    def workers_of(self, room: str) -> list[Target]:
        """The room's worker (a room lives on one), as ``SpreadPlacement.workers_of``."""
        owner = self._rooms.get(room)
        return [owner] if owner is not None else []

    # ------------------------------------------------------------ Placement

    async def place(self, room: str) -> Target:
        owner = self._rooms.get(room)
        if owner is not None and self._workers.get(owner.node_id) == owner:
            return owner
        if not self._workers:
            raise NoLiveWorker("no worker is running")
        rooms: dict[str, int] = {}
        for t in self._rooms.values():
            rooms[t.node_id] = rooms.get(t.node_id, 0) + 1
        best = min(
            self._workers.values(),
            key=lambda t: (self._load(t.node_id), rooms.get(t.node_id, 0), self._order[t.node_id]),
        )
        self._rooms[room] = best
        return best

    async def forget(self, room: str, target: Target) -> None:
        if self._rooms.get(room) == target:
            del self._rooms[room]

    async def close(self) -> None:
        self._rooms.clear()
        self._workers.clear()
