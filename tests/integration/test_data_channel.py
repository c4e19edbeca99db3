"""End to end: data channel messages between real aiortc bots through the server's
SCTP data channels (docs/protocol.md, "Data channel")."""

from __future__ import annotations

import asyncio
from typing import Any

from loadgen.bot import Bot, BotConfig
from sfu.config import SfuConfig
from sfu.datachannel import DataLimits
from signaling.server import ServerConfig

from ._wait import until
from .conftest import ServerFactory

#: the server's limits here: the default size, and at most 20 messages at once
LIMITS = DataLimits(messages_per_second=4.0, message_burst=20.0)


def _got(bot: Bot, sender: Bot, data: Any) -> bool:
    return {"from": sender._id, "data": data} in bot.data.received_first


async def test_bots_exchange_room_targeted_and_refused_messages(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(ServerConfig(sfu=SfuConfig(data_limits=LIMITS)))

    def config(name: str, **extra: Any) -> BotConfig:
        return BotConfig(url=server.url, room="dc", name=name, duration=15.0, **extra)

    ann, bob = Bot(config("ann")), Bot(config("bob"))
    # cy sends on its own every 0.5 s, to bob only (by name), as `parley bot --data-every`
    cy = Bot(config("cy", data_every=0.5, data_to=("bob",)))
    bots = (ann, bob, cy)
    runs = [asyncio.ensure_future(b.run()) for b in bots]
    try:
        ready = await until(
            lambda: all(
                b.data.channel is not None
                and b.data.channel.readyState == "open"
                and len(b._names) == 2
                for b in bots
            ),
            15.0,
        )
        assert ready, [(b.config.name, b.data.channel, b._names) for b in bots]

        # to the room: everybody else gets it, with the sender's id
        assert ann.data.send("hello room")
        assert await until(
            lambda: _got(bob, ann, "hello room") and _got(cy, ann, "hello room"), 5.0
        )
        # to one participant, by id: the third does not get it
        assert ann.data.send({"secret": 1}, to=(bob._id or "",))
        # binary, to one participant by name
        sent_binary_at = asyncio.get_running_loop().time()
        assert bob.data.send(b"\x00\xffbin", to=("ann",))
        assert await until(
            lambda: _got(bob, ann, {"secret": 1}) and _got(ann, bob, "00ff62696e"), 5.0
        )
        # too large: refused with an error to the sender, nobody gets it, nothing breaks
        assert ann.data.send("x" * (17 * 1024))
        assert await until(lambda: any(e["code"] == "data_too_large" for e in ann._errors), 5.0)
        room = server.sfu.rooms["dc"]
        assert room.participants[ann._id or ""].counters["data_dropped_size"] == 1
        assert ann.data.send("after")
        assert await until(lambda: _got(bob, ann, "after") and _got(cy, ann, "after"), 5.0)
        # a burst over the rate limit: the first 20 go (the burst), the rest are refused
        for i in range(30):
            assert bob.data.send({"burst": i}, to=("ann",))
        counters = room.participants[bob._id or ""].counters

        def burst_done() -> bool:
            relayed = ann.data.received_from.get(bob._id or "", 0) - 1  # less the binary one
            return relayed + counters["data_dropped_rate"] == 30

        assert await until(burst_done, 5.0), (ann.data.received_from, counters)
        # the bucket holds 20, less what the binary message above spent, refilled at 4/s
        # since then (a busy machine may spread the burst's arrival over more time)
        refill = 4 * (asyncio.get_running_loop().time() - sent_binary_at)
        dropped = counters["data_dropped_rate"]
        assert 30 - 19 - int(refill) - 1 <= dropped <= 12, (counters, refill)
        assert await until(
            lambda: any(e["code"] == "data_rate_limited" for e in bob._errors), 5.0
        ), bob._errors
        # the periodic messages of cy reach bob only
        assert await until(lambda: bob.data.received_from.get(cy._id or "", 0) >= 3, 5.0)
        summaries = await asyncio.gather(*runs)
    finally:
        for run in runs:
            if not run.done():
                run.cancel()
        await asyncio.gather(*(b.close() for b in bots), return_exceptions=True)

    by_name = {s["name"]: s for s in summaries}
    ids = {s["name"]: s["id"] for s in summaries}
    ann_s, bob_s, cy_s = by_name["ann"], by_name["bob"], by_name["cy"]
    # cy's targeted messages and ann's secret never reached the third party
    assert ids["cy"] not in ann_s["data"]["received_from"], ann_s["data"]
    assert all(m["data"] != {"secret": 1} for m in cy_s["data"]["received_first"])
    # only the valid messages were relayed: ann received none of its oversize
    assert cy_s["data"]["received_from"] == {ids["ann"]: 2}, cy_s["data"]
    assert bob_s["data"]["received_from"][ids["cy"]] >= 3
    assert cy_s["data"]["sent"] >= 3 and cy_s["data"]["every_s"] == 0.5
    # the refusal was ann's alone; the others had no errors and their media flowed
    assert [e["code"] for e in ann_s["errors"]] == ["data_too_large"], ann_s["errors"]
    assert {e["code"] for e in bob_s["errors"]} == {"data_rate_limited"}, bob_s["errors"]
    assert cy_s["errors"] == [], cy_s["errors"]
    for s in (ann_s, bob_s, cy_s):
        assert all(t["frames_decoded"] > 20 for t in s["tracks"]), s["tracks"]
