"""``parley bot``'s verdict on real calls: ``ok`` (and the exit code) say whether the call
was good. A publisher stopped for a few seconds freezes its watchers' video; a server that
dies ends the run of a bot without ``--reconnect``; both fail with the condition named."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from loadgen.bot import BotConfig, run_bot
from tests.integration.conftest import RunningServer
from tests.integration.test_bot_reconnect import free_port, start_server, wait_for_forwarders

from ._wait import until

PARLEY = [sys.executable, "-m", "parley"]


async def test_a_publisher_stopped_for_seconds_fails_its_watchers_verdict(
    server: RunningServer, tmp_path: Path
) -> None:
    """SIGSTOP the publisher for 2.5 s: the watcher's video freezes that long. With the
    default --max-freeze-ms (1000) the watcher's verdict fails with ``freeze`` and it exits
    1; a watcher allowing 6000 ms is ok."""
    publisher = await asyncio.create_subprocess_exec(
        *PARLEY, "bot", "--url", server.url, "--room", "freeze", "--name", "cam",
        "--duration", "16", "--json", str(tmp_path / "cam.json"),
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    strict = await asyncio.create_subprocess_exec(
        *PARLEY, "bot", "--url", server.url, "--room", "freeze", "--name", "strict",
        "--no-publish", "--duration", "12", "--json", str(tmp_path / "strict.json"),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lenient = asyncio.ensure_future(
        run_bot(
            BotConfig(
                url=server.url,
                room="freeze",
                name="lenient",
                publish=False,
                duration=12.0,
                max_freeze_ms=6000.0,
            )
        )
    )
    try:

        def watched() -> bool:
            room = server.sfu.rooms.get("freeze")
            return (
                room is not None
                and sum(len(p.subscriptions) for p in room.participants.values()) >= 4
            )

        assert await until(watched, 15.0)
        await asyncio.sleep(2.5)  # video flows
        publisher.send_signal(signal.SIGSTOP)
        await asyncio.sleep(2.5)
        publisher.send_signal(signal.SIGCONT)
        strict_code = await strict.wait()
        assert strict.stderr is not None
        strict_line = (await strict.stderr.read()).decode()
        lenient_summary = await lenient
    finally:
        for proc in (publisher, strict):
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                await proc.wait()
    summary = json.loads((tmp_path / "strict.json").read_text())
    brief = {k: v for k, v in summary.items() if k != "events"}
    assert summary["ok"] is False and strict_code == 1, brief
    assert [f["code"] for f in summary["failed"]] == ["freeze"], brief
    assert "video from cam froze for" in summary["failed"][0]["message"], brief
    assert "not ok: freeze: video from cam froze for" in strict_line, strict_line
    (video,) = [t for t in summary["tracks"] if t["kind"] == "video"]
    assert 2000 <= video["max_freeze_ms"] <= 6000, video
    assert video["freezes"] and all(ms > 1000 for _, ms in video["freezes"]), video
    # the same call judged with a looser limit is ok
    assert lenient_summary["ok"], {k: v for k, v in lenient_summary.items() if k != "events"}
    assert lenient_summary["limits"]["max_freeze_ms"] == 6000.0


async def test_without_reconnect_a_dead_server_ends_the_run_not_ok(tmp_path: Path) -> None:
    """The server is killed 2 s into a 20 s call: the bot stops at once, exits 1 and says
    the connection was lost (the old verdict said ok)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server, _ = await start_server(port)
    bots = [
        await asyncio.create_subprocess_exec(
            *PARLEY,
            "bot",
            "--url",
            url,
            "--room",
            "die",
            "--name",
            name,
            "--duration",
            "20",
            "--json",
            str(tmp_path / f"{name}.json"),
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        for name in ("ada", "bob")
    ]
    try:
        await wait_for_forwarders(url, 4, 15.0)
        await asyncio.sleep(2.0)
        server.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        codes = [await asyncio.wait_for(bot.wait(), 10.0) for bot in bots]
        ended_after = time.monotonic() - killed_at
    finally:
        for proc in (server, *bots):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert codes == [1, 1]
    assert ended_after < 5.0, ended_after
    for name in ("ada", "bob"):
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        brief = {k: v for k, v in summary.items() if k not in ("events", "tracks")}
        assert summary["ok"] is False and summary["duration_s"] < 15, brief
        assert [f["code"] for f in summary["failed"]] == ["connection_lost"], brief
        assert "websocket closed" in summary["failed"][0]["message"], brief
        assert summary["reconnects"] == [], brief
        # media did flow before: the failure is the lost connection alone
        assert all(t["frames_decoded"] > 0 for t in summary["tracks"]), summary["tracks"]


async def test_server_shutdown_is_named_and_a_reconnecting_bot_comes_back(
    tmp_path: Path,
) -> None:
    """SIGTERM: the server says ``server_shutdown`` (with its reason) before it goes. A bot
    without --reconnect ends not ok with ``server_shutdown`` and that reason; one with
    --reconnect rejoins the restarted server (backoff from ``retry_after_ms``) and is ok."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server, _ = await start_server(port)
    plain = await asyncio.create_subprocess_exec(
        *PARLEY, "bot", "--url", url, "--room", "bye", "--name", "plain",
        "--duration", "20", "--json", str(tmp_path / "plain.json"),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    again = await asyncio.create_subprocess_exec(
        *PARLEY, "bot", "--url", url, "--room", "bye", "--name", "again", "--reconnect",
        "--duration", "16", "--json", str(tmp_path / "again.json"),
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    restarted = None
    try:
        await wait_for_forwarders(url, 4, 15.0)
        await asyncio.sleep(1.5)
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 10.0) is not None
        plain_code = await asyncio.wait_for(plain.wait(), 10.0)
        assert plain.stderr is not None
        plain_line = (await plain.stderr.read()).decode()
        restarted, _ = await start_server(port)
        again_code = await asyncio.wait_for(again.wait(), 30.0)
    finally:
        for proc in (server, restarted, plain, again):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    summary = json.loads((tmp_path / "plain.json").read_text())
    brief = {k: v for k, v in summary.items() if k not in ("tracks",)}
    assert plain_code == 1 and summary["ok"] is False, brief
    assert [f["code"] for f in summary["failed"]] == ["server_shutdown"], brief
    assert "server is shutting down" in summary["failed"][0]["message"], brief
    assert "not ok: server_shutdown:" in plain_line, plain_line
    (event,) = [e for e in summary["events"] if e["type"] == "server_shutdown"]
    assert event["retry_after_ms"] > 0, event
    summary = json.loads((tmp_path / "again.json").read_text())
    brief = {k: v for k, v in summary.items() if k not in ("tracks", "events")}
    assert again_code == 0 and summary["ok"], brief
    (reconnect,) = summary["reconnects"]
    assert reconnect["code"] == "server_shutdown" and reconnect["recovered"], brief
    assert "server is shutting down" in reconnect["message"], reconnect
