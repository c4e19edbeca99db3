"""Real headless Chromium running web/parley-client.js against the real server and bots."""

from __future__ import annotations

import asyncio
from typing import Any

from loadgen.bot import BotConfig, run_bot
from signaling.server import JoinRequest, ServerConfig

from .conftest import ClientPage, OpenClient, RunningServer, ServerFactory, wait_for


def _tracks_from(summary: dict[str, Any], participant: str) -> dict[str, dict[str, Any]]:
    return {t["kind"]: t for t in summary["tracks"] if t["participant"] == participant}


async def _remote_of_other(page: ClientPage, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """The first remote track of ``kind`` that is not the page's own."""

    async def probe() -> dict[str, Any] | None:
        for t in await page.remote_tracks():
            if t["kind"] == kind and t["participant"] != page.id:
                return t
        return None

    track = await wait_for(probe, timeout)
    assert track, f"no remote {kind} track within {timeout} s: {await page.events()}"
    return track


async def _video_plays(page: ClientPage, track_id: str) -> dict[str, Any]:
    """Attach the track to a <video>; wait for a size and for frames to keep coming."""
    element = await page.play(track_id)

    async def sized() -> dict[str, Any] | None:
        state = await page.video_element(element)
        return state if state["width"] > 0 and state["totalVideoFrames"] > 0 else None

    first = await wait_for(sized, 10.0)
    assert first, await page.video_element(element)
    stats = await page.inbound_stats(track_id)
    assert stats is not None
    await asyncio.sleep(1.0)
    later = await page.video_element(element)
    later_stats = await page.inbound_stats(track_id)
    assert later_stats is not None
    assert later["totalVideoFrames"] > first["totalVideoFrames"], (first, later)
    assert later_stats["framesDecoded"] > stats["framesDecoded"], (stats, later_stats)
    return later


async def test_page_and_bot_exchange_audio_and_video(
    server: RunningServer, open_client: OpenClient
) -> None:
    page = await open_client(server)
    page_id = await page.join("b1", "chromium")
    published = await page.publish(simulcast=False, width=1280, height=720)
    assert sorted(t["kind"] for t in published) == ["audio", "video"], published
    answer = await page.publish_answer_sdp()
    assert answer is not None and "VP8" in answer
    # in the loopback-only namespace Chromium offers 127.0.0.1 host candidates (it needs
    # --allow-loopback-in-peer-connection) and nothing else
    offer = await page.evaluate("() => window.client.publishConnection.localDescription.sdp")
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
    assert any(" 127.0.0.1 " in c and "typ host" in c and " udp " in c.lower() for c in candidates)
    assert all(" 127.0.0.1 " in c for c in candidates), candidates

    bot = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="b1", name="bot", duration=8.0))
    )
    try:
        video = await _remote_of_other(page, "video")
        audio = await _remote_of_other(page, "audio")
        played = await _video_plays(page, video["trackId"])
        assert (played["width"], played["height"]) == (320, 240), played
        audio_stats = await wait_for(
            lambda: _received_packets(page, audio["trackId"], at_least=25), 5.0
        )
        assert audio_stats, await page.inbound_stats(audio["trackId"])
        summary = await bot
    finally:
        if not bot.done():
            bot.cancel()

    assert summary["ok"], summary
    assert summary["errors"] == [], summary["errors"]
    received = _tracks_from(summary, page_id)
    assert sorted(received) == ["audio", "video"], summary["tracks"]
    assert received["audio"]["frames_decoded"] > 50, received["audio"]
    assert received["video"]["frames_decoded"] > 20, received["video"]
    # Chromium may start smaller (it adapts to CPU and bandwidth) but keeps the 16:9 shape
    for width, height in received["video"]["resolutions"]:
        assert 0 < width <= 1280 and 0 < height <= 720, received["video"]
        assert abs(width / height - 16 / 9) < 0.1, received["video"]
    for t in received.values():
        assert t["packets_lost"] <= max(2, t["packets"] // 50), t
    assert not await page.events("servererror")


async def _received_packets(page: ClientPage, track_id: str, at_least: int) -> bool:
    stats = await page.inbound_stats(track_id)
    return stats is not None and stats.get("packetsReceived", 0) >= at_least


async def test_page_publishes_three_simulcast_layers(
    server: RunningServer, open_client: OpenClient
) -> None:
    page = await open_client(server)
    page_id = await page.join("b2", "chromium")
    await page.publish(simulcast=True, width=1280, height=720)

    answer = await page.publish_answer_sdp()
    assert answer is not None
    # the SFU must accept the three layers, else Chromium sends only the lowest one
    assert "a=simulcast:recv" in answer, answer

    async def rids() -> set[str] | None:
        found = {s.get("rid") for s in await page.outbound_stats() if s["kind"] == "video"}
        return found if found == {"q", "h", "f"} else None

    assert await wait_for(rids, 10.0), await page.outbound_stats()

    async def sending() -> bool:
        stats = [s for s in await page.outbound_stats() if s["kind"] == "video"]
        return any(s.get("rid") == "q" and s.get("framesEncoded", 0) > 10 for s in stats)

    assert await wait_for(sending, 10.0), await page.outbound_stats()

    # and what the SFU forwards of it decodes
    summary = await run_bot(
        BotConfig(url=server.url, room="b2", name="watcher", duration=6.0, publish=False)
    )
    assert summary["ok"], summary
    video = _tracks_from(summary, page_id).get("video")
    assert video is not None and video["frames_decoded"] > 10, summary["tracks"]


async def test_malformed_message_gets_an_error_and_the_call_goes_on(
    server: RunningServer, open_client: OpenClient
) -> None:
    page = await open_client(server)
    page_id = await page.join("b3", "chromium")
    await page.publish(simulcast=False, width=640, height=360)
    bot = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="b3", name="bot", duration=8.0))
    )
    try:
        video = await _remote_of_other(page, "video")
        await _video_plays(page, video["trackId"])

        await page.evaluate('() => window.client.signaling.socket.send("{")')

        async def bad_json() -> list[dict[str, Any]]:
            return [
                e for e in await page.events("servererror") if e["detail"]["code"] == "bad_json"
            ]

        errors = await wait_for(bad_json, 5.0)
        assert errors, await page.events()
        # the session is intact: the server still answers, the page is still in the room...
        rtt = await page.evaluate("() => window.client.ping()")
        assert rtt >= 0
        assert await page.evaluate("() => window.client.state") == "joined"
        room = server.sfu.rooms["b3"]
        assert page_id in room.participants
        # ...and media keeps flowing both ways
        await _video_plays(page, video["trackId"])
        summary = await bot
    finally:
        if not bot.done():
            bot.cancel()
    assert summary["ok"], summary
    received = _tracks_from(summary, page_id)
    assert received["video"]["frames_decoded"] > 20, received
    assert received["video"]["max_freeze_ms"] < 1500, received
    assert not await page.events("clienterror")


async def test_muted_audio_stops_reaching_the_server(
    server: RunningServer, open_client: OpenClient
) -> None:
    page = await open_client(server)
    page_id = await page.join("b4", "chromium")
    await page.publish(simulcast=False, width=640, height=360)
    participant = server.sfu.rooms["b4"].participants[page_id]
    audio = next(t for t in participant.tracks.values() if t.kind == "audio")

    def audio_packets() -> int:
        return audio.source.packets

    async def flowing() -> bool:
        before = audio_packets()
        await asyncio.sleep(0.5)
        return audio_packets() > before + 10

    assert await wait_for(flowing, 5.0), audio_packets()

    await page.evaluate("() => window.client.setMuted('audio', true)")
    await asyncio.sleep(0.3)  # what was in flight
    muted_at = audio_packets()
    await asyncio.sleep(1.5)
    assert audio_packets() == muted_at, "muted audio still reaches the server"
    assert await page.evaluate("() => window.client.isMuted('audio')")

    await page.evaluate("() => window.client.setMuted('audio', false)")
    assert await wait_for(flowing, 5.0), audio_packets()
    mutes = [e["detail"] for e in await page.events("mute")]
    assert mutes == [{"kind": "audio", "muted": True}, {"kind": "audio", "muted": False}]


async def test_set_layer_chooses_what_a_page_receives(
    server: RunningServer, open_client: OpenClient
) -> None:
    sender = await open_client(server)
    sender_id = await sender.join("b5", "sender")
    await sender.publish(simulcast=True, width=1280, height=720)
    viewer = await open_client(server)
    await viewer.join("b5", "viewer")
    announced = await viewer.evaluate(
        "(p) => [...window.client.participants.get(p).tracks.values()]", sender_id
    )
    assert {t["kind"]: t.get("layers") for t in announced} == {
        "audio": None,
        "video": ["q", "h", "f"],
    }, announced
    video = await viewer.wait_remote_track(sender_id, "video")
    track_id = video["trackId"]
    element = await viewer.play(track_id)

    async def layer_is(**wanted: Any) -> dict[str, Any] | None:
        layers = [e["detail"] for e in await viewer.events("layer")]
        layers = [d for d in layers if d["track"] == track_id]
        last = layers[-1] if layers else None
        return last if last and all(last[k] == v for k, v in wanted.items()) else None

    async def plays_at(height: int) -> bool:
        state = await viewer.video_element(element)
        return state["height"] == height

    # the smallest tile: the quarter-size layer
    await viewer.evaluate(
        "(t) => window.client.setLayer(t, {maxWidth: 320, maxHeight: 180})", track_id
    )
    low = await wait_for(lambda: layer_is(rid="q", paused=False), 10.0)
    assert low, await viewer.events("layer")
    assert (low["width"], low["height"]) == (320, 180), low
    assert await wait_for(lambda: plays_at(180), 10.0), await viewer.video_element(element)
    assert await viewer.evaluate("(t) => window.client.layer(t)", track_id) == low

    # paused: the server says so and frames stop
    await viewer.evaluate("(t) => window.client.setLayer(t, {paused: true})", track_id)
    assert await wait_for(lambda: layer_is(paused=True), 5.0), await viewer.events("layer")
    await asyncio.sleep(0.5)
    frozen = (await viewer.inbound_stats(track_id) or {}).get("framesDecoded")
    await asyncio.sleep(1.0)
    assert (await viewer.inbound_stats(track_id) or {}).get("framesDecoded") == frozen

    # resumed at half size (fields left out keep their value: maxWidth too is raised)
    await viewer.evaluate(
        "(t) => window.client.setLayer(t, {maxWidth: 640, maxHeight: 360, paused: false})",
        track_id,
    )
    half = await wait_for(lambda: layer_is(rid="h", paused=False), 15.0)
    assert half, await viewer.events("layer")
    assert await wait_for(lambda: plays_at(360), 10.0), await viewer.video_element(element)
    assert not await viewer.events("servererror")


async def test_refused_join_rejects_and_can_be_retried(
    server_factory: ServerFactory, open_client: OpenClient
) -> None:
    async def authorize(join: JoinRequest) -> str | None:
        return None if join.token == "secret" else "wrong token"

    server = await server_factory(ServerConfig(authorize=authorize))
    page = await open_client(server)
    refused = await page.evaluate(
        """async () => {
          const client = new Parley.ParleyClient({room: "b6", name: "eve", token: "guess"});
          try { await client.join(); return null; }
          catch (e) { return {name: e.name, code: e.code, state: client.state}; }
        }"""
    )
    assert refused == {"name": "ParleyError", "code": "join_refused", "state": "new"}
    page_id = await page.join("b6", "ada", token="secret")
    assert page_id in server.sfu.rooms["b6"].participants
