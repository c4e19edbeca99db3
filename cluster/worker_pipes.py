"""A worker's pipes to the other workers of its host, opened on the front's word.

When the front (``cluster/front.py``) spreads a room over several workers
(``cluster/spread.py``), it asks each worker of the room, over HTTP on the worker's own
port, to open a pipe (``sfu/pipe.py``) to each other one and to export the room down it:
every publisher of the room on one worker then is a remote publisher on the others, and
their subscribers get it like any other. The routes exist only on a worker (started by a
front, which gave it its key) and answer only requests signed with that key
(``X-Parley-Signature``, ``cluster/pipe_auth.py``: the key itself never travels):

* ``POST /_parley/pipes/open`` ``{"peer": "w1"}`` → ``{"address": [host, port], "key"}``:
  the pipe to that worker (one per pair, reused by every room), listening on loopback;
  ``key`` is its SRTP key with ``--pipe-srtp`` (``sfu/pipe_srtp.py``), sealed under the
  shared key (``pipe_auth.seal``), else null;
* ``POST /_parley/pipes/connect`` ``{"peer", "address", "key"}``: where the peer's pipe
  listens, and its key as the peer's ``open`` sealed it;
* ``POST /_parley/pipes/export`` / ``unexport`` ``{"peer", "room"}``: follow a room
  down the pipe (every publisher there, now and later) or stop;
* ``POST /_parley/pipes/close`` ``{"peer"}``: the peer died (its remote publishers leave
  at once, not after the pipe's 5 s of silence);
* ``GET /_parley/pipes``: each pipe's counters (``PipeTransport.stats``);
* ``GET /_parley/load``: what the worker adds to its node's load in Redis
  (``cluster/front_node.py``): its own participants (remote publishers left out: they
  are counted on their own worker), their published tracks, its forwarders, and the
  packets each live forwarder sent so far (for the node's forwarded packets per second).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from cluster.pipe_auth import SIGNATURE_HEADER, seal, unseal, verify
from sfu.pipe import PipeError, PipeTransport
from sfu.pipe_import import is_piped
from sfu.room import Sfu
from signaling.admin import set_muted
from signaling.server import SFU_KEY

logger = logging.getLogger(__name__)

PREFIX = "/_parley/pipes"
LOAD_PATH = "/_parley/load"


def worker_load(sfu: Sfu) -> dict[str, Any]:
    """The body of ``GET /_parley/load`` (see the module's text)."""
    everyone = [p for room in sfu.rooms.values() for p in room.participants.values()]
    local = [p for p in everyone if not is_piped(p)]
    return {
        "participants": len(local),
        "published_tracks": sum(len(p.tracks) for p in local),
        "forwarders": sum(len(p.subscriptions) for p in everyone),
        "packets": {
            str(id(s.forwarder)): s.forwarder.packets_sent
            for p in everyone
            for s in p.subscriptions.values()
        },
    }


class WorkerPipes:
    """The pipes of one worker, by the peer worker's node id."""

    def __init__(self, sfu: Callable[[], Sfu], host: str = "127.0.0.1", srtp: bool = False) -> None:
        #: the SFU (it exists once the application has started)
        self.sfu = sfu
        self.host = host
        #: SRTP on every pipe (``parley serve --pipe-srtp``)
        self.srtp = srtp
        self.pipes: dict[str, PipeTransport] = {}

    async def open(self, peer: str) -> PipeTransport:
        pipe = self.pipes.get(peer)
        if pipe is None or pipe.closed:
            pipe = await PipeTransport.open(self.sfu(), (self.host, 0), srtp=self.srtp)
            pipe.set_muted = set_muted  # an operator's mute on the origin: clients told here

            def closed(reason: str, peer: str = peer, pipe: PipeTransport = pipe) -> None:
                if self.pipes.get(peer) is pipe:
                    del self.pipes[peer]

            pipe.on_closed = closed
            self.pipes[peer] = pipe
        return pipe

    def _pipe(self, peer: str) -> PipeTransport:
        pipe = self.pipes.get(peer)
        if pipe is None or pipe.closed:
            raise web.HTTPConflict(text=f"no pipe to {peer!r}: open it first")
        return pipe

    def connect(self, peer: str, address: tuple[str, int], key: bytes | None) -> None:
        try:
            self._pipe(peer).connect(address, key)
        except ValueError as exc:  # SRTP on one end only, or a bad key
            raise web.HTTPBadRequest(text=str(exc)) from exc

    async def export(self, peer: str, room: str) -> None:
        try:
            await self._pipe(peer).export_room(room)
        except PipeError as exc:
            raise web.HTTPConflict(text=str(exc)) from exc

    def unexport(self, peer: str, room: str) -> None:
        pipe = self.pipes.get(peer)
        if pipe is not None and not pipe.closed:
            pipe.unexport_room(room)

    async def close_peer(self, peer: str, reason: str = "the peer worker stopped") -> None:
        pipe = self.pipes.pop(peer, None)
        if pipe is not None:
            await pipe.close(reason)

    def stats(self) -> dict[str, Any]:
        return {peer: pipe.stats() for peer, pipe in self.pipes.items()}

    async def close(self) -> None:
        for peer in list(self.pipes):
            await self.close_peer(peer, "pipe closed")


WORKER_PIPES_KEY = web.AppKey("parley_worker_pipes", WorkerPipes)


#: the key a caller must send: the front's, or a cluster's (read once Redis answers)
Key = str | Callable[[], str | None]


def _expected(key: Key) -> str:
    expected = key() if callable(key) else key
    if expected is None:
        raise web.HTTPForbidden(text="no key yet: this node has not joined its cluster")
    return expected


async def _checked(request: web.Request, key: Key) -> WorkerPipes:
    """The worker's pipes, for a request signed with ``key`` (403 otherwise)."""
    expected = _expected(key)
    body = await request.read()
    signature = request.headers.get(SIGNATURE_HEADER)
    if not verify(expected, signature, request.method, request.path, body, time.time()):
        raise web.HTTPForbidden(text="a request signed with the front's key is required")
    return request.app[WORKER_PIPES_KEY]


async def _body(request: web.Request, *fields: str) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text="a JSON object is required") from exc
    if not isinstance(body, dict) or any(not isinstance(body.get(f), str) for f in fields):
        raise web.HTTPBadRequest(text=f"a JSON object with string fields {list(fields)}")
    return body


def add_worker_pipe_routes(
    app: web.Application, key: Key, host: str = "127.0.0.1", srtp: bool = False
) -> None:
    """The pipe routes of a worker (``signaling.server.setup_parley`` done) whose front
    holds ``key`` (or of a node of a cluster, ``cluster/node_spread.py``: its pipes
    listen on ``host``); the pipes close when the application shuts down, before the SFU."""
    app[WORKER_PIPES_KEY] = WorkerPipes(lambda: app[SFU_KEY], host=host, srtp=srtp)

    async def open_(request: web.Request) -> web.Response:
        pipes = await _checked(request, key)
        body = await _body(request, "peer")
        pipe = await pipes.open(body["peer"])
        host, port = pipe.local_address
        sealed = seal(_expected(key), pipe.key) if pipe.key is not None else None
        return web.json_response({"address": [host, port], "key": sealed})

    async def connect(request: web.Request) -> web.Response:
        pipes = await _checked(request, key)
        body = await _body(request, "peer")
        address = body.get("address")
        if not (
            isinstance(address, list)
            and len(address) == 2
            and isinstance(address[0], str)
            and isinstance(address[1], int)
        ):
            raise web.HTTPBadRequest(text="address must be [host, port]")
        sealed = body.get("key")
        try:
            peer_key = unseal(_expected(key), sealed) if isinstance(sealed, str) else None
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"key: {exc}") from exc
        if sealed is not None and not isinstance(sealed, str):
            raise web.HTTPBadRequest(text="key must be a sealed key or null")
        pipes.connect(body["peer"], (address[0], address[1]), peer_key)
        return web.json_response({})

    async def export(request: web.Request) -> web.Response:
        pipes = await _checked(request, key)
        body = await _body(request, "peer", "room")
        await pipes.export(body["peer"], body["room"])
        return web.json_response({})

    async def unexport(request: web.Request) -> web.Response:
        pipes = await _checked(request, key)
        body = await _body(request, "peer", "room")
        pipes.unexport(body["peer"], body["room"])
        return web.json_response({})

    async def close(request: web.Request) -> web.Response:
        pipes = await _checked(request, key)
        body = await _body(request, "peer")
        await pipes.close_peer(body["peer"])
        return web.json_response({})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response((await _checked(request, key)).stats())

    async def load(request: web.Request) -> web.Response:
        await _checked(request, key)
        return web.json_response(worker_load(request.app[SFU_KEY]))

    async def cleanup(app: web.Application) -> None:
        await app[WORKER_PIPES_KEY].close()

    app.on_shutdown.insert(0, cleanup)  # before the SFU closes: the peers hear "bye"
    app.router.add_post(f"{PREFIX}/open", open_)
    app.router.add_post(f"{PREFIX}/connect", connect)
    app.router.add_post(f"{PREFIX}/export", export)
    app.router.add_post(f"{PREFIX}/unexport", unexport)
    app.router.add_post(f"{PREFIX}/close", close)
    app.router.add_get(PREFIX, stats)
    app.router.add_get(LOAD_PATH, load)
