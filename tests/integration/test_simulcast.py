"""Simulcast end to end: a bot publishes three VP8 layers like Chromium, subscriber bots
ask for different heights and decode different sizes; one changes its mind mid-call."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from loadgen.bot import Bot, BotConfig, run_bot
from sfu.participant import Participant

from .conftest import RunningServer

SIZES = {180: [320, 180], 360: [640, 360], 720: [1280, 720]}


def _video_from(summary: dict[str, Any], participant: str) -> dict[str, Any]:
    (track,) = [
        t for t in summary["tracks"] if t["participant"] == participant and t["kind"] == "video"
    ]
    return track


def _decode_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]


def _publisher(server: RunningServer, room: str) -> Participant:
    (p,) = [p for p in server.sfu.rooms[room].participants.values() if p.name == "cam"]
    return p


def _diagnose(server: RunningServer, room: str) -> list[Any]:
    """What each subscriber's layer choice was based on (shown when a test fails)."""
    loop = asyncio.get_event_loop()
    out: list[Any] = []
    for p in server.sfu.rooms[room].participants.values():
        for sub in p.subscriptions.values():
            f = sub.forwarder
            if f.is_video:
                out.append(
                    (
                        p.name,
                        f.request,
                        p.remb_bitrate,
                        round(p.egress_bitrate),
                        f.layer_infos(loop.time(), 1.5),
                        f.current.rid if f.current else None,
                        f.target.rid if f.target else None,
                        f.selector.last_limited,
                    )
                )
    return out


async def test_subscribers_get_the_layer_they_ask_for(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    publisher = BotConfig(url=server.url, room="sc", name="cam", duration=14.0, simulcast=True)
    subscribers = [
        BotConfig(
            url=server.url,
            room="sc",
            name=f"h{height}",
            duration=11.0,
            publish=False,
            max_height=height,
        )
        for height in SIZES
    ]
    layers_seen: dict[str, int] = {}

    async def inspect() -> None:
        await asyncio.sleep(6.0)
        track = next(t for t in _publisher(server, "sc").tracks.values() if t.kind == "video")
        for layer in track.layers:
            layers_seen[layer.rid or ""] = layer.packets
        assert track.rids == ("q", "h", "f")
        # every layer is bound to an SSRC and wanted by exactly one subscriber
        assert all(layer.ssrc is not None for layer in track.layers)
        assert [len(layer.forwarders) for layer in track.layers] == [1, 1, 1], _diagnose(
            server, "sc"
        )

    pub_task = asyncio.ensure_future(run_bot(publisher))
    await asyncio.sleep(1.0)
    *summaries, _ = await asyncio.gather(*(run_bot(c) for c in subscribers), inspect())
    pub_summary = await pub_task
    assert pub_summary["ok"], pub_summary
    assert all(count > 50 for count in layers_seen.values()), layers_seen
    for height, summary in zip(SIZES, summaries, strict=True):
        assert summary["ok"], summary
        video = _video_from(summary, pub_summary["id"])
        assert video["resolutions"] == [SIZES[height]], (height, video)
        assert video["frames_decoded"] > 60, video
        assert video["layer_switches"] == 0, video
    assert _decode_failures(caplog) == []


async def test_a_layer_nobody_wants_is_not_forwarded_and_a_subscriber_switches_up_and_down(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    publisher = BotConfig(url=server.url, room="sw", name="cam", duration=16.0, simulcast=True)
    small = BotConfig(
        url=server.url, room="sw", name="small", duration=13.0, publish=False, max_height=180
    )
    changer = Bot(
        BotConfig(
            url=server.url, room="sw", name="changer", duration=13.0, publish=False, max_height=180
        )
    )
    checks: dict[str, Any] = {}

    async def drive() -> None:
        await asyncio.sleep(5.0)
        track = next(t for t in _publisher(server, "sw").tracks.values() if t.kind == "video")
        checks["before"] = [len(layer.forwarders) for layer in track.layers]
        checks["packets"] = [layer.packets for layer in track.layers]
        await changer.set_max_height(None, 720)
        await asyncio.sleep(1.5)
        checks["after"] = [len(layer.forwarders) for layer in track.layers]
        await asyncio.sleep(2.0)
        await changer.set_max_height(None, 180)  # and back down
        await asyncio.sleep(1.5)
        checks["down"] = [len(layer.forwarders) for layer in track.layers]

    pub_task = asyncio.ensure_future(run_bot(publisher))
    await asyncio.sleep(1.0)
    small_summary, changer_summary, _ = await asyncio.gather(run_bot(small), changer.run(), drive())
    pub_summary = await pub_task
    # both want q: h and f are received from the publisher but forwarded to nobody
    assert checks["before"] == [2, 0, 0], checks
    assert all(n > 20 for n in checks["packets"]), checks
    assert checks["after"] == [1, 0, 1], checks
    assert checks["down"] == [2, 0, 0], checks
    assert small_summary["ok"] and changer_summary["ok"]
    video = _video_from(changer_summary, pub_summary["id"])
    assert video["resolutions"] == [[320, 180], [1280, 720], [320, 180]], video
    assert video["layer_switches"] == 2, video
    # switching (up, then down) waits for a keyframe of the new layer: no long freeze, no
    # decoder error
    assert video["max_freeze_ms"] < 1500, video
    assert _video_from(small_summary, pub_summary["id"])["resolutions"] == [[320, 180]]
    assert _decode_failures(caplog) == []
