"""``parley bot --reconnect`` across a server restart: two bots in a room, the server killed
(SIGKILL) and started again on the same port; both bots rejoin and get each other's media
back within 5 s of the server answering, and their verdicts are ok (the gap is accounted
as a reconnect, not as a freeze)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

#: the installed command's module, in a process of its own like a user's
PARLEY = [sys.executable, "-m", "parley"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=0.5) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except OSError:
        return None


async def start_server(port: int) -> tuple[asyncio.subprocess.Process, float]:
    """``parley serve`` on ``port``; returns it and when (time.time()) it first answered."""
    proc = await asyncio.create_subprocess_exec(
        *PARLEY, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING",
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.returncode is None, "parley serve exited"
        if await asyncio.to_thread(healthz, url) is not None:
            return proc, time.time()
        await asyncio.sleep(0.05)
    raise AssertionError("parley serve did not answer")


async def wait_for_forwarders(url: str, count: int, timeout: float) -> None:
    """Until the server forwards ``count`` tracks (both bots subscribed to each other)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await asyncio.to_thread(healthz, url)
        if body is not None and body.get("forwarders", 0) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {count} forwarders within {timeout} s: {body}")


def bot_command(url: str, name: str, tmp_path: Path) -> list[str]:
    return [
        *PARLEY, "bot", "--url", url, "--room", "restart", "--name", name, "--reconnect",
        "--duration", "24", "--json", str(tmp_path / f"{name}.json"),
    ]  # fmt: skip


def media_back(summary: dict[str, Any], other: str, answered: float) -> float:
    """Seconds from the server answering again to the first frames of ``other``'s audio
    and video on the bot's second connection (the later of the two)."""
    tracks = [t for t in summary["tracks"] if t["session"] == 1 and t["participant_name"] == other]
    assert sorted(t["kind"] for t in tracks) == ["audio", "video"], summary["tracks"]
    firsts = [summary["started_unix"] + t["first_frame_ms"] / 1000 for t in tracks]
    return max(firsts) - answered


async def test_two_bots_come_back_after_the_server_is_killed_and_restarted(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server, _ = await start_server(port)
    bots = {
        name: await asyncio.create_subprocess_exec(
            *bot_command(url, name, tmp_path), stderr=asyncio.subprocess.PIPE
        )
        for name in ("ada", "bob")
    }
    restarted: asyncio.subprocess.Process | None = None
    try:
        await wait_for_forwarders(url, 4, 15.0)
        await asyncio.sleep(2.0)  # media flows both ways
        server.send_signal(signal.SIGKILL)
        await server.wait()
        await asyncio.sleep(2.0)
        restarted, answered = await start_server(port)
        codes = [await proc.wait() for proc in bots.values()]
        stderr = {n: (await p.stderr.read()).decode() for n, p in bots.items() if p.stderr}
    finally:
        for proc in (server, restarted, *bots.values()):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    summaries = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in bots}
    for (name, summary), other in zip(summaries.items(), ("bob", "ada"), strict=True):
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        # one reconnection, recovered, after a lost websocket (SIGKILL sends no message)
        print(name, summary["reconnects"])
        (reconnect,) = summary["reconnects"]
        assert reconnect["code"] == "connection_lost" and reconnect["recovered"], brief
        assert reconnect["publishers"] == [other], brief
        assert reconnect["missing_publishers"] == [], brief
        # back with the other's media within 5 s of the server answering again
        back = media_back(summary, other, answered)
        assert 0 < back <= 5.0, (name, back, brief)
        assert reconnect["media_after_server_ms"] <= 5000, brief
        # the restart is a reconnect, not a freeze: the verdict is about recovering
        assert summary["ok"], brief
        assert summary["failed"] == [] and summary["verdict"] == "ok", brief
        # both connections' tracks decoded, the first one's ended with it
        first = [t for t in summary["tracks"] if t["session"] == 0]
        assert first and all(t["ended_with_connection"] for t in first), summary["tracks"]
        assert all(t["frames_decoded"] > 0 for t in summary["tracks"]), summary["tracks"]
        events = [e["type"] for e in summary["events"]]
        assert "disconnected" in events and "reconnected" in events, events
    assert codes == [0, 0], (codes, stderr)
