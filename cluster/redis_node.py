"""``parley serve --redis URL --node-url ws://addr:port/ws``: this process as one node of a
cluster that shares a Redis (docs/scaling.md, "Many nodes through Redis").

:func:`setup_redis_node` adds to the application (before it runs):

* the registry (``cluster/registry.py``): the node's load in Redis every second, with a
  TTL of three, and in ``/healthz`` (``load``);
* the route (``ServerConfig.route``): a ``join`` for a room another live node owns is
  answered ``redirect`` to that node's URL (the one place that decides it); an unowned
  room is placed by :class:`~cluster.redis_placement.RedisPlacement` (two random
  choices, lowest load) and served here or redirected. While Redis cannot be reached,
  joins are served here (availability first; the rooms are reconciled when it is back);
* every heartbeat, the claims on the rooms this node serves are refreshed; a room that
  another live node took meanwhile (Redis lost its keys, two nodes placed it at once)
  is moved: its participants here get ``left`` and rejoin through their entry URL;
* a node that drains moves its clients off: when it starts draining (SIGTERM with
  ``--drain-timeout``: ``signaling/drain.py``; or ``{prefix}:drain:{id}`` set to ``move``
  in Redis) it writes ``draining: true`` at once (placement skips it), claims each of its
  rooms for another node (:meth:`RedisPlacement.move`), and tells the room's clients
  ``server_shutdown`` (reconnect, ``retry_after_ms`` 0); their rejoins, through any
  entry (this node included: while it moves, a join here is redirected to the room's new
  owner), land on that node. A room no other node can take stays (as on one server);
* at shutdown (SIGTERM), before clients are told ``server_shutdown``: the node leaves
  Redis and moves its rooms the same way (released when no other node takes them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from aiohttp import web

from sfu.pipe_import import is_piped
from sfu.room import Sfu
from signaling.drain import DRAINING_KEY, is_draining
from signaling.server import CONFIG_KEY, SESSIONS_KEY, SFU_KEY, Session

from .node_spread import NodeSpread
from .placement import Target
from .redis_placement import RedisPlacement
from .registry import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TTL,
    Keys,
    Logged,
    NodeLoad,
    Registry,
    within,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis  # imported when --redis is given (setup_redis_node)

logger = logging.getLogger(__name__)

_N = TypeVar("_N", bound="RedisNode")

#: seconds one routing decision may wait for Redis before the join is served here
ROUTE_TIMEOUT = 0.5
#: seconds a probe of another node's address may take (``listening``)
PROBE_TIMEOUT = 0.3
#: ``left``'s reason for a participant whose room another node took
MOVED_REASON = "room moved to another node"
#: participants a node takes by default (its ``capacity`` in the load)
DEFAULT_CAPACITY = 200
#: ``server_shutdown``'s reason for a client whose room a draining node moved away
MOVE_REASON = "this node is draining: rejoin to continue on another"
#: seconds moving the rooms off a draining node may wait for Redis (all rooms)
MOVE_TIMEOUT = 2.0


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (many nodes through Redis)")
    group.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="join a cluster of nodes sharing this Redis, e.g. redis://10.0.0.5:6379/0 "
        "(default: none, a single node)",
    )
    group.add_argument(
        "--node-url",
        metavar="WS_URL",
        default=None,
        help="with --redis: the websocket URL clients and other nodes reach this node at, "
        "e.g. ws://10.0.0.7:8080/ws (default: from --host and --port when both are concrete)",
    )
    group.add_argument(
        "--node-id", default=None, help="with --redis: this node's id (default: host-random)"
    )
    group.add_argument(
        "--capacity",
        type=_capacity,
        default=DEFAULT_CAPACITY,
        metavar="N",
        help=f"with --redis: participants this node takes (default {DEFAULT_CAPACITY}); "
        "load = max(CPU share of a core, participants / N)",
    )
    group.add_argument(
        "--redis-prefix", default="parley", help="with --redis: key prefix (default parley)"
    )
    group.add_argument(
        "--node-spread",
        action="store_true",
        help="with --redis: serve a join on the node it reaches, piping the room to its "
        "other nodes (one room over several nodes; default: redirect to the room's node)",
    )
    group.add_argument(
        "--node-spread-after",
        type=_capacity,
        default=None,
        metavar="K",
        help="with --node-spread: a node holding K of a room's participants redirects the "
        "room's next joins to another node, which pipes the room (default: never)",
    )


def _capacity(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def redis_arguments_error(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--redis`` and ``--node-url`` (None: nothing, or no ``--redis``)."""
    if getattr(args, "node_spread_after", None) and not getattr(args, "node_spread", False):
        return "--node-spread-after needs --node-spread"
    if getattr(args, "node_spread", False) and not args.redis:
        return "--node-spread needs --redis"
    if not args.redis:
        return None
    if getattr(args, "node_spread", False) and getattr(args, "workers", None):
        return "--node-spread is for nodes of one process (not with --workers) for now"
    if urlsplit(args.redis).scheme not in ("redis", "rediss", "unix"):
        return f"--redis {args.redis!r} is not a redis://, rediss:// or unix:// URL"
    try:
        node_url(args)
    except ValueError as exc:
        return str(exc)
    return None


def node_url(args: argparse.Namespace) -> str:
    """``--node-url``, or ``ws://host:port/ws`` from a concrete ``--host`` and ``--port``."""
    if args.node_url:
        url = urlsplit(args.node_url)
        if url.scheme not in ("ws", "wss") or not url.netloc:
            raise ValueError(f"--node-url {args.node_url!r} is not a ws:// or wss:// URL")
        return str(args.node_url)
    if args.host in ("0.0.0.0", "::", "") or args.port == 0:
        raise ValueError("--redis needs --node-url (the address clients reach this node at)")
    host = f"[{args.host}]" if ":" in args.host else args.host
    return f"ws://{host}:{args.port}/ws"


class RedisNode:
    """The registry, the placement and the route of one node; lives with the app.

    What the node serves is read through a few methods (:meth:`served_rooms`,
    :meth:`serves`, :meth:`end_room`, :meth:`shutdown_rooms`, the stats): here one
    process's SFU and sessions; a front of workers (``cluster/front_node.py``) overrides
    them with its relayed sessions."""

    def __init__(
        self,
        redis: Redis,
        node_id: str,
        ws_url: str,
        capacity: int,
        keys: Keys,
        **registry: Any,
    ) -> None:
        self.redis = redis
        self.node_id = node_id
        self.ws_url = ws_url
        self.keys = keys
        self.placement = RedisPlacement(
            redis, keys, room_ttl=HEARTBEAT_TTL, self_id=node_id, probe=listening
        )
        self.sfu: Sfu | None = None
        #: with ``--node-spread``: the rooms shared with other nodes (cluster/node_spread.py)
        self.spread: NodeSpread | None = None
        #: ``--node-spread-after K``: a node holding K of a room's participants sends the
        #: room's next joins to another node (0: never)
        self.spread_after = 0
        self.registry = Registry(
            redis,
            node_id=node_id,
            ws_url=ws_url,
            capacity=capacity,
            stats=self._stats,
            packet_counts=self._packet_counts,
            keys=keys,
            interval=HEARTBEAT_INTERVAL,
            ttl=HEARTBEAT_TTL,
            on_beat=self._hold_rooms,
            **registry,
        )
        self._route_log = Logged()
        #: the node drains and moves its rooms away (joins here are routed, never served
        #: here unless no other node takes the room)
        self.moving = False
        #: rooms moved off, room → the ws URL of the node that took it
        self.moved: dict[str, str] = {}
        #: the server's sessions (set by :func:`setup_redis_node`)
        self.sessions: Callable[[], Iterable[Session]] = lambda: ()
        #: ``server_shutdown``'s grace for a moved client (the server's own)
        self.shutdown_grace = 0.3

    # ------------------------------------------------------------ what the node serves

    @property
    def ready(self) -> bool:
        """The node serves (its SFU exists)."""
        return self.sfu is not None

    def served_rooms(self) -> list[str]:
        """Rooms with a participant connected here (one with only remote publishers,
        piped from other nodes, is theirs)."""
        if self.sfu is None:
            return []
        return [r for r, room in self.sfu.rooms.items() if self.local_participants(r) > 0]

    def serves(self, room: str) -> bool:
        return self.local_participants(room) > 0

    def local_participants(self, room_id: str) -> int:
        room = self.sfu.rooms.get(room_id) if self.sfu is not None else None
        if room is None:
            return 0
        return sum(1 for p in room.participants.values() if not is_piped(p))

    async def end_room(self, room_id: str) -> None:
        """Another node took the room: its participants here leave (they rejoin there)."""
        room = self.sfu.rooms.get(room_id) if self.sfu is not None else None
        if room is not None:
            for participant in list(room.participants.values()):
                await participant.close(MOVED_REASON)

    async def shutdown_rooms(self, rooms: Mapping[str, str]) -> int:
        """The clients of ``rooms`` are told ``server_shutdown`` (rejoin now); returns
        how many."""
        sessions = [
            s
            for s in self.sessions()
            if s.participant is not None and s.participant.room.id in rooms
        ]
        await asyncio.gather(
            *(s.shutdown(MOVE_REASON, 0, self.shutdown_grace) for s in sessions),
            return_exceptions=True,
        )
        return len(sessions)

    def _stats(self) -> Mapping[str, Any]:
        return self.sfu.stats() if self.sfu is not None else {}

    def _packet_counts(self) -> Mapping[int, int]:
        if self.sfu is None:
            return {}
        return {
            id(s.forwarder): s.forwarder.packets_sent
            for room in self.sfu.rooms.values()
            for p in room.participants.values()
            for s in p.subscriptions.values()
        }

    def health(self) -> Mapping[str, object]:
        load = self.registry.load
        return {"load": dataclasses.asdict(load)} if load is not None else {}

    async def route(self, room: str) -> str | None:
        """The URL of the node serving ``room``, or None to serve it here."""
        if self.registry.stopping and not self.moving:
            return None
        after = self.spread_after
        if after and self.spread is not None and not self.moving and not self.registry.draining:
            if self.local_participants(room) >= after:  # --node-spread-after: full here
                try:
                    spill = await within(self.spread.spill_target(room, after), ROUTE_TIMEOUT)
                except Exception as exc:
                    self._route_log.failed(time.monotonic(), "spilling a room", exc)
                    spill = None
                if spill is not None:
                    return spill.ws_url
        if self.serves(room) and not self.moving:
            return None  # served here now: its claim is this node's (kept by the heartbeat)

        async def locate() -> tuple[str | None, Target]:
            prior = await self.placement.owner(room) if self.spread is not None else None
            return prior, await self.placement.place(room)

        try:
            prior, target = await within(locate(), ROUTE_TIMEOUT)
        except Exception as exc:
            self._route_log.failed(time.monotonic(), "placing a room", exc)
            # Redis is down (or no node registered yet): serve here, unless the room was
            # moved off this draining node
            return self.moved.get(room)
        self._route_log.recovered("placing a room")
        if target.node_id == self.node_id:
            return None
        spreads = self.spread is not None and not self.moving and not self.registry.draining
        if spreads and self.spread is not None and prior == target.node_id:
            # --node-spread, a room that lives elsewhere (a new room goes where placement
            # put it): served here, the room piped to its other nodes
            try:
                await self.spread.join_here(room, target)
                return None
            except Exception as exc:
                logger.warning("room %s: piping to node %s failed (%r): redirecting", room,
                               target.node_id, exc)  # fmt: skip
        return target.ws_url

    async def _hold_rooms(self) -> None:
        if not self.ready or self.registry.stopping:
            return
        if self.registry.drain_move and not self.moving:
            await self.move_rooms()  # an operator asked (``{prefix}:drain:{id}`` = move)
        elif self.moving and not self.registry.draining:
            logger.info("node %s is not draining any more: it takes rooms again", self.node_id)
            self.moving = False
            self.moved.clear()
        rooms = [room for room in self.served_rooms() if room not in self.moved]
        lost = await self.placement.hold(self.node_id, rooms)
        for room_id, url in lost.items():
            if not self.serves(room_id) or (
                self.spread is not None and self.spread.shares(room_id)
            ):
                continue  # (a member of a room another node owns: --node-spread)
            logger.warning("room %s is served by %s now: moving its participants", room_id, url)
            await self.end_room(room_id)
        if self.spread is not None:
            await self.spread.beat(rooms, time.monotonic())

    async def move_rooms(self) -> dict[str, str]:
        """The node drains: each room served here is claimed for another node and its
        clients are told ``server_shutdown`` (rejoin now); from now on a join here is
        routed. Returns the rooms moved by this call (room → the new owner's URL)."""
        self.moving = True
        if not self.ready:
            return {}
        rooms = [room for room in self.served_rooms() if room not in self.moved]
        moved: dict[str, str] = {}

        async def one(room: str) -> None:
            target = await self.placement.move(room, self.node_id)
            if target is not None:
                moved[room] = target.ws_url

        try:
            await within(asyncio.gather(*(one(room) for room in rooms)), MOVE_TIMEOUT)
        except Exception as exc:  # Redis is slow or gone: what was claimed is moved
            logger.warning("node %s: moving rooms failed: %r", self.node_id, exc)
        taken = dict(moved)  # a claim finishing late is not acted on
        self.moved.update(taken)
        clients = await self.shutdown_rooms(taken)
        logger.info("node %s drains: %d room(s) moved (%d client(s)), %d stay", self.node_id,
                    len(taken), clients, len(rooms) - len(taken))  # fmt: skip
        return taken

    async def leave(self) -> None:
        """Out of the cluster (the node stops): its key, and its rooms moved to the other
        nodes (their claims released where no other node takes them)."""
        self.registry.stopping = True
        await self.registry.close()
        await self.registry.deregister()
        if self.ready:
            with contextlib.suppress(Exception):
                await self.move_rooms()
            target = Target(self.ws_url, self.node_id)
            rooms = [room for room in self.served_rooms() if room not in self.moved]
            forget = asyncio.gather(*(self.placement.forget(room, target) for room in rooms))
            with contextlib.suppress(Exception):  # Redis is gone: the keys expire on their own
                await within(forget, 0.5)

    async def close(self) -> None:
        await self.registry.close()
        await self.placement.close()
        if self.spread is not None:
            await self.spread.close()
        await self.redis.aclose()


async def listening(node: NodeLoad) -> bool:
    """False only when ``node``'s address refuses a TCP connection (the process is gone);
    a timeout or any other error says nothing and counts as up."""
    url = urlsplit(node.ws_url)
    port = url.port or (443 if url.scheme == "wss" else 80)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(url.hostname, port)
    except ConnectionRefusedError:
        return False
    except (OSError, TimeoutError):
        return True
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


def new_node(args: argparse.Namespace, node_class: type[_N], **registry: Any) -> _N:
    """The node ``--redis``, ``--node-url``, ``--node-id``... describe (not started)."""
    from redis.asyncio import Redis  # here: a server without --redis never loads it

    redis = Redis.from_url(
        args.redis, socket_timeout=ROUTE_TIMEOUT, socket_connect_timeout=ROUTE_TIMEOUT
    )
    node_id = args.node_id or f"{socket.gethostname()}-{secrets.token_hex(3)}"
    keys = Keys(args.redis_prefix)
    return node_class(redis, node_id, node_url(args), args.capacity, keys, **registry)


def run_node(
    app: web.Application, node: RedisNode, redis_url: str, serving: Callable[[], None]
) -> None:
    """Tie ``node`` to ``app``'s life: registered once ``serving()`` ran (after the
    contexts before this one: the SFU, or the front's workers), rooms moved off when the
    app drains, out of Redis at shutdown before clients hear ``server_shutdown``."""

    async def move_when_draining() -> None:
        await app[DRAINING_KEY].wait()  # parley serve --drain-timeout, after SIGTERM
        await node.registry.beat()  # draining: true in Redis now, not at the next beat
        await node.move_rooms()

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        serving()
        if node.spread is not None:
            try:
                await within(node.spread.start(), ROUTE_TIMEOUT)
            except Exception as exc:  # Redis down: the key is read again at a heartbeat
                logger.warning("node %s: no cluster key yet: %r", node.node_id, exc)
        node.registry.local_draining = lambda: is_draining(app)
        await node.registry.beat()  # registered before the first client arrives
        node.registry.start()
        logger.info("node %s registered in Redis at %s as %s", node.node_id, redis_url,
                    node.ws_url)  # fmt: skip
        mover = asyncio.ensure_future(move_when_draining())
        yield
        mover.cancel()
        await asyncio.gather(mover, return_exceptions=True)
        await node.close()

    async def on_shutdown(app: web.Application) -> None:
        await node.leave()

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.insert(0, on_shutdown)  # before the sessions hear server_shutdown


def setup_redis_node(app: web.Application, args: argparse.Namespace) -> RedisNode | None:
    """With ``--redis``: make the application a node of the cluster (no-op without)."""
    if not args.redis:
        return None
    node = new_node(args, RedisNode)
    # a client of a stopping node rejoins at once: another node takes its room
    app[CONFIG_KEY] = dataclasses.replace(
        app[CONFIG_KEY], route=node.route, health=node.health, shutdown_retry_after_ms=0
    )
    node.shutdown_grace = app[CONFIG_KEY].shutdown_grace

    def sessions() -> list[Session]:
        return list(cast("set[Session]", app[SESSIONS_KEY]))

    node.sessions = sessions

    def serving() -> None:
        node.sfu = app[SFU_KEY]  # the SFU's context ran before this one

    if args.node_spread:  # one room over several nodes: pipes between them
        from .worker_pipes import WORKER_PIPES_KEY, add_worker_pipe_routes

        host = socket.gethostbyname(urlsplit(node.ws_url).hostname or "127.0.0.1")
        spread: list[NodeSpread] = []
        add_worker_pipe_routes(
            app, lambda: spread[0].key if spread else None, host=host, srtp=args.pipe_srtp
        )
        me = Target(node.ws_url, node.node_id)
        spread.append(NodeSpread(node.redis, node.keys, me, app[WORKER_PIPES_KEY],
                                 node.local_participants, probe=listening))  # fmt: skip
        node.spread = spread[0]
        node.spread_after = args.node_spread_after or 0

    run_node(app, node, args.redis, serving)
    return node
