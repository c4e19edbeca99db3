"""Logs for operators: ``parley serve --log-format json`` with a real call.

Two real bots publish and subscribe in one room; a third client subscribes and pauses then
resumes a video. Every line the server writes must be one JSON object, the operator lines
must name room, participant and name for each join, leave (with reason), publish, unpublish
and pause/resume, and aioice's per-check chatter must not be there at INFO.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from loadgen.bot import BotConfig, run_bot
from sfu.aiortc_adapter import dtls

from ._clients import Client
from ._parley_process import ServerProcess, parley_serve


def _records(server: ServerProcess) -> list[dict[str, Any]]:
    records = []
    for line in server.stderr:
        record = json.loads(line)  # every line: one JSON object
        assert {"time", "level", "logger", "message"} <= set(record), record
        records.append(record)
    return records


def _events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event")]


async def _wait_for_event(server: ServerProcess, event: str, name: str) -> None:
    async with asyncio.timeout(15):
        while not any(
            r["event"] == event and r.get("name") == name for r in _events(_records(server))
        ):
            await asyncio.sleep(0.1)


async def _layer(client: Client, track: str, paused: bool, since: int) -> None:
    """Wait for a ``layer`` message of ``track`` saying ``paused``, after message ``since``."""
    async with asyncio.timeout(20):
        while not any(
            m["type"] == "layer" and m["track"] == track and m["paused"] is paused
            for m in client.messages[since:]
        ):
            await asyncio.sleep(0.05)


async def _pause_and_resume(url: str) -> None:
    """A subscriber pauses one video it receives, then resumes it."""
    async with aiohttp.ClientSession() as http:
        publisher = await Client(http, url).connect()
        watcher = await Client(http, url, answer=True).connect()
        try:
            await publisher.join("pause", "pat")
            answer = await publisher.publish()
            video = next(t["id"] for t in answer["tracks"] if t["kind"] == "video")
            await watcher.join("pause", "wes")
            await watcher.wait_for("subscribe_offer", timeout=20)
            await _layer(watcher, video, False, 0)  # the video is forwarded
            for paused in (True, False):
                since = len(watcher.messages)
                await watcher.send({"type": "set_layer", "track": video, "paused": paused})
                await _layer(watcher, video, paused, since)
        finally:
            await watcher.close()
            await publisher.close()


async def test_json_lines_name_room_and_participant_for_each_event() -> None:
    async with parley_serve("--log-format", "json") as server:
        bots = [
            BotConfig(url=server.url, room="ops", name=name, duration=3.0)
            for name in ("ann", "bob")
        ]
        summaries = await asyncio.gather(*(run_bot(c) for c in bots))
        assert all(s["ok"] for s in summaries), summaries
        await _pause_and_resume(server.url)
        for name in ("ann", "bob", "pat"):
            await _wait_for_event(server, "leave", name)
        records = _records(server)

    events = _events(records)
    for name in ("ann", "bob"):
        mine = [e for e in events if e.get("name") == name]
        kinds = [e["event"] for e in mine]
        assert kinds[0] == "join" and kinds[-1] == "leave", kinds
        assert sorted(e["kind"] for e in mine if e["event"] == "publish") == ["audio", "video"]
        assert sorted(e["kind"] for e in mine if e["event"] == "unpublish") == ["audio", "video"]
        for event in mine:
            assert event["room"] == "ops" and event["participant"], event
            assert event["level"] == "INFO" and event["logger"] == "parley.ops", event
            assert f"room=ops participant={event['participant']} name={name}" in event["message"]
        assert mine[-1]["reason"] == "left", mine[-1]
    pauses = [e for e in events if e["event"] in ("video_paused", "video_resumed")]
    assert [e["event"] for e in pauses] == ["video_paused", "video_resumed"], pauses
    assert all(e["room"] == "pause" and e["name"] == "wes" for e in pauses), pauses
    # ICE checks and per-request access lines stay below INFO by default
    noisy = [r for r in records if r["logger"].split(".")[0] in ("aioice", "aiortc")]
    assert all(r["level"] in ("WARNING", "ERROR") for r in noisy), noisy
    assert not [r for r in records if r["logger"] == "aiohttp.access"]


async def test_a_dtls_failure_names_room_participant_and_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client whose DTLS offers only ECDHE-RSA suites cannot shake hands with Parley's
    ECDSA certificate: the server's lines say who failed, where, and why (the alert)."""
    # this test's client only (the server is another process): Parley's own adapter, whose
    # DTLS client suites (``dtls.CIPHERS``) are cut down to ECDHE-RSA
    monkeypatch.setattr(dtls, "CIPHERS", b"ECDHE-RSA-AES128-GCM-SHA256")
    async with parley_serve("--log-format", "json") as server, aiohttp.ClientSession() as http:
        client = await Client(http, server.url).connect()
        try:
            await client.join("dtls", "mallory")
            await client.publish()
            await _wait_for_event(server, "leave", "mallory")
        finally:
            await client.close()
            if client.pub_pc is not None:
                await client.pub_pc.close()
        records = _records(server)
    failed = [r for r in _events(records) if r["event"] == "dtls_failed"]
    assert len(failed) == 1, records
    assert failed[0]["room"] == "dtls" and failed[0]["name"] == "mallory", failed
    assert failed[0]["level"] == "WARNING" and "handshake_failure" in failed[0]["reason"], failed
    assert "room=dtls participant=" in failed[0]["message"], failed
    leave = next(r for r in _events(records) if r["event"] == "leave")
    assert leave["participant"] == failed[0]["participant"], leave
    assert "DTLS: sent fatal alert handshake_failure" in leave["reason"], leave
