"""``parley serve --workers 2``: one address, two SFU worker processes (cluster/front.py).

Real processes: the front and its workers, and ``parley bot`` subprocesses. Two rooms land
on different workers; each room's bots decode each other through the front; the worker
owning one room is killed (SIGKILL) mid-call: its bots are back with media within 5 s,
on the other worker, while the other room's bots never notice; the dead worker is
restarted. A worker stopped with SIGSTOP (alive, not answering) is found by the front's
health watch, killed and restarted; its bots are back with media within 5 s of the stop.
SIGTERM on the front stops everything within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.auth import mint_token

from ._parley_process import ServerProcess, parley_serve

PARLEY = [sys.executable, "-m", "parley"]
#: The bots' freeze limit: four bots (each encoding and decoding video) and three
#: servers share two cores with other work here, and a starved decoder stalls for over
#: a second now and then with no failover at all; a failover's gap is not a freeze (the
#: bot accounts it as a reconnect), so this does not hide one.
MAX_FREEZE_MS = 3000


async def healthz(url: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(url + "/healthz") as response,
    ):
        body: dict[str, Any] = await response.json()
        return body


async def wait_for(url: str, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = await healthz(url)
        if predicate(body):
            print(f"{what}: {time.monotonic() - deadline + timeout:.1f} s", file=sys.stderr)
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"not {what} within {timeout} s: {body}")


def worker_with(body: dict[str, Any], participants: int, forwarders: int) -> dict[str, Any] | None:
    for worker in body["workers"]:
        if worker.get("participants") == participants and worker.get("forwarders") == forwarders:
            return dict(worker)
    return None


async def start_bot(url: str, room: str, name: str, tmp_path: Path, duration: float) -> Any:
    command = [
        *PARLEY, "bot", "--url", url, "--room", room, "--name", name, "--reconnect",
        "--duration", str(duration), "--json", str(tmp_path / f"{name}.json"), "--fps", "10",
        "--max-freeze-ms", str(MAX_FREEZE_MS),
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)


async def test_rooms_spread_over_workers_and_a_killed_worker_s_room_comes_back(
    tmp_path: Path,
) -> None:
    bots: dict[str, Any] = {}
    async with parley_serve("--workers", "2", "--log-level", "WARNING") as server:
        url = server.url
        try:
            body = await wait_for(url, lambda b: all(w["alive"] for w in b["workers"]), 30, "up")
            assert [w["id"] for w in body["workers"]] == ["w0", "w1"]
            # room "alpha" first: it lands on one worker ...
            for name in ("ada", "bob"):
                bots[name] = await start_bot(url, "alpha", name, tmp_path, 26)
            body = await wait_for(url, lambda b: worker_with(b, 2, 4), 20, "alpha forwarding")
            alpha = worker_with(body, 2, 4)
            assert alpha is not None
            # ... and "beta" on the other, the least loaded
            for name in ("cat", "dan"):
                bots[name] = await start_bot(url, "beta", name, tmp_path, 20)
            body = await wait_for(
                url, lambda b: b["participants"] == 4 and b["forwarders"] == 8, 20, "beta"
            )
            by_id = {w["id"]: w for w in body["workers"]}
            beta_id = next(i for i in by_id if i != alpha["id"])
            assert by_id[alpha["id"]]["rooms"] == 1 and by_id[beta_id]["rooms"] == 1, body
            assert by_id[beta_id]["participants"] == 2 and by_id[beta_id]["forwarders"] == 4
            assert by_id[alpha["id"]]["relayed_sessions"] == 2, body
            await asyncio.sleep(3.0)  # media flows in both rooms

            os.kill(alpha["pid"], signal.SIGKILL)
            # alpha comes back on the other worker (the only live one at first)
            body = await wait_for(
                url, lambda b: worker_with(b, 4, 8) is not None, 10, "alpha re-placed"
            )
            moved = worker_with(body, 4, 8)
            assert moved is not None and moved["id"] == beta_id and moved["rooms"] == 2, body
            # the killed worker is restarted (a new process) and idle
            body = await wait_for(
                url,
                lambda b: any(w["id"] == alpha["id"] and w.get("answered") for w in b["workers"]),
                30,
                "the worker restarted",
            )
            restarted = next(w for w in body["workers"] if w["id"] == alpha["id"])
            assert restarted["restarts"] == 1 and restarted["pid"] != alpha["pid"], restarted
            assert restarted["participants"] == 0, restarted
            codes = {n: await asyncio.wait_for(p.wait(), 60) for n, p in bots.items()}
        finally:
            for proc in bots.values():
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert server.problems() == [], server.problems()
    stderr = {n: (await p.stderr.read()).decode()[-2000:] for n, p in bots.items()}
    summaries = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in bots}
    failed = {n: s["failed"] for n, s in summaries.items()}
    assert codes == dict.fromkeys(bots, 0), (codes, failed, stderr)
    for name, other in (("ada", "bob"), ("bob", "ada")):
        summary = summaries[name]
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        (reconnect,) = summary["reconnects"]
        # the front told it the worker was gone (server_shutdown), and it rejoined
        assert reconnect["code"] == "server_shutdown" and reconnect["recovered"], brief
        assert reconnect["publishers"] == [other] and reconnect["missing_publishers"] == []
        # media from the other bot again within 5 s of losing the worker
        print(name, "media back after", reconnect["media_after_ms"], "ms")
        assert 0 < reconnect["media_after_ms"] <= 5000, brief
        assert summary["ok"], brief
        second = [t for t in summary["tracks"] if t["session"] == 1]
        assert sorted(t["kind"] for t in second) == ["audio", "video"], summary["tracks"]
        assert all(t["frames_decoded"] > 0 for t in second), second
    for name, other in (("cat", "dan"), ("dan", "cat")):
        summary = summaries[name]
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        # the other room never noticed: no reconnect, no freeze, both tracks decoded
        assert summary["reconnects"] == [] and summary["ok"], brief
        tracks = [t for t in summary["tracks"] if t["participant_name"] == other]
        assert sorted(t["kind"] for t in tracks) == ["audio", "video"], summary["tracks"]
        assert all(t["frames_decoded"] > 0 for t in tracks), tracks


async def test_a_hung_worker_is_killed_and_its_clients_come_back_within_5_s(
    tmp_path: Path,
) -> None:
    """SIGSTOP: the worker's process lives and its sockets stay open, so nothing breaks by
    itself; without the front's health watch the bots would sit in a call with no media."""
    bots: dict[str, Any] = {}
    async with parley_serve("--workers", "2", "--log-level", "WARNING") as server:
        url = server.url
        stopped_pid = 0
        try:
            await wait_for(url, lambda b: all(w["alive"] for w in b["workers"]), 30, "up")
            for name in ("eve", "fay"):
                bots[name] = await start_bot(url, "hang", name, tmp_path, 16)
            body = await wait_for(url, lambda b: worker_with(b, 2, 4), 20, "forwarding")
            owner = worker_with(body, 2, 4)
            assert owner is not None
            await asyncio.sleep(2.0)  # media flows
            stopped_pid = int(owner["pid"])
            os.kill(stopped_pid, signal.SIGSTOP)
            stopped_at = time.time()
            body = await wait_for(
                url, lambda b: worker_with(b, 2, 4) is not None, 10, "the room re-placed"
            )
            moved = worker_with(body, 2, 4)
            assert moved is not None and moved["id"] != owner["id"], body
            body = await wait_for(
                url,
                lambda b: any(w["id"] == owner["id"] and w.get("answered") for w in b["workers"]),
                30,
                "the hung worker restarted",
            )
            restarted = next(w for w in body["workers"] if w["id"] == owner["id"])
            assert restarted["hangs"] == 1 and restarted["restarts"] == 1, restarted
            assert restarted["pid"] != stopped_pid, restarted
            # the stopped process was killed (gone, or a zombie until reaped)
            stat = Path(f"/proc/{stopped_pid}/stat")
            assert not stat.exists() or stat.read_text().split(")")[1].split()[0] in "ZX", stat
            codes = {n: await asyncio.wait_for(p.wait(), 60) for n, p in bots.items()}
        finally:
            for proc in bots.values():
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            if stopped_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stopped_pid, signal.SIGKILL)
        assert server.problems() == [], server.problems()
        assert any("has not answered" in line for line in server.stderr), server.stderr
    summaries = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in bots}
    assert codes == dict.fromkeys(bots, 0), (codes, {n: s["failed"] for n, s in summaries.items()})
    for name, other in (("eve", "fay"), ("fay", "eve")):
        summary = summaries[name]
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        (reconnect,) = summary["reconnects"]
        assert reconnect["code"] == "server_shutdown" and reconnect["recovered"], brief
        first = [
            summary["started_unix"] + t["first_frame_ms"] / 1000
            for t in summary["tracks"]
            if t["session"] == 1 and t["participant_name"] == other and t["frames_decoded"] > 0
        ]
        assert len(first) == 2, summary["tracks"]  # audio and video again
        back = max(first) - stopped_at
        print(f"{name}: media back {back:.2f} s after SIGSTOP", file=sys.stderr)
        assert 0 < back <= 5.0, (name, back, brief)
        assert summary["ok"], brief


async def _front_stops(server: ServerProcess) -> float:
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    await asyncio.wait_for(server.proc.wait(), 10)
    return time.monotonic() - started


async def test_sigterm_on_the_front_tells_clients_and_stops_the_workers() -> None:
    async with parley_serve("--workers", "2", "--log-level", "WARNING") as server:
        body = await wait_for(server.url, lambda b: all(w["alive"] for w in b["workers"]), 30, "up")
        pids = [w["pid"] for w in body["workers"]]
        ws_url = server.url.replace("http://", "ws://") + "/ws"
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
            await ws.send_json({"type": "join", "room": "r1", "name": "ann"})
            joined = await ws.receive_json(timeout=10)
            assert joined["type"] == "joined", joined
            took = await _front_stops(server)
            goodbye = await ws.receive_json(timeout=5)
            assert goodbye["type"] == "server_shutdown", goodbye
            closing = await ws.receive(timeout=5)
            assert ws.closed or closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert server.proc.returncode == 0
        assert took < 2.0, took
        for pid in pids:  # no worker outlives the front
            assert (
                not Path(f"/proc/{pid}").exists()
                or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
            ), pid


async def test_the_front_keeps_what_one_process_enforces() -> None:
    """Origin check, frame limit, pre-join answers, tokens (checked by the worker), the
    page and its files, /healthz and /metrics behind the API secret: through the front."""
    secret = "s" * 32
    args = ("--workers", "2", "--log-level", "WARNING", "--max-message-bytes", "2000")
    async with parley_serve(*args, "--api-key", "key", "--api-secret", secret) as server:
        url = server.url
        ws_url = url.replace("http://", "ws://") + "/ws"
        auth = {"Authorization": f"Bearer {secret}"}
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(url + "/healthz") as response:
                assert await response.json() == {"status": "ok"}  # no counts without access
            async with http.get(url + "/healthz", headers=auth) as response:
                body = await response.json()
            assert [w["id"] for w in body["workers"]] == ["w0", "w1"], body
            assert all(w["answered"] for w in body["workers"]), body
            assert all(w["cpu_seconds"] > 0 for w in body["workers"]), body
            assert body["front_cpu_seconds"] > 0, body
            async with http.get(url + "/metrics") as response:
                assert response.status == 401
            async with http.get(url + "/metrics", headers=auth) as response:
                text = await response.text()
            assert 'parley_rooms{worker="w0"}' in text and 'parley_rooms{worker="w1"}' in text
            async with http.get(url + "/") as response:
                assert response.status == 200 and "<html" in (await response.text())
            async with http.get(url + "/static/parley-client.js") as response:
                assert response.status == 200
            # a page elsewhere may not open the websocket
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(ws_url, headers={"Origin": "http://evil.example"})
            assert refused.value.status == 403
            async with http.ws_connect(ws_url) as ws:
                await ws.send_json({"type": "ping", "request_id": 1})
                assert (await ws.receive_json(timeout=5)) == {"type": "pong", "request_id": 1}
                await ws.send_json({"type": "leave"})
                error = await ws.receive_json(timeout=5)
                assert error["type"] == "error" and error["code"] == "wrong_state", error
                # the join reaches a worker, which wants a token
                await ws.send_json({"type": "join", "room": "r1", "name": "ann"})
                error = await ws.receive_json(timeout=5)
                assert error["type"] == "error" and error["code"] == "token_required", error
                # still unjoined: a join for another room would reach the wrong worker
                await ws.send_json({"type": "join", "room": "r2", "name": "ann"})
                error = await ws.receive_json(timeout=5)
                assert error["code"] == "wrong_state" and "r1" in error["message"], error
                # a frame over the limit: too_large, then 1009
                await ws.send_str(json.dumps({"type": "ping", "pad": "x" * 3000}))
                error = await ws.receive_json(timeout=5)
                assert error["code"] == "too_large", error
                closing = await ws.receive(timeout=5)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
            # with a token, the worker admits the join
            token = mint_token("key", secret, room="r1", identity="ann", now=time.time())
            async with http.ws_connect(ws_url) as ws:
                await ws.send_json({"type": "join", "room": "r1", "name": "x", "token": token})
                joined = await ws.receive_json(timeout=10)
                assert joined["type"] == "joined" and joined["room"] == "r1", joined
                # the admin API through the front: checked there, then the room's worker
                async with http.get(url + "/admin/rooms") as response:
                    assert response.status == 401
                async with http.get(url + "/admin/rooms", headers=auth) as response:
                    rooms = (await response.json())["rooms"]
                assert [(r["room"], r["participants"]) for r in rooms] == [("r1", 1)], rooms
                assert rooms[0]["worker"] in ("w0", "w1"), rooms
                async with http.get(url + "/admin/rooms/r1", headers=auth) as response:
                    shown = await response.json()
                assert [p["identity"] for p in shown["participants"]] == ["ann"], shown
                async with http.delete(url + "/admin/rooms/r1", headers=auth) as response:
                    assert (await response.json())["closed"] is True
                left = await ws.receive_json(timeout=5)
                assert left["type"] == "left" and left["reconnect"] is False, left
                async with http.get(url + "/admin/rooms/r1", headers=auth) as response:
                    assert response.status == 404
        assert server.problems() == [], server.problems()


async def test_the_front_drains_then_stops() -> None:
    args = ("--workers", "2", "--log-level", "WARNING", "--drain-timeout", "20")
    async with parley_serve(*args) as server:
        await wait_for(server.url, lambda b: all(w["alive"] for w in b["workers"]), 30, "up")
        ws_url = server.url.replace("http://", "ws://") + "/ws"
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.ws_connect(ws_url) as ws:
                await ws.send_json({"type": "join", "room": "r1", "name": "ann"})
                assert (await ws.receive_json(timeout=10))["type"] == "joined"
                server.signal(signal.SIGTERM)
                deadline = time.monotonic() + 5
                status = 0
                while status != 503 and time.monotonic() < deadline:
                    async with http.get(server.url + "/healthz") as response:
                        status = response.status
                        body = await response.json()
                    await asyncio.sleep(0.05)
                assert status == 503 and body["status"] == "draining", body
                async with http.ws_connect(ws_url) as late:  # a new join is refused
                    await late.send_json({"type": "join", "room": "r2", "name": "bob"})
                    refused = await late.receive_json(timeout=5)
                    assert refused["code"] == "server_draining", refused
                    closing = await late.receive(timeout=5)
                    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1013
                assert server.proc.returncode is None  # still waiting for ann
                left_at = time.monotonic()
                await ws.send_json({"type": "leave"})
                assert (await ws.receive_json(timeout=5))["type"] == "left"
            await asyncio.wait_for(server.proc.wait(), 10)
        # the last participant left: the drain ends and the front stops soon after
        assert server.proc.returncode == 0
        assert time.monotonic() - left_at < 3.0
