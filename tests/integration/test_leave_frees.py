"""A participant that leaves frees its per-participant state: its forwarders go at once
(reference counting, no collector run), when it published its sources' packet caches
empty, and once nobody is left no source or forwarder remains; the server's idle aiortc
receivers hold no REMB estimator, and nothing keeps the participants themselves alive
(they are cycles the collector frees). Real server, real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

import aiohttp
from aiortc.rate import RemoteBitrateEstimator

from sfu.forwarder import Forwarder
from sfu.participant import Participant
from sfu.source import Source

from ._clients import Client
from .conftest import RunningServer


def count(cls: type) -> int:
    return sum(isinstance(o, cls) for o in gc.get_objects())


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def participants(server: RunningServer) -> list[Participant]:
    return [p for room in server.sfu.rooms.values() for p in room.participants.values()]


def server_estimators(server: RunningServer) -> int:
    """aiortc REMB estimators held by the server's own receivers (none: Parley reads
    the packets itself)."""
    found = 0
    for p in participants(server):
        for pc in (p.publish_side.pc, p.subscribe_side.pc):
            for transceiver in pc.getTransceivers() if pc is not None else ():
                held = vars(transceiver.receiver).values()
                found += sum(isinstance(v, RemoteBitrateEstimator) for v in held)
    return found


async def test_leaving_frees_forwarders_sources_and_caches(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        clients: list[Client] = []
        try:
            pub = await Client(http, server.url).connect()
            clients.append(pub)
            await pub.join("leave", "pub")
            await pub.publish()
            subs = []
            for name in ("s1", "s2"):
                sub = await Client(http, server.url, answer=True).connect()
                clients.append(sub)
                await sub.join("leave", name)
                subs.append(sub)

            async def receiving() -> bool:
                return min([await s.packets_received() for s in subs]) > 20

            async with asyncio.timeout(30):
                while not await receiving():
                    await asyncio.sleep(0.1)
            assert len(participants(server)) == 3
            assert count(Source) == 2 and count(Forwarder) == 4  # audio + video, to each
            sources = [o for o in gc.get_objects() if isinstance(o, Source)]
            caches = [s.cache for s in sources]
            assert sum(len(c) for c in caches) > 20
            del sources
            assert server_estimators(server) == 0
            left = [weakref.ref(p) for p in participants(server)]

            await subs[0].close()  # one subscriber leaves
            await until(lambda: len(participants(server)) == 2)
            assert count(Forwarder) == 2 and count(Source) == 2

            await pub.close()  # the publisher leaves: its sources go, their caches empty
            await until(lambda: len(participants(server)) == 1)
            assert [len(c) for c in caches] == [0, 0]
            # s2 keeps its m-lines' last forwarders (and their closed sources) for the
            # next tracks they carry, continuing their sequence numbers
            assert all(s.closed for s in gc.get_objects() if isinstance(s, Source))

            await subs[1].close()
            await until(lambda: not server.sfu.rooms)
            assert count(Source) == 0 and count(Forwarder) == 0

            def all_freed() -> bool:  # once each close (peer connections too) is done
                gc.collect()  # participants are cycles (callbacks); nothing else holds them
                return [r() for r in left] == [None, None, None]

            await until(all_freed)
        finally:
            for client in clients:
                await client.close()
