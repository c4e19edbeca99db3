"""One room over two nodes: ``parley serve --redis ... --node-spread`` (cluster/node_spread.py),
two nodes in their own network namespaces and one real redis-server (the set-up of
``test_redis_nodes.py``), real ``parley bot``s:

* two bots joining one room through different nodes are each served where they arrived
  (no redirect): the room is piped between the nodes (a member listed in Redis), each
  bot decodes the other; when they leave, both nodes are empty again and the member
  left the room in Redis;
* the room's owner killed with SIGKILL: its bot rejoins on the other node (its
  fallback) and both decode each other again within 5 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ._bots import brief
from .test_redis_nodes import (
    Cluster,
    bot_command,
    decoded_from,
    finish,
    healthz,
    run_bots,
    running_cluster,
    stop_node,
    wait_for,
)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster("--node-spread") as running:
        yield running


def _summaries(tmp_path: Path, *names: str) -> dict[str, dict[str, Any]]:
    return {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in names}


async def _both_forward(cluster: Cluster) -> bool:
    bodies = [await asyncio.to_thread(healthz, n.url) for n in cluster.nodes.values()]
    # each node: its own bot and the other's, piped (two forwarders: audio and video)
    return all(b is not None and b.get("forwarders", 0) >= 2 for b in bodies)


async def test_a_room_joined_through_two_nodes_is_served_on_both_and_piped(
    cluster: Cluster, tmp_path: Path
) -> None:
    procs = await run_bots(
        [
            bot_command(cluster, "a", "wide", "ada", tmp_path, 9),
            bot_command(cluster, "b", "wide", "bob", tmp_path, 9),
        ]
    )
    try:
        owner = await wait_for("room placed", lambda: cluster.owner("wide"), 30)
        await wait_for("both nodes forward", lambda: _both_forward(cluster), 30)
        member = next(n for n in cluster.nodes if n != owner)
        listed = await cluster.client.hkeys("parley:spread:wide")
        assert [k.decode() for k in listed] == [member], listed
        for node in cluster.nodes.values():
            body = healthz(node.url)
            assert body is not None and (body["rooms"], body["participants"]) == (1, 2), body
    finally:
        codes = await finish(procs)
    summaries = _summaries(tmp_path, "ada", "bob")
    for name, peer in (("ada", "bob"), ("bob", "ada")):
        summary = summaries[name]
        assert decoded_from(summary, peer) == {"audio", "video"}, summary["tracks"]
        assert summary["verdict"] == "ok", summary["failed"]
        assert not [e for e in summary["events"] if e["type"] == "redirected"], brief(summary)
    assert codes == [0, 0]

    async def empty() -> bool:
        bodies = [await asyncio.to_thread(healthz, n.url) for n in cluster.nodes.values()]
        members = await cluster.client.hkeys("parley:spread:wide")
        return all(b is not None and b["rooms"] == 0 for b in bodies) and not members

    await wait_for("both nodes empty, the member gone", empty, 8)
    for node in cluster.nodes.values():
        assert node.problems() == [], node.log


async def test_a_killed_owner_s_client_is_back_on_the_member_node_within_5_s(
    cluster: Cluster, tmp_path: Path
) -> None:
    procs = await run_bots(
        [
            bot_command(cluster, "a", "keep", "ada", tmp_path, 16, "--reconnect"),
            bot_command(cluster, "b", "keep", "bob", tmp_path, 16, "--reconnect"),
        ]
    )
    try:
        owner = await wait_for("room placed", lambda: cluster.owner("keep"), 30)
        await wait_for("both nodes forward", lambda: _both_forward(cluster), 30)
        await asyncio.sleep(1.5)  # media flows both ways, across the pipe
        dead = cluster.nodes[owner]
        survivor = next(n for n in cluster.nodes.values() if n is not dead)
        await stop_node(dead)  # SIGKILL
        killed_at = time.time()
        await wait_for(
            "the room is the survivor's", lambda: _owned_by(cluster, survivor.node_id), 10
        )
    finally:
        codes = await finish(procs)
    moved, stayed = ("ada", "bob") if owner == "a" else ("bob", "ada")
    summaries = _summaries(tmp_path, moved, stayed)
    gone = summaries[moved]
    (reconnect,) = gone["reconnects"]
    assert reconnect["recovered"], brief(gone)
    assert decoded_from(gone, stayed, session=1) == {"audio", "video"}, gone["tracks"]
    # the bot on the survivor kept its connection and got the rejoined one's new tracks
    kept = summaries[stayed]
    assert kept["reconnects"] == [], brief(kept)
    backs = []
    for summary, peer in ((gone, stayed), (kept, moved)):
        firsts = [
            summary["started_unix"] + t["first_frame_ms"] / 1000
            for t in summary["tracks"]
            if t["participant_name"] == peer and t["first_frame_ms"] is not None
        ]
        backs.append(max(firsts) - killed_at)
    print(f"media back after the owner's kill: {', '.join(f'{b:.2f} s' for b in backs)}")
    assert all(0 < b <= 5.0 for b in backs), backs
    assert codes == [0, 0]
    assert survivor.problems() == [], survivor.log


async def _owned_by(cluster: Cluster, node_id: str) -> bool:
    return await cluster.owner("keep") == node_id
