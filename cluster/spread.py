"""One room over several workers of a host (``parley serve --workers N --spread``).

:class:`SpreadPlacement` places each *join*, not each room: a room stays on its worker
while that worker holds fewer than ``after`` of the room's participants; the next join
goes to the least-loaded live worker, and if that one is new to the room, the front pipes
it to every other worker of the room first (:class:`PipeLinker`, through each worker's
``/_parley/pipes`` routes, ``cluster/worker_pipes.py``): each side exports the room down
the pipe, so every publisher on one worker is a remote publisher on the others
(``sfu/pipe.py``), with its every simulcast layer, NACK, PLI and REMB flowing back.
``--spread`` is ``--spread-after 1``: every join goes to the least-loaded worker.

When a worker's last session of a room ends, the room's pipes to it stop exporting the
room both ways (its remote publishers leave). When a worker dies, the others close their
pipes to it at once (its publishers leave their rooms there), and its clients rejoin
(``server_shutdown`` from the front) on the remaining workers of their rooms.

It has the interface of :class:`cluster.local_placement.LocalPlacement` (the front uses
either): ``worker_up``/``worker_down``, ``live``, ``rooms_of``, ``owner`` (the room's
first worker: where the admin API goes), ``place``/``forget``/``close``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from .local_placement import NoLiveWorker
from .pipe_auth import SIGNATURE_HEADER, sign
from .placement import Target, http_base
from .worker_pipes import PREFIX

logger = logging.getLogger(__name__)

#: seconds a worker has to answer one pipe request
PIPE_REQUEST_TIMEOUT = 3.0


def add_spread_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--spread",
        action="store_const",
        const=1,
        dest="spread_after",
        help="with --workers: place every join on the least-loaded worker, one room "
        "spread over several workers joined by pipes (docs/scaling.md)",
    )
    group.add_argument(
        "--spread-after",
        type=int,
        default=None,
        metavar="K",
        help="with --workers: a room stays on its worker until that worker holds K of its "
        "participants; later joins go to the least-loaded worker (default: never)",
    )
    parser.add_argument(
        "--pipe-srtp",
        action="store_true",
        help="with --spread: SRTP on the pipes between workers, control messages "
        "authenticated (default: plain RTP, loopback being trusted; docs/scaling.md)",
    )


class PipeLinker:
    """Asks workers, over HTTP signed with the front's key (``cluster/pipe_auth.py``), to
    pipe a room between them; the SRTP keys their ``open`` answers carry are sealed, and
    passed on to the peer's ``connect`` as they are."""

    def __init__(self, http: Callable[[], aiohttp.ClientSession], key: str) -> None:
        self._http = http
        self._key = key

    async def _post(self, worker: Target, action: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"{PREFIX}/{action}"
        data = json.dumps(body).encode()
        signature = sign(self._key, "POST", path, data, time.time())
        async with self._http().post(
            f"{http_base(worker.ws_url)}{path}",
            data=data,
            headers={SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=PIPE_REQUEST_TIMEOUT),
        ) as response:
            if response.status != 200:
                text = await response.text()
                raise RuntimeError(f"{worker.node_id} {action}: {response.status} {text}")
            answer: dict[str, Any] = await response.json()
            return answer

    async def link(self, room: str, a: Target, b: Target) -> None:
        """Pipe ``room`` between workers ``a`` and ``b``, both ways."""
        opened = await asyncio.gather(
            self._post(a, "open", {"peer": b.node_id}), self._post(b, "open", {"peer": a.node_id})
        )
        (address_a, key_a), (address_b, key_b) = ((o["address"], o.get("key")) for o in opened)
        await asyncio.gather(
            self._post(a, "connect", {"peer": b.node_id, "address": address_b, "key": key_b}),
            self._post(b, "connect", {"peer": a.node_id, "address": address_a, "key": key_a}),
        )
        await asyncio.gather(
            self._post(a, "export", {"peer": b.node_id, "room": room}),
            self._post(b, "export", {"peer": a.node_id, "room": room}),
        )

    async def unlink(self, room: str, a: Target, b: Target) -> None:
        """Stop piping ``room`` between ``a`` and ``b`` (best effort: either may be gone)."""
        await asyncio.gather(
            self._post(a, "unexport", {"peer": b.node_id, "room": room}),
            self._post(b, "unexport", {"peer": a.node_id, "room": room}),
            return_exceptions=True,
        )

    async def drop(self, dead: str, others: list[Target]) -> None:
        """Worker ``dead`` is gone: the others close their pipes to it (best effort)."""
        await asyncio.gather(
            *(self._post(o, "close", {"peer": dead}) for o in others), return_exceptions=True
        )


class SpreadPlacement:
    """Placement per join: see the module's text."""

    def __init__(
        self,
        linker: PipeLinker,
        after: int,
        load: Callable[[str], int],
        room_load: Callable[[str, str], int],
    ) -> None:
        self.linker = linker
        self.after = max(1, after)
        self._load = load
        self._room_load = room_load
        self._workers: dict[str, Target] = {}
        self._order: dict[str, int] = {}
        #: the workers of each room, first (the owner) first
        self._rooms: dict[str, dict[str, Target]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: pipes linked (room, worker pair) so far, for tests and /healthz
        self.links = 0

    # ------------------------------------------------------------ workers

    def worker_up(self, target: Target) -> None:
        self._order.setdefault(target.node_id, len(self._order))
        self._workers[target.node_id] = target

    def worker_down(self, node_id: str) -> list[str]:
        """The worker died: out of every room; returns the rooms left with no worker."""
        self._workers.pop(node_id, None)
        lost = []
        for room, workers in list(self._rooms.items()):
            if workers.pop(node_id, None) is not None and not workers:
                del self._rooms[room]
                lost.append(room)
        self._spawn(self.linker.drop(node_id, list(self._workers.values())))
        return lost

    @property
    def live(self) -> list[Target]:
        return sorted(self._workers.values(), key=lambda t: self._order[t.node_id])

    def rooms_of(self, node_id: str) -> list[str]:
        return [room for room, workers in self._rooms.items() if node_id in workers]

    def workers_of(self, room: str) -> list[Target]:
        return list(self._rooms.get(room, {}).values())

    def owner(self, room: str) -> Target | None:
        return next(iter(self._rooms.get(room, {}).values()), None)

    # ------------------------------------------------------------ Placement

    def _rank(self, target: Target) -> tuple[int, int, int]:
        rooms = sum(1 for workers in self._rooms.values() if target.node_id in workers)
        return self._load(target.node_id), rooms, self._order[target.node_id]

    async def place(self, room: str) -> Target:
        lock = self._locks.setdefault(room, asyncio.Lock())
        async with lock:  # one join of a room at a time: its links finish first
            if not self._workers:
                raise NoLiveWorker("no worker is running")
            here = {n: t for n, t in self._rooms.get(room, {}).items() if self._workers.get(n) == t}
            if here:
                fill = min(here.values(), key=lambda t: (self._room_load(room, t.node_id),
                                                         self._rank(t)))  # fmt: skip
                if self._room_load(room, fill.node_id) < self.after:
                    return fill
            best = min(self._workers.values(), key=self._rank)
            if best.node_id not in here:
                for other in here.values():  # a pipe from the new worker to each other one
                    await self.linker.link(room, other, best)
                    self.links += 1
                    logger.info("room %r piped between %s and %s", room, other.node_id,
                                best.node_id)  # fmt: skip
                here[best.node_id] = best
                self._rooms[room] = here
            return best

    async def forget(self, room: str, target: Target) -> None:
        """``target``'s last session of ``room`` ended (or it did not answer)."""
        workers = self._rooms.get(room)
        if workers is None or workers.get(target.node_id) != target:
            return
        del workers[target.node_id]
        if not workers:
            del self._rooms[room]
            self._locks.pop(room, None)
            return
        # (a copy: another worker's last session may end while this awaits, and its
        # own ``forget`` takes it out of ``workers``)
        for other in list(workers.values()):
            await self.linker.unlink(room, other, target)

    def _spawn(self, work: Any) -> None:
        try:
            task = asyncio.ensure_future(work)
        except RuntimeError:  # no running loop (closing): nothing to tell
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._rooms.clear()
        self._workers.clear()
