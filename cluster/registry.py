"""A node's entry in Redis: who it is, where clients reach it, how loaded it is.

Keys (``prefix`` defaults to ``parley``; docs/scaling.md, "Many nodes through Redis"):

* ``{prefix}:node:{id}`` — the node's :class:`NodeLoad` as JSON, written every
  ``interval`` seconds with a TTL of ``ttl`` seconds: a node whose key expired is out;
* ``{prefix}:nodes`` — a set of node ids (no TTL; an id whose key is gone is pruned by
  whoever lists the nodes);
* ``{prefix}:drain:{id}`` — set by an operator or autoscaler (any value, no TTL needed):
  the node reports ``draining`` and gets no new rooms, its rooms stay; with the value
  ``move`` its rooms are moved to the other nodes (``cluster/redis_node.py``); deleted:
  undrained;
* ``{prefix}:pending`` — a hash node id → rooms claimed for it since its last heartbeat
  (the placement counts them as load the heartbeat does not show yet); the node resets
  its own field when it writes its load.

The heartbeat never raises: while Redis is unreachable each failed beat is retried at
the next interval and logged at most once per ``log_interval``; a beat that succeeds again
re-registers the node (the key is written whole each time, so a restarted, empty Redis
knows the node again within one interval). Redis is never on the media path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from redis.asyncio import Redis  # imported when --redis is given (setup_redis_node)


logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: seconds between two heartbeats, and how long a node key lives without one
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TTL = 3.0
#: seconds: the time constant of the CPU share's moving average
CPU_TAU = 5.0
#: seconds ``Registry.close`` waits for a beat under way
CLOSE_TIMEOUT = 2.0
#: seconds between two log lines about Redis being unreachable
LOG_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """The load a node publishes (Redis, ``/healthz``'s ``load``): one JSON object."""

    node_id: str
    #: websocket URL clients and other nodes reach this node's signaling at
    ws_url: str
    #: participants the operator says the node takes (``--capacity``)
    capacity: int
    #: process CPU, percent of one core (the SFU is one loop), averaged over about
    #: ``CPU_TAU`` seconds
    cpu_percent: float
    rooms: int
    participants: int
    published_tracks: int
    forwarders: int
    #: RTP packets forwarded to subscribers per second over the last interval
    forwarded_pps: float
    #: the node takes no new rooms (``{prefix}:drain:{id}`` is set, or it is stopping);
    #: the rooms it has stay there
    draining: bool
    #: unix time of the sample
    at: float
    #: SFU processes of the node (``parley serve --workers N``: N; one process: 1); its
    #: CPU share is of that many cores
    workers: int = 1

    @property
    def score(self) -> float:
        """What placement compares: the larger of CPU (fraction of the node's cores) and
        participants per capacity; 1.0 is full."""
        return load_score(self.cpu_percent, self.participants, self.capacity, self.workers)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeLoad:
        data = json.loads(text)
        return cls(
            node_id=str(data["node_id"]),
            ws_url=str(data["ws_url"]),
            capacity=int(data["capacity"]),
            cpu_percent=float(data["cpu_percent"]),
            rooms=int(data["rooms"]),
            participants=int(data["participants"]),
            published_tracks=int(data["published_tracks"]),
            forwarders=int(data["forwarders"]),
            forwarded_pps=float(data["forwarded_pps"]),
            draining=bool(data["draining"]),
            at=float(data["at"]),
            workers=int(data.get("workers", 1)),
        )


def load_score(cpu_percent: float, participants: int, capacity: int, workers: int = 1) -> float:
    """``cpu_percent`` is of one core; a node of ``workers`` processes has as many."""
    return max(cpu_percent / (100.0 * max(workers, 1)), participants / max(capacity, 1))


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "parley"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:pending"

    def room(self, room: str) -> str:
        return f"{self.prefix}:room:{room}"

    def drain(self, node_id: str) -> str:
        return f"{self.prefix}:drain:{node_id}"


class RateSampler:
    """CPU percent (smoothed) and forwarded packets per second between two samples.
    Pure: the caller passes the times and counters in.

    CPU readings of one second jitter by several percent on a shared host; placement
    compares nodes by them, so the CPU share is an exponentially weighted average with a
    time constant of ``cpu_tau`` seconds (starting from 0: a node that just started
    counts as idle)."""

    def __init__(self, cpu_tau: float = CPU_TAU) -> None:
        self.cpu_tau = cpu_tau
        self._last: tuple[float, float] | None = None  # (wall, cpu seconds)
        self._cpu = 0.0
        self._packets: dict[int, int] = {}

    def cpu_percent(self, now: float, cpu_seconds: float) -> float:
        last, self._last = self._last, (now, cpu_seconds)
        if last is None or now <= last[0]:
            return round(self._cpu, 1)
        elapsed = now - last[0]
        rate = 100.0 * max(cpu_seconds - last[1], 0.0) / elapsed
        self._cpu += (1.0 - math.exp(-elapsed / self.cpu_tau)) * (rate - self._cpu)
        return round(self._cpu, 1)

    def forwarded(self, elapsed: float, counts: Mapping[int, int]) -> float:
        """``counts``: packets sent so far by each live forwarder (keyed by identity);
        a forwarder new since the last sample counts whole, a departed one not at all."""
        previous, self._packets = self._packets, dict(counts)
        if elapsed <= 0:
            return 0.0
        sent = sum(max(n - previous.get(key, 0), 0) for key, n in counts.items())
        return round(sent / elapsed, 1)


class Logged:
    """Log a recurring failure at most once per ``interval`` (time passed in)."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._at: float | None = None
        self.failing = False

    def failed(self, now: float, what: str, exc: BaseException) -> None:
        if self._at is None or now - self._at >= self.interval:
            self._at = now
            logger.warning("%s: %s: %s (retrying)", what, type(exc).__name__, exc)
        self.failing = True

    def recovered(self, what: str) -> None:
        if self.failing:
            logger.info("%s: Redis reachable again", what)
        self.failing = False
        self._at = None


#: what the registry reads the node's state from (``Sfu.stats()`` and its forwarders)
StatsSource = Callable[[], Mapping[str, Any]]
PacketCounts = Callable[[], Mapping[int, int]]
#: extra work each heartbeat does on the same connection (the owner's room claims)
BeatHook = Callable[[], Awaitable[None]]
#: CPU seconds (user + system) the node's processes used so far
CpuSeconds = Callable[[], float]


class Registry:
    """Registers one node and keeps its key alive: ``start()``, ``close()``."""

    def __init__(
        self,
        redis: Redis,
        *,
        node_id: str,
        ws_url: str,
        capacity: int,
        stats: StatsSource,
        packet_counts: PacketCounts,
        keys: Keys | None = None,
        interval: float = HEARTBEAT_INTERVAL,
        ttl: float = HEARTBEAT_TTL,
        on_beat: BeatHook | None = None,
        refresh: BeatHook | None = None,
        cpu_seconds: CpuSeconds | None = None,
        workers: int = 1,
    ) -> None:
        if not 0 < interval < ttl:
            raise ValueError("need 0 < interval < ttl")
        self.redis = redis
        self.node_id = node_id
        self.ws_url = ws_url
        self.capacity = capacity
        self.keys = keys or Keys()
        self.interval = interval
        self.ttl = ttl
        #: the node is stopping (it left the cluster)
        self.stopping = False
        #: an operator or autoscaler set ``{prefix}:drain:{id}`` (read every heartbeat)
        self.drain_requested = False
        #: ... with the value ``move``: its rooms are moved to the other nodes now
        self.drain_move = False
        #: the server itself drains (``parley serve --drain-timeout``, signaling/drain.py)
        self.local_draining: Callable[[], bool] | None = None
        self.on_beat = on_beat
        #: called before each sample (a front reads its workers' counts there); must not raise
        self.refresh = refresh
        self._cpu_seconds = cpu_seconds or _cpu_seconds
        self.workers = workers
        self._stats = stats
        self._packet_counts = packet_counts
        self._sampler = RateSampler()
        self._log = Logged()
        self._last_sample_at: float | None = None
        #: the last load sampled (``/healthz`` shows it)
        self.load: NodeLoad | None = None
        self.beats = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def draining(self) -> bool:
        local = self.local_draining is not None and self.local_draining()
        return self.stopping or self.drain_requested or local

    def sample(self, now: float, cpu_seconds: float) -> NodeLoad:
        stats = self._stats()
        elapsed = 0.0 if self._last_sample_at is None else now - self._last_sample_at
        self._last_sample_at = now
        self.load = NodeLoad(
            node_id=self.node_id,
            ws_url=self.ws_url,
            capacity=self.capacity,
            cpu_percent=self._sampler.cpu_percent(now, cpu_seconds),
            rooms=int(stats.get("rooms", 0)),
            participants=int(stats.get("participants", 0)),
            published_tracks=int(stats.get("published_tracks", 0)),
            forwarders=int(stats.get("forwarders", 0)),
            forwarded_pps=self._sampler.forwarded(elapsed, self._packet_counts()),
            draining=self.draining,
            at=now,
            workers=self.workers,
        )
        return self.load

    async def beat(self) -> bool:
        """One heartbeat: read the drain flag, write the load (with its TTL) and the id,
        reset pending claims, then the hook. True if Redis took it; never raises (but for
        cancellation). The load is sampled either way (``/healthz`` shows it)."""
        try:
            flag = await self.redis.get(self.keys.drain(self.node_id))
            self.drain_requested = flag is not None
            text = flag.decode(errors="replace") if isinstance(flag, bytes) else str(flag)
            self.drain_move = flag is not None and text.strip().lower() == "move"
            if self.refresh is not None:
                await self.refresh()
            load = self.sample(time.time(), self._cpu_seconds())
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.node(self.node_id), load.to_json(), px=int(self.ttl * 1000))
                pipe.sadd(self.keys.nodes, self.node_id)
                pipe.hdel(self.keys.pending, self.node_id)
                await pipe.execute()
            if self.on_beat is not None:
                await self.on_beat()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if (
                self._last_sample_at is None
                or time.time() - self._last_sample_at > self.interval / 2
            ):
                self.sample(time.time(), self._cpu_seconds())
            self._log.failed(time.monotonic(), f"node {self.node_id} heartbeat", exc)
            return False
        self._log.recovered(f"node {self.node_id} heartbeat")
        self.beats += 1
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started = loop.time()
            await self.beat()
            with contextlib.suppress(TimeoutError):
                wait = max(self.interval - (loop.time() - started), 0.05)
                await asyncio.wait_for(self._stop.wait(), wait)

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.ensure_future(self._run())

    async def deregister(self) -> None:
        """Out of the cluster now (the node is stopping): delete its key and id."""
        self.stopping = True

        async def delete() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.node(self.node_id))
                pipe.srem(self.keys.nodes, self.node_id)
                pipe.hdel(self.keys.pending, self.node_id)
                await pipe.execute()

        with contextlib.suppress(Exception):
            await within(delete(), 0.5)

    async def close(self) -> None:
        """Stop beating. A beat under way finishes first (bounded by the client's socket
        timeouts): cancelling redis-py in the middle of a command can leave the close
        waiting on its connection; only a beat that overruns ``CLOSE_TIMEOUT`` is cancelled."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a late failure is not "never retrieved"


async def within(aw: Awaitable[_T], timeout: float) -> _T:
    """``aw``'s result, or ``TimeoutError`` after ``timeout`` seconds, without cancelling
    it: redis-py's asyncio client can be left hanging or out of step by a command
    cancelled half-way (redis/redis-py#2624, #2665), so a late call runs on until its
    socket timeout and its outcome is dropped."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.add_done_callback(_drop_outcome)
        raise TimeoutError
    return task.result()


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def live_nodes(redis: Redis, keys: Keys) -> list[NodeLoad]:
    """Every node whose key has not expired; ids whose key is gone are pruned."""
    ids = sorted(
        m.decode() if isinstance(m, bytes) else str(m) for m in await redis.smembers(keys.nodes)
    )
    if not ids:
        return []
    values = await redis.mget([keys.node(i) for i in ids])
    nodes, gone = [], []
    for node_id, value in zip(ids, values, strict=True):
        if value is None:
            gone.append(node_id)
            continue
        try:
            nodes.append(NodeLoad.from_json(value))
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring node %s: its key is not a node's load", node_id)
    if gone:
        await redis.srem(keys.nodes, *gone)
    return nodes
