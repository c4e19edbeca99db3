"""Two nodes of workers: ``parley serve --workers 2 --redis ...`` each in its own network
namespace (as ``test_redis_nodes.py``), one real redis-server, real ``parley bot``s:

* the front registers the node (its workers do not), with the load summed over its
  workers and ``workers: 2``; joins through either node's URL reach the room (one bot
  is redirected), which lives on one worker of its node; each bot decodes the other;
* the front of the room's node killed with SIGKILL (its workers go with it): both bots
  are back with media from each other on the other node within 5 s;
* SIGTERM with ``--drain-timeout`` on the room's front: its clients are moved to the
  other node (``server_shutdown``), with media within 5 s, and the node exits at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
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
    forwarding,
    healthz,
    run_bots,
    running_cluster,
    stop_node,
    wait_for,
)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster("--workers", "2") as running:
        yield running


def _summaries(tmp_path: Path, *names: str) -> dict[str, dict[str, Any]]:
    return {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in names}


async def test_a_node_of_workers_registers_once_and_routes_joins(
    cluster: Cluster, tmp_path: Path
) -> None:
    procs = await run_bots(
        [
            bot_command(cluster, "a", "meet", "ada", tmp_path, 8),
            bot_command(cluster, "b", "meet", "bob", tmp_path, 8),
        ]
    )
    try:
        owner = await wait_for("room placed", lambda: cluster.owner("meet"), 30)
        serving = cluster.nodes[owner]
        other = next(n for n in cluster.nodes.values() if n is not serving)
        await wait_for("both bots forwarded", lambda: forwarding(serving, 4), 30)
        # only the fronts are nodes: two keys, not six
        assert await cluster.registered() == {"a", "b"}
        served, idle = healthz(serving.url), healthz(other.url)
        assert served is not None and idle is not None
        assert (served["participants"], idle.get("participants", 0)) == (2, 0), (served, idle)
        # within the node, the room lives on one worker
        holding = [w for w in served["workers"] if w.get("participants")]
        assert [w["participants"] for w in holding] == [2], served["workers"]
        await asyncio.sleep(2.2)  # two more heartbeats: forwarded packets per second
        stored = json.loads(await cluster.client.get(f"parley:node:{owner}"))
        assert stored["workers"] == 2 and stored["ws_url"] == serving.ws_url, stored
        assert (stored["rooms"], stored["participants"], stored["published_tracks"]) == (1, 2, 4)
        assert stored["forwarders"] == 4 and stored["forwarded_pps"] > 20, stored
        assert stored["cpu_percent"] > 0, stored
        assert served["load"]["node_id"] == owner  # the same shape in /healthz
        idle_load = json.loads(await cluster.client.get(f"parley:node:{other.node_id}"))
        assert idle_load["participants"] == 0 and idle_load["workers"] == 2, idle_load
    finally:
        codes = await finish(procs)
    summaries = _summaries(tmp_path, "ada", "bob")
    for name, peer in (("ada", "bob"), ("bob", "ada")):
        assert decoded_from(summaries[name], peer) == {"audio", "video"}, summaries[name]["tracks"]
        assert summaries[name]["verdict"] == "ok", summaries[name]["failed"]
    redirected = {
        n for n, s in summaries.items() if any(e["type"] == "redirected" for e in s["events"])
    }
    assert redirected == {"ada" if owner == "b" else "bob"}
    assert codes == [0, 0]
    for node in cluster.nodes.values():
        assert node.problems() == [], node.log_text


async def test_a_killed_node_of_workers_has_its_clients_back_on_the_other_within_5_s(
    cluster: Cluster, tmp_path: Path
) -> None:
    procs = await run_bots(
        [
            bot_command(cluster, "a", "fail", "ada", tmp_path, 16, "--reconnect"),
            bot_command(cluster, "b", "fail", "bob", tmp_path, 16, "--reconnect"),
        ]
    )
    try:
        owner = await wait_for("room placed", lambda: cluster.owner("fail"), 30)
        dead = cluster.nodes[owner]
        survivor = next(n for n in cluster.nodes.values() if n is not dead)
        await wait_for("both bots forwarded", lambda: forwarding(dead, 4), 30)
        await asyncio.sleep(1.5)  # media flows both ways
        await stop_node(dead)  # SIGKILL to the front; its workers get SIGTERM from the kernel
        killed_at = time.time()
        await wait_for("the survivor forwards", lambda: forwarding(survivor, 4), 10)
        assert await cluster.owner("fail") == survivor.node_id
    finally:
        codes = await finish(procs)
    summaries = _summaries(tmp_path, "ada", "bob")
    backs = []
    for name, peer in (("ada", "bob"), ("bob", "ada")):
        summary = summaries[name]
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        (reconnect,) = summary["reconnects"]
        assert reconnect["recovered"] and reconnect["missing_publishers"] == [], brief
        assert decoded_from(summary, peer, session=1) == {"audio", "video"}, summary["tracks"]
        first = [
            summary["started_unix"] + t["first_frame_ms"] / 1000
            for t in summary["tracks"]
            if t["session"] == 1 and t["participant_name"] == peer
        ]
        back = max(first) - killed_at
        backs.append(back)
        assert 0 < back <= 5.0, (name, back, brief)
        assert summary["verdict"] == "ok", brief
    print(f"media back after the node's kill: {', '.join(f'{b:.2f} s' for b in backs)}")
    assert codes == [0, 0]
    assert survivor.problems() == [], survivor.log_text


async def test_a_draining_node_of_workers_moves_its_clients_to_the_other(tmp_path: Path) -> None:
    """SIGTERM with ``--drain-timeout 20`` on the room's front: the room is claimed for
    the other node, the front's relayed clients are told ``server_shutdown``, they are
    back there with media within 5 s and the node exits long before its timeout."""
    async with running_cluster("--workers", "2", "--drain-timeout", "20") as cluster:
        procs = await run_bots(
            [
                bot_command(cluster, "a", "move", "ada", tmp_path, 14, "--reconnect"),
                bot_command(cluster, "b", "move", "bob", tmp_path, 14, "--reconnect"),
            ]
        )
        try:
            owner = await wait_for("room placed", lambda: cluster.owner("move"), 30)
            draining = cluster.nodes[owner]
            survivor = next(n for n in cluster.nodes.values() if n is not draining)
            await wait_for("both bots forwarded", lambda: forwarding(draining, 4), 30)
            await asyncio.sleep(1.5)
            assert draining.proc is not None
            draining.proc.send_signal(signal.SIGTERM)
            signalled = time.time()
            await wait_for("the survivor forwards", lambda: forwarding(survivor, 4), 10)
            assert await cluster.owner("move") == survivor.node_id
            assert await asyncio.wait_for(draining.proc.wait(), 10) == 0
            exited_after = time.time() - signalled
        finally:
            codes = await finish(procs)
        assert exited_after < 8.0, exited_after
        summaries = _summaries(tmp_path, "ada", "bob")
        for name, peer in (("ada", "bob"), ("bob", "ada")):
            summary = summaries[name]
            (reconnect,) = summary["reconnects"]
            assert reconnect["code"] == "server_shutdown" and reconnect["recovered"], brief(summary)
            assert "draining" in reconnect["message"], brief(summary)
            assert decoded_from(summary, peer, session=1) == {"audio", "video"}
            first = [
                summary["started_unix"] + t["first_frame_ms"] / 1000
                for t in summary["tracks"]
                if t["session"] == 1 and t["participant_name"] == peer
            ]
            assert 0 < max(first) - signalled <= 5.0, brief(summary)
        assert codes == [0, 0]
        assert survivor.problems() == [] and draining.problems() == [], draining.log_text
        assert any("drains: 1 room(s) moved (2 client(s))" in line for line in draining.log)


async def test_a_node_of_workers_spreads_a_room_over_its_workers(tmp_path: Path) -> None:
    """``--workers 2 --spread --redis``: a room lives on one node (a join through the
    other is redirected there), spread over that node's two workers, piped."""
    async with running_cluster("--workers", "2", "--spread") as cluster:
        procs = await run_bots(
            [
                bot_command(cluster, "a", "both", "ada", tmp_path, 8),
                bot_command(cluster, "b", "both", "bob", tmp_path, 8),
            ]
        )
        try:
            owner = await wait_for("room placed", lambda: cluster.owner("both"), 30)
            serving = cluster.nodes[owner]
            await wait_for("both bots forwarded", lambda: forwarding(serving, 4), 30)
            body = healthz(serving.url)
            assert body is not None
            # one relayed session on each worker; each worker has the room (its own bot
            # and the other's, piped)
            assert [w["relayed_sessions"] for w in body["workers"]] == [1, 1], body["workers"]
            assert [w["participants"] for w in body["workers"]] == [2, 2], body["workers"]

            async def stored() -> dict[str, Any]:
                value = json.loads(await cluster.client.get(f"parley:node:{owner}") or "{}")
                return value if value.get("participants") == 2 else {}

            # the node's load (a heartbeat later): 2 clients, 4 tracks, piped copies not counted
            load = await wait_for("a heartbeat with both", stored, 5)
            assert load["published_tracks"] == 4, load
        finally:
            codes = await finish(procs)
        summaries = _summaries(tmp_path, "ada", "bob")
        for name, peer in (("ada", "bob"), ("bob", "ada")):
            assert decoded_from(summaries[name], peer) == {"audio", "video"}
        assert codes == [0, 0]
        for node in cluster.nodes.values():
            assert node.problems() == [], node.log_text
