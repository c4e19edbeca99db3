"""Two ``parley serve --redis`` nodes, each in its own network namespace with its own
address (a veth pair to the test's namespace: ``loadgen/impair/link.py``, unshaped), one
real redis-server in the test's namespace, real ``parley bot`` processes:

* joins through either node's URL reach the room (one of the two bots is redirected)
  and each bot decodes the other;
* twenty new rooms joined through both nodes are spread over both;
* a node killed with SIGKILL: its room comes back on the other node, with media, within
  5 s (``parley bot --reconnect`` with the other node as a fallback entry);
* Redis killed and started again mid-call: media keeps flowing (no reconnect, verdict
  ok) and both nodes are registered again within a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from loadgen.impair.link import ImpairedLink
from parley_client import ProtocolClient, Redirected

from ._parley_process import PROBLEM_MARKERS
from ._redis import RedisServer

PARLEY = [sys.executable, "-m", "parley"]
PORT = 8080  # each node has a namespace of its own: the same port on both
#: subnets 10.99.N.0/30 of the two nodes' links (loadgen/impair/link.py)
LINKS = (171, 172)


@dataclass
class Node:
    node_id: str
    link: ImpairedLink
    #: more ``parley serve`` options
    args: tuple[str, ...] = ()
    proc: asyncio.subprocess.Process | None = None
    log: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.link.peer_address}:{PORT}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.link.peer_address}:{PORT}/ws"

    def problems(self) -> list[str]:
        return [line for line in self.log if any(m in line for m in PROBLEM_MARKERS)]

    @property
    def log_text(self) -> str:
        """The whole log, a line each (what a failing check prints)."""
        return self.log_text


@dataclass
class Cluster:
    redis: RedisServer
    client: Redis
    nodes: dict[str, Node]

    async def owner(self, room: str) -> str | None:
        value = await self.client.get(f"parley:room:{room}")
        return None if value is None else value.decode()

    async def registered(self) -> set[str]:
        keys = await self.client.keys("parley:node:*")
        return {k.decode().rsplit(":", 1)[1] for k in keys}


def healthz(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1.0) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except OSError:
        return None


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode(errors="replace").rstrip("\n"))


async def start_node(node: Node, redis_port: int) -> None:
    link = node.link
    node.proc = await asyncio.create_subprocess_exec(
        *link.command([
            *PARLEY, "serve", "--host", link.peer_address, "--port", str(PORT),
            "--ice-address", link.peer_address,
            "--redis", f"redis://{link.host_address}:{redis_port}/0",
            "--node-url", node.ws_url, "--node-id", node.node_id, "--allow-anonymous",
            *node.args,
        ]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert node.proc.stdout is not None
    node.reader = asyncio.ensure_future(_collect(node.proc.stdout, node.log))
    deadline = time.monotonic() + 40
    while await asyncio.to_thread(healthz, node.url) is None:
        assert node.proc.returncode is None, "parley serve exited:\n" + node.log_text
        assert time.monotonic() < deadline, "parley serve did not answer:\n" + node.log_text
        await asyncio.sleep(0.1)


async def stop_node(node: Node) -> None:
    proc = node.proc
    if proc is not None and proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    if node.reader is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(node.reader, 2.0)


def _route_through(link: ImpairedLink) -> None:
    """The node's namespace reaches every address of the test's namespace (the bots
    gather ICE candidates on one of them) and the other node, through its veth."""
    subprocess.run(
        link.command(["ip", "route", "add", "default", "via", link.host_address]), check=True
    )


@contextlib.asynccontextmanager
async def running_cluster(*args: str) -> AsyncIterator[Cluster]:
    """Two nodes ``a`` and ``b`` (each with ``args`` too) and their Redis."""
    links = [ImpairedLink(i) for i in LINKS]
    redis = RedisServer(bind="0.0.0.0")  # this namespace has only lo and the two veths
    nodes: dict[str, Node] = {}
    client = Redis.from_url(redis.url(), socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        for link in links:
            await asyncio.to_thread(link.start)
            await asyncio.to_thread(_route_through, link)
        # node to node (a probe before a redirect) crosses this namespace
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        await redis.start()
        for name, link in zip("ab", links, strict=True):
            nodes[name] = Node(name, link, args)
        await asyncio.gather(*(start_node(n, redis.port) for n in nodes.values()))
        yield Cluster(redis, client, nodes)
    finally:
        await asyncio.gather(*(stop_node(n) for n in nodes.values()))
        await client.aclose()
        await redis.kill()
        for link in links:
            await asyncio.to_thread(link.close)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster() as running:
        yield running


def bot_command(
    cluster: Cluster, entry: str, room: str, name: str, tmp_path: Path, duration: float, *extra: str
) -> list[str]:
    nodes = cluster.nodes
    fallback = next(n for n in nodes.values() if n.node_id != entry)
    return [
        *PARLEY, "bot", "--url", nodes[entry].url, "--fallback-url", fallback.url,
        "--room", room, "--name", name, "--duration", str(duration),
        # an address of this namespace: both nodes reach it through their veth
        "--ice-address", nodes["a"].link.host_address,
        "--json", str(tmp_path / f"{name}.json"), *extra,
    ]  # fmt: skip


async def run_bots(commands: list[list[str]]) -> list[asyncio.subprocess.Process]:
    return [
        await asyncio.create_subprocess_exec(*c, stderr=asyncio.subprocess.DEVNULL)
        for c in commands
    ]


async def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.1)


async def forwarding(node: Node, count: int) -> bool:
    body = await asyncio.to_thread(healthz, node.url)
    return body is not None and body.get("forwarders", 0) >= count


def decoded_from(summary: dict[str, Any], other: str, session: int | None = None) -> set[str]:
    """Kinds of ``other``'s tracks the bot decoded frames of."""
    return {
        t["kind"]
        for t in summary["tracks"]
        if t["participant_name"] == other
        and t["frames_decoded"] > 0
        and (session is None or t["session"] == session)
    }


async def finish(procs: list[asyncio.subprocess.Process]) -> list[int]:
    try:
        return [await asyncio.wait_for(p.wait(), 60) for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def test_joins_through_either_node_reach_the_room(cluster: Cluster, tmp_path: Path) -> None:
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
        served, idle = healthz(serving.url), healthz(other.url)
        assert served is not None and idle is not None
        assert (served["rooms"], served["participants"]) == (1, 2), served
        assert (idle["rooms"], idle["participants"]) == (0, 0), idle
        # the node's load, in /healthz as in Redis
        assert served["load"]["node_id"] == owner and served["load"]["ws_url"] == serving.ws_url
        await asyncio.sleep(1.2)  # one more heartbeat: forwarded packets per second
        stored = json.loads(await cluster.client.get(f"parley:node:{owner}"))
        assert stored["participants"] == 2 and stored["forwarded_pps"] > 0, stored
    finally:
        codes = await finish(procs)
    summaries = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ada", "bob")}
    for name, other_name in (("ada", "bob"), ("bob", "ada")):
        summary = summaries[name]
        assert decoded_from(summary, other_name) == {"audio", "video"}, summary["tracks"]
        assert summary["verdict"] == "ok", summary["failed"]
    # the bot whose entry was not the owner was redirected there, the other was not
    redirected = {
        name for name, s in summaries.items() if any(e["type"] == "redirected" for e in s["events"])
    }
    assert redirected == {"ada" if owner == "b" else "bob"}
    assert codes == [0, 0]
    for node in cluster.nodes.values():
        assert node.problems() == [], node.log_text


async def test_placement_spreads_twenty_new_rooms_over_both_nodes(cluster: Cluster) -> None:
    clients: list[ProtocolClient] = []
    served_by: dict[str, str] = {}
    try:
        for i in range(20):
            entry = cluster.nodes["ab"[i % 2]]
            url, room = entry.url, f"room-{i}"
            for _ in range(3):  # follow the redirect, as the bundled clients do
                client = ProtocolClient(url)
                clients.append(client)
                await client.connect(5.0)
                try:
                    await client.join(room, "joiner", 5.0)
                except Redirected as redirect:
                    url = redirect.base_url
                    continue
                served_by[room] = url
                break
        assert len(served_by) == 20, served_by
        counts = {
            name: (healthz(node.url) or {}).get("rooms") for name, node in cluster.nodes.items()
        }
        owners = {room: await cluster.owner(room) for room in served_by}
    finally:
        for client in clients:
            await client.close()
    assert counts["a"] + counts["b"] == 20 and counts["a"] > 0 and counts["b"] > 0, counts
    # every room is where Redis says it is
    for room, url in served_by.items():
        host = urlsplit(url).netloc
        assert host == urlsplit(cluster.nodes[owners[room]].url).netloc, (room, url, owners)


async def test_a_killed_nodes_room_comes_back_on_the_other_within_5_s(
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
        await stop_node(dead)  # SIGKILL
        killed_at = time.time()
        await wait_for("the survivor forwards", lambda: forwarding(survivor, 4), 10)
        assert await cluster.owner("fail") == survivor.node_id
    finally:
        codes = await finish(procs)
    summaries = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ada", "bob")}
    backs = []
    for name, other in (("ada", "bob"), ("bob", "ada")):
        summary = summaries[name]
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        (reconnect,) = summary["reconnects"]
        assert reconnect["code"] == "connection_lost" and reconnect["recovered"], brief
        assert reconnect["missing_publishers"] == [], brief
        # media from the other bot again, on the new connection, within 5 s of the kill
        assert decoded_from(summary, other, session=1) == {"audio", "video"}, summary["tracks"]
        first = [
            summary["started_unix"] + t["first_frame_ms"] / 1000
            for t in summary["tracks"]
            if t["session"] == 1 and t["participant_name"] == other
        ]
        back = max(first) - killed_at
        backs.append(back)
        assert 0 < back <= 5.0, (name, back, brief)
        assert summary["verdict"] == "ok", brief
    print(f"media back after the kill: {', '.join(f'{b:.2f} s' for b in backs)}")
    assert codes == [0, 0]
    assert survivor.problems() == [], survivor.log_text


async def test_redis_restarted_mid_call_media_keeps_flowing_and_nodes_register_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    procs = await run_bots(
        [
            bot_command(cluster, "a", "steady", "ada", tmp_path, 12),
            bot_command(cluster, "a", "steady", "bob", tmp_path, 12),
        ]
    )
    try:
        owner = await wait_for("room placed", lambda: cluster.owner("steady"), 30)
        await wait_for("both bots forwarded", lambda: forwarding(cluster.nodes[owner], 4), 30)
        await asyncio.sleep(1.0)
        assert await cluster.registered() == {"a", "b"}
        await cluster.redis.kill()
        await asyncio.sleep(2.5)  # every node key would have expired by now
        await cluster.redis.start()  # empty
        restarted = time.monotonic()
        await wait_for("both nodes registered", lambda: _both(cluster), 5)
        registered_after = time.monotonic() - restarted
        # the owner took its room back
        assert await wait_for("room held again", lambda: cluster.owner("steady"), 3) == owner
    finally:
        codes = await finish(procs)
    print(f"registered again {registered_after:.2f} s after Redis answered")
    for name, other in (("ada", "bob"), ("bob", "ada")):
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        # one connection all along, no freeze: Redis is not on the media path
        assert summary["reconnects"] == [] and summary["verdict"] == "ok", brief
        assert decoded_from(summary, other, session=0) == {"audio", "video"}
    assert codes == [0, 0]
    for node in cluster.nodes.values():
        assert node.problems() == [], node.log_text
        # the outage is logged (once per interval), not a crash
        assert any("heartbeat" in line and "retrying" in line for line in node.log), node.log


async def _both(cluster: Cluster) -> bool:
    try:
        return await cluster.registered() == {"a", "b"}
    except Exception:
        return False


async def test_a_stopped_node_leaves_redis_and_its_room_moves_to_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    procs = await run_bots(
        [
            bot_command(cluster, "a", "drain", "ada", tmp_path, 12, "--reconnect"),
            bot_command(cluster, "b", "drain", "bob", tmp_path, 12, "--reconnect"),
        ]
    )
    try:
        owner = await wait_for("room placed", lambda: cluster.owner("drain"), 30)
        stopping = cluster.nodes[owner]
        survivor = next(n for n in cluster.nodes.values() if n is not stopping)
        await wait_for("both bots forwarded", lambda: forwarding(stopping, 4), 30)
        assert stopping.proc is not None
        stopping.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(stopping.proc.wait(), 5) == 0
        # gone from Redis at once (not after its TTL), its room released or re-placed
        assert await cluster.registered() == {survivor.node_id}
        assert await cluster.owner("drain") in (None, survivor.node_id)
        await wait_for("the survivor forwards", lambda: forwarding(survivor, 4), 10)
    finally:
        codes = await finish(procs)
    for name, other in (("ada", "bob"), ("bob", "ada")):
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        (reconnect,) = summary["reconnects"]
        assert reconnect["code"] == "server_shutdown" and reconnect["recovered"], brief
        assert reconnect["media_after_ms"] <= 5000, brief
        assert decoded_from(summary, other, session=1) == {"audio", "video"}
    assert codes == [0, 0]
    assert survivor.problems() == [] and stopping.problems() == [], stopping.log_text


async def test_parley_load_through_one_node_follows_redirects_to_both(
    cluster: Cluster, tmp_path: Path
) -> None:
    report_path = tmp_path / "load.json"
    proc = await asyncio.create_subprocess_exec(
        *PARLEY, "load", "--url", cluster.nodes["a"].url, "--rooms", "6",
        "--publishers", "1", "--subscribers", "1", "--duration", "5", "--processes", "1",
        "--ice-address", cluster.nodes["a"].link.host_address,
        "--slo-p99-ms", "1000", "--slo-freeze-ms", "3000", "--json", str(report_path), "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    most: dict[str, int] = {"a": 0, "b": 0}
    try:
        while proc.returncode is None:
            for name, node in cluster.nodes.items():
                body = await asyncio.to_thread(healthz, node.url)
                if body is not None:
                    most[name] = max(most[name], body["rooms"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.5)
        assert proc.stdout is not None
        output = (await proc.stdout.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output
    # every room joined through node a; the ones placed on b were joined there
    assert most["a"] > 0 and most["b"] > 0 and most["a"] + most["b"] == 6, most
    report = json.loads(report_path.read_text())
    bots = {k: v for k, v in report["bots"].items() if k != "list"}
    assert bots["joined"] == 12 and bots["errors"] == [], bots
    # the report says where each room landed and each node's load (its own /healthz)
    nodes = {n["url"]: n for n in report["nodes"]}
    assert set(nodes) == {node.url for node in cluster.nodes.values()}, report["nodes"]
    for name, node in cluster.nodes.items():
        shown = nodes[node.url]
        assert len(shown["rooms"]) == most[name] and shown["bots"] == 2 * most[name], shown
        assert shown["peak_participants"] == 2 * most[name], shown
        assert shown["healthz"]["load"]["node_id"] == name, shown
    assert sorted(r for n in nodes.values() for r in n["rooms"]) == [f"load-{i}" for i in range(6)]
    assert "node " + cluster.nodes["b"].url in output, output


async def test_a_room_claimed_by_another_node_moves_there(cluster: Cluster, tmp_path: Path) -> None:
    """What a split leaves behind (Redis lost its keys and another node placed the room
    meanwhile): the node serving the room finds it owned by another live node at its
    next heartbeat, ends its participants there, and they rejoin on the owner."""
    procs = await run_bots(
        [
            bot_command(cluster, "a", "split", "ada", tmp_path, 12, "--reconnect"),
            bot_command(cluster, "a", "split", "bob", tmp_path, 12, "--reconnect"),
        ]
    )
    try:
        owner = await wait_for("room placed", lambda: cluster.owner("split"), 30)
        serving = cluster.nodes[owner]
        other = next(n for n in cluster.nodes.values() if n is not serving)
        await wait_for("both bots forwarded", lambda: forwarding(serving, 4), 30)
        await cluster.client.set("parley:room:split", other.node_id, px=3000)
        await wait_for("moved to the owner", lambda: forwarding(other, 4), 10)
        assert (healthz(serving.url) or {}).get("rooms") == 0
    finally:
        codes = await finish(procs)
    for name, peer in (("ada", "bob"), ("bob", "ada")):
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        (reconnect,) = summary["reconnects"]
        assert "room moved to another node" in reconnect["message"], brief
        assert reconnect["recovered"] and reconnect["media_after_ms"] <= 5000, brief
        assert decoded_from(summary, peer, session=1) == {"audio", "video"}
    assert codes == [0, 0]
    assert serving.problems() == [] and other.problems() == []
