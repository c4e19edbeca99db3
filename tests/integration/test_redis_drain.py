"""A draining node of a ``parley serve --redis`` cluster moves its clients off before it
exits (cluster/redis_node.py, ``move_rooms``): two nodes in their own network namespaces
and one real redis-server (the set-up of ``test_redis_nodes.py``), real ``parley bot
--reconnect`` processes, each with the other node as ``--fallback-url``:

* SIGTERM on the room's node, started with ``--drain-timeout 20``: it reports
  ``draining`` in Redis, claims the room for the other node and tells its clients
  ``server_shutdown``; they are on the other node with media within 5 s, and the node
  exits as soon as they are gone (long before its 20 s drain timeout);
* ``SET parley:drain:{id} move`` (an operator or autoscaler): the same move, and the node
  stays up, empty, redirecting joins to the other node until the key is deleted.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

from parley_client import ProtocolClient, Redirected

from .test_redis_nodes import (
    Cluster,
    bot_command,
    decoded_from,
    finish,
    forwarding,
    healthz,
    run_bots,
    running_cluster,
    wait_for,
)


def _moved_and_back_within_5_s(tmp_path: Path, since: float) -> list[float]:
    backs = []
    for name, other in (("ada", "bob"), ("bob", "ada")):
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        (reconnect,) = summary["reconnects"]
        assert reconnect["code"] == "server_shutdown" and reconnect["recovered"], brief
        assert "draining" in reconnect["message"], brief
        assert reconnect["missing_publishers"] == [], brief
        assert decoded_from(summary, other, session=1) == {"audio", "video"}, summary["tracks"]
        first = [
            summary["started_unix"] + t["first_frame_ms"] / 1000
            for t in summary["tracks"]
            if t["session"] == 1 and t["participant_name"] == other and t["frames_decoded"] > 0
        ]
        back = max(first) - since
        backs.append(back)
        assert 0 < back <= 5.0, (name, back, brief)
        assert summary["verdict"] == "ok", brief
    return backs


async def _watch_draining(cluster: Cluster, node_id: str, seen: list[bool]) -> None:
    """Note every value of the node's ``draining`` in Redis until its key is gone."""
    while True:
        value = await cluster.client.get(f"parley:node:{node_id}")
        if value is None:
            return
        seen.append(bool(json.loads(value)["draining"]))
        await asyncio.sleep(0.02)


async def test_sigterm_with_a_drain_timeout_moves_the_clients_to_the_other_node(
    tmp_path: Path,
) -> None:
    async with running_cluster("--drain-timeout", "20") as cluster:
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
            await asyncio.sleep(1.5)  # media flows both ways
            seen: list[bool] = []
            watcher = asyncio.ensure_future(_watch_draining(cluster, owner, seen))
            assert draining.proc is not None
            draining.proc.send_signal(signal.SIGTERM)
            signalled = time.time()
            await wait_for("the survivor forwards", lambda: forwarding(survivor, 4), 10)
            assert await cluster.owner("move") == survivor.node_id
            # it exits once its clients are gone, not after its 20 s drain timeout
            assert await asyncio.wait_for(draining.proc.wait(), 10) == 0
            exited_after = time.time() - signalled
            await asyncio.wait_for(watcher, 5)
        finally:
            codes = await finish(procs)
        print(f"the drained node exited {exited_after:.2f} s after SIGTERM")
        assert exited_after < 8.0, exited_after
        # placement skipped it from the start of the drain: Redis said draining (and never
        # took it back) until the node left
        assert True in seen and False not in seen[seen.index(True) :], seen
        backs = _moved_and_back_within_5_s(tmp_path, signalled)
        print(f"media back after SIGTERM: {', '.join(f'{b:.2f} s' for b in backs)}")
        assert codes == [0, 0]
        assert survivor.problems() == [] and draining.problems() == [], draining.log_text
        assert any("drains: 1 room(s) moved (2 client(s))" in line for line in draining.log)


async def test_a_move_drain_flag_moves_the_clients_and_the_node_stays_up(tmp_path: Path) -> None:
    async with running_cluster() as cluster:
        procs = await run_bots(
            [
                bot_command(cluster, "a", "flag", "ada", tmp_path, 12, "--reconnect"),
                bot_command(cluster, "b", "flag", "bob", tmp_path, 12, "--reconnect"),
            ]
        )
        try:
            owner = await wait_for("room placed", lambda: cluster.owner("flag"), 30)
            drained = cluster.nodes[owner]
            survivor = next(n for n in cluster.nodes.values() if n is not drained)
            await wait_for("both bots forwarded", lambda: forwarding(drained, 4), 30)
            await asyncio.sleep(1.5)
            await cluster.client.set(f"parley:drain:{owner}", "move")
            flagged = time.time()
            await wait_for("the survivor forwards", lambda: forwarding(survivor, 4), 10)
            body = await asyncio.to_thread(healthz, drained.url)
            assert body is not None
            assert body.get("participants") == 0 and body["load"]["draining"] is True, body
            assert drained.proc is not None and drained.proc.returncode is None
            # joins through the drained node go to the other one, for its old room and a new one
            for room in ("flag", "fresh"):
                client = ProtocolClient(drained.url)
                try:
                    await client.connect(5.0)
                    try:
                        await client.join(room, "late", 5.0)
                        raise AssertionError(f"{room}: joined on the drained node")
                    except Redirected as redirect:
                        netloc = urlsplit(redirect.base_url).netloc
                        assert netloc == urlsplit(survivor.url).netloc, redirect.base_url
                finally:
                    await client.close()
            # undrained: it takes rooms again
            await cluster.client.delete(f"parley:drain:{owner}")

            async def undrained() -> bool:
                now = await asyncio.to_thread(healthz, drained.url)
                return now is not None and now["load"]["draining"] is False

            await wait_for("undrained", undrained, 5)
        finally:
            codes = await finish(procs)
        backs = _moved_and_back_within_5_s(tmp_path, flagged)
        print(f"media back after the flag: {', '.join(f'{b:.2f} s' for b in backs)}")
        assert codes == [0, 0]
        for node in cluster.nodes.values():
            assert node.problems() == [], node.log_text
