"""``parley load --reconnect`` against two ``parley serve --redis`` nodes (the set-up of
``test_redis_nodes.py``: each node in its own network namespace, one real redis-server):
rooms spread over both nodes, one node killed with SIGKILL mid-run; the load bots of its
rooms rejoin (through ``--url``, then ``--fallback-url``), land on the other node and
get media again within 5 s; the report says so per bot and per node."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from loadgen.report.build import report_schema

from .test_redis_nodes import PARLEY, healthz, running_cluster, stop_node

ROOMS = 4


async def test_parley_load_rejoins_on_the_other_node_after_a_node_dies(tmp_path: Path) -> None:
    report_path = tmp_path / "load.json"
    async with running_cluster() as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        proc = await asyncio.create_subprocess_exec(
            *PARLEY, "load", "--url", a.url, "--fallback-url", b.url, "--reconnect",
            "--rooms", str(ROOMS), "--publishers", "1", "--subscribers", "1",
            "--duration", "14", "--processes", "1", "--ice-address", a.link.host_address,
            "--slo-p99-ms", "1000", "--slo-freeze-ms", "10000", "--slo-loss-pct", "100",
            "--json", str(report_path), "--quiet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            # every bot in its room, media forwarded in all of them
            loads: dict[str, dict[str, int]] = {}
            for _ in range(300):
                for name, node in cluster.nodes.items():
                    body = await asyncio.to_thread(healthz, node.url) or {}
                    loads[name] = {k: int(body.get(k, 0)) for k in ("rooms", "forwarders")}
                if sum(v["forwarders"] for v in loads.values()) == 2 * ROOMS:
                    break
                assert proc.returncode is None
                await asyncio.sleep(0.1)
            assert sum(v["forwarders"] for v in loads.values()) == 2 * ROOMS, loads
            await asyncio.sleep(2.0)
            # kill the node with the most rooms (with a spread, each has some)
            dead_name = max(loads, key=lambda n: loads[n]["rooms"])
            dead = cluster.nodes[dead_name]
            survivor = b if dead is a else a
            moved = loads[dead_name]["rooms"]
            await stop_node(dead)  # SIGKILL
            # every room on the survivor, media forwarded in each again
            after: dict[str, int] = {}
            for _ in range(100):
                body = await asyncio.to_thread(healthz, survivor.url) or {}
                after = {k: int(body.get(k, 0)) for k in ("rooms", "forwarders")}
                if after == {"rooms": ROOMS, "forwarders": 2 * ROOMS}:
                    break
                await asyncio.sleep(0.1)
            assert after == {"rooms": ROOMS, "forwarders": 2 * ROOMS}, after
            assert proc.stdout is not None
            output = (await asyncio.wait_for(proc.stdout.read(), 90)).decode()
            await asyncio.wait_for(proc.wait(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert survivor.problems() == [], survivor.log_text
    print(output, file=sys.stderr)
    assert proc.returncode == 0, output
    report = json.loads(report_path.read_text())
    assert list(Draft202012Validator(report_schema()).iter_errors(report)) == []
    bots = report["bots"]["list"]
    assert report["bots"]["joined"] == 2 * ROOMS and report["bots"]["errors"] == [], report["bots"]
    rejoined = [bot for bot in bots if bot["reconnects"]]
    # exactly the bots of the dead node's rooms rejoined, once each, on the survivor
    assert len(rejoined) == 2 * moved, [(b["name"], b["node"], b["reconnects"]) for b in bots]
    for bot in rejoined:
        (reconnect,) = bot["reconnects"]
        assert reconnect["recovered"] and reconnect["node_before"] == dead.url, bot
        assert reconnect["node"] == survivor.url == bot["node"], bot
        # media again within 5 s of the drop: a subscriber's first packet, a publisher sending
        assert reconnect["media_after_ms"] is not None, bot
        assert 0 < reconnect["media_after_ms"] <= 5000, bot
    section = report["reconnects"]
    assert section["count"] == section["recovered"] == section["media_back"] == 2 * moved
    assert section["media_after_ms"]["max"] <= 5000, section
    for bot in rejoined:
        if bot["role"] == "subscriber":
            assert bot["packets"] > 0, bot
    nodes = {n["url"]: n for n in report["nodes"]}
    assert len(nodes[survivor.url]["rooms"]) == ROOMS, report["nodes"]
    # where the rooms were first placed: the dead node had its share (seen before the kill)
    assert len(nodes[dead.url]["first_rooms"]) == moved, report["nodes"]
    assert nodes[dead.url]["peak_participants"] == 2 * moved, report["nodes"]
    assert "reconnects: " in output and "node " + survivor.url in output, output
    print(json.dumps(section), file=sys.stderr)
