"""Data-channel messages in a room spread over two workers (``--workers 2 --spread``):
they cross the pipe (``sfu/pipe_data.py``). Real processes: the front, two workers and
three ``parley bot``s sending on their data channels: ``cam`` (first worker) to the
room, ``plain`` (second worker) to ``cam`` only, ``third`` (first worker) to the room.
``plain`` gets ``cam``'s and ``third``'s messages across the pipe, ``cam`` gets
``plain``'s targeted ones across it and ``third``'s locally, ``third`` gets ``cam``'s but
none of ``plain``'s (they name ``cam``); nobody gets a message twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ._bots import brief, start_bot, stop_bots, summary
from ._parley_process import parley_serve
from .test_workers import wait_for

ROOM = "spread-data"
EVERY = 0.25


def _sessions(body: dict[str, Any]) -> dict[str, int]:
    return {w["id"]: w["relayed_sessions"] for w in body["workers"]}


@pytest.mark.parametrize("pipe", ["plain", "srtp"])
async def test_data_messages_cross_the_pipe_of_a_spread_room(tmp_path: Path, pipe: str) -> None:
    """(With ``--pipe-srtp`` the pipes between the workers are SRTP, control authenticated.)"""
    bots: dict[str, Any] = {}
    srtp = ("--pipe-srtp",) if pipe == "srtp" else ()
    args = ("--workers", "2", "--spread", *srtp, "--log-level", "WARNING")
    async with parley_serve(*args) as server:
        url = server.url
        try:
            body = await wait_for(url, lambda b: all(w["alive"] for w in b["workers"]), 30, "up")
            joins = (
                ("cam", ("--data-every", str(EVERY))),
                ("plain", ("--data-every", str(EVERY), "--data-to", "cam")),
                ("third", ("--data-every", str(EVERY))),
            )
            placed: dict[str, str] = {}
            for count, (name, extra) in enumerate(joins, start=1):
                bots[name] = await start_bot(url, ROOM, name, tmp_path, 12, *extra)
                before = _sessions(body)
                body = await wait_for(
                    url, lambda b, n=count: sum(_sessions(b).values()) == n, 20, f"{name} placed"
                )
                (placed[name],) = [w for w, n in _sessions(body).items() if n > before.get(w, 0)]
            assert placed["cam"] == placed["third"] != placed["plain"], placed
            codes = {n: await asyncio.wait_for(p.wait(), 60) for n, p in bots.items()}
        finally:
            await stop_bots(bots.values())
        assert server.problems() == [], server.problems()
    assert codes == dict.fromkeys(bots, 0), codes
    s = {n: summary(tmp_path, n) for n in bots}
    ids = {n: s[n]["id"] for n in bots}
    got = {n: s[n]["data"]["received_from"] for n in bots}
    sent = {n: s[n]["data"]["sent"] for n in bots}
    assert all(count >= 10 for count in sent.values()), sent
    # across the pipe, both ways (plain's to cam by name, resolved to cam's id there)
    assert got["plain"].get(ids["cam"], 0) >= 5 and got["plain"].get(ids["third"], 0) >= 5, got
    assert got["cam"].get(ids["plain"], 0) >= 5 and got["cam"].get(ids["third"], 0) >= 5, got
    # locally, and a message named for cam reaches nobody else
    assert got["third"].get(ids["cam"], 0) >= 5 and ids["plain"] not in got["third"], got
    # never twice: nobody received more than its sender sent
    for name, counts in got.items():
        for sender, count in counts.items():
            (sender_name,) = [n for n, i in ids.items() if i == sender]
            assert count <= sent[sender_name], (name, sender_name, count, sent)
    for name in bots:
        assert s[name]["data"]["unreadable"] == 0, brief(s[name])


async def test_the_active_speaker_on_the_far_worker_is_the_piped_loud_one(tmp_path: Path) -> None:
    """``silent`` and ``listen`` on one worker, ``loud`` on the other: the far worker
    computes the active speaker from the piped audio's level extensions."""
    bots: dict[str, Any] = {}
    async with parley_serve("--workers", "2", "--spread", "--log-level", "WARNING") as server:
        url = server.url
        try:
            body = await wait_for(url, lambda b: all(w["alive"] for w in b["workers"]), 30, "up")
            joins = (
                ("silent", ("--volume", "0")),
                ("loud", ("--volume", "0.5")),
                ("listen", ("--no-publish",)),
            )
            placed: dict[str, str] = {}
            for count, (name, extra) in enumerate(joins, start=1):
                bots[name] = await start_bot(url, ROOM, name, tmp_path, 8, *extra)
                before = _sessions(body)
                body = await wait_for(
                    url, lambda b, n=count: sum(_sessions(b).values()) == n, 20, f"{name} placed"
                )
                (placed[name],) = [w for w, n in _sessions(body).items() if n > before.get(w, 0)]
            assert placed["silent"] == placed["listen"] != placed["loud"], placed
            codes = {n: await asyncio.wait_for(p.wait(), 60) for n, p in bots.items()}
        finally:
            await stop_bots(bots.values())
        assert server.problems() == [], server.problems()
    assert codes == dict.fromkeys(bots, 0), codes
    s = {n: summary(tmp_path, n) for n in bots}
    for name in ("silent", "listen"):
        events = [e["participant"] for e in s[name]["events"] if e["type"] == "active_speaker"]
        speakers = [p for p in events if p is not None]  # None: loud left (it ends first)
        assert speakers and set(speakers) == {s["loud"]["id"]}, (name, events, brief(s[name]))
