"""The bundled web page (web/index.html + web/app.js) in real headless Chromium."""

from __future__ import annotations

import asyncio
from typing import Any

from loadgen.bot import BotConfig, run_bot

from .conftest import AppPage, OpenApp, RestartableServer, RunningServer, wait_for

#: Smaller than the page's default 1280x720 camera: two pages and a bot share 2 cores.
SMALL = "size=640x360"


def _url(room: str, name: str, *extra: str) -> str:
    return "&".join([f"room={room}", f"name={name}", "autojoin=1", SMALL, *extra])


async def _sees_media_of(page: AppPage, others: set[str], timeout: float = 15.0) -> None:
    """Every participant in ``others`` has a tile whose video plays and whose audio arrives."""

    async def first() -> dict[str, dict[str, Any]] | None:
        tiles = await page.remote_tiles()
        ok = all(
            p in tiles
            and tiles[p]["videoWidth"] > 0
            and tiles[p]["framesDecoded"] > 0
            and tiles[p]["audioPackets"] > 0
            for p in others
        )
        return tiles if ok else None

    before = await wait_for(first, timeout)
    assert before, (await page.remote_tiles(), page.report())

    async def growing() -> bool:
        tiles = await page.remote_tiles()
        return all(
            tiles[p]["framesDecoded"] > before[p]["framesDecoded"] + 5
            and tiles[p]["audioPackets"] > before[p]["audioPackets"] + 10
            for p in others
        )

    assert await wait_for(growing, 5.0), (before, await page.remote_tiles())


async def test_two_pages_and_a_bot_see_and_hear_each_other(
    server: RunningServer, open_app: OpenApp
) -> None:
    ada = await open_app(server.url, _url("w1", "Ada"))
    bob = await open_app(server.url, _url("w1", "Bob"))
    ada_id = await ada.wait_published()
    bob_id = await bob.wait_published()
    bot = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="w1", name="bot", duration=10.0))
    )
    try:

        async def bot_id() -> str | None:
            room = server.sfu.rooms.get("w1")
            return (
                next((p.id for p in room.participants.values() if p.name == "bot"), None)
                if room
                else None
            )

        bid = await wait_for(bot_id, 10.0)
        assert bid
        await _sees_media_of(ada, {bob_id, bid})
        await _sees_media_of(bob, {ada_id, bid})
        names = {pid: t["name"] for pid, t in (await ada.remote_tiles()).items()}
        assert names == {bob_id: "Bob", bid: "bot"}, names
        assert all(t["hasAudio"] for t in (await ada.remote_tiles()).values())

        # the bot's tone is loud and steady: its tile is outlined as speaking
        async def bot_speaking() -> bool:
            return "speaking" in (await ada.remote_tiles())[bid]["classes"]

        assert await wait_for(bot_speaking, 5.0), await ada.remote_tiles()
        summary = await bot
    finally:
        if not bot.done():
            bot.cancel()
    assert summary["ok"], summary
    for pid in (ada_id, bob_id):
        kinds = {t["kind"]: t for t in summary["tracks"] if t["participant"] == pid}
        assert kinds["video"]["frames_decoded"] > 20, kinds
        assert kinds["audio"]["frames_decoded"] > 50, kinds


async def _click(page: AppPage, selector: str) -> None:
    await page.page.click(selector)


async def test_muted_audio_stops_reaching_the_others_and_a_leaver_disappears(
    server: RunningServer, open_app: OpenApp
) -> None:
    ada = await open_app(server.url, _url("w2", "Ada"))
    bob = await open_app(server.url, _url("w2", "Bob"))
    ada_id = await ada.wait_published()
    bob_id = await bob.wait_published()
    await _sees_media_of(bob, {ada_id})

    async def audio_from_ada() -> int:
        return (await bob.remote_tiles())[ada_id]["audioPackets"]

    async def flowing() -> bool:
        before = await audio_from_ada()
        await asyncio.sleep(0.5)
        return await audio_from_ada() > before + 10

    await _click(ada, "#mic")

    async def button_says(text: str) -> bool:
        return await ada.evaluate("() => document.getElementById('mic').textContent") == text

    assert await wait_for(lambda: button_says("Unmute"), 2.0)
    assert await ada.evaluate("() => window.parleyApp.client.isMuted('audio')")
    await asyncio.sleep(0.5)  # what was in flight
    muted_at = await audio_from_ada()
    await asyncio.sleep(1.5)
    assert await audio_from_ada() == muted_at, "Ada's muted audio still reaches Bob"
    assert "speaking" not in (await bob.remote_tiles())[ada_id]["classes"]
    # her video goes on
    frames = (await bob.remote_tiles())[ada_id]["framesDecoded"]
    await asyncio.sleep(0.5)
    assert (await bob.remote_tiles())[ada_id]["framesDecoded"] > frames

    await _click(ada, "#mic")
    assert await wait_for(lambda: button_says("Mute"), 2.0)
    assert await wait_for(flowing, 5.0), await audio_from_ada()

    await _click(ada, "#leave")

    async def ada_gone() -> bool:
        return ada_id not in await bob.remote_tiles()

    assert await wait_for(ada_gone, 5.0), await bob.remote_tiles()
    assert await bob.evaluate(
        "(id) => !document.querySelector(`.tile[data-participant='${id}']`)", ada_id
    )

    # Ada is back at the form, told she left. Her page gets there once it has the
    # server's "left" reply and has closed its peer connections, which can come after Bob
    # already saw her go (about 0.1 s later with Chromium 150).
    async def ada_in_lobby() -> bool:
        return bool(await ada.evaluate("() => !document.getElementById('lobby').hidden"))

    assert await wait_for(ada_in_lobby, 3.0)
    assert (await ada.notice() or "").startswith("You left w2."), await ada.notice()
    assert list(server.sfu.rooms["w2"].participants) == [bob_id]


async def test_a_small_tile_gets_a_lower_layer_and_a_tile_out_of_view_is_paused(
    server: RunningServer, open_app: OpenApp
) -> None:
    cam = await open_app(server.url, "room=w3&name=Cam&autojoin=1&size=1280x720&mic=0")
    cam_id = await cam.wait_published()
    viewer = await open_app(
        server.url, "room=w3&name=Viewer&autojoin=1&camera=0&mic=0", width=1280, height=800
    )

    async def layer(**wanted: Any) -> dict[str, Any] | None:
        tile = (await viewer.remote_tiles()).get(cam_id)
        current = tile and tile["layer"]
        if current and all(current[k] == v for k, v in wanted.items()):
            return tile
        return None

    # a 628x353 tile asks for at most 1.9 times that: `h` (640x360), or `f` if Chromium
    # scaled its top layer down for lack of CPU
    async def large_layer() -> dict[str, Any] | None:
        tile = (await viewer.remote_tiles()).get(cam_id)
        current = tile and tile["layer"]
        return tile if current and current["rid"] in ("h", "f") else None

    large = await wait_for(large_layer, 15.0)
    assert large, (await viewer.remote_tiles(), viewer.report())
    assert large["width"] > 500, large
    assert large["asked"]["maxHeight"] >= 360, large

    await viewer.page.set_viewport_size({"width": 480, "height": 320})
    small = await wait_for(lambda: layer(rid="q", paused=False), 10.0)
    assert small, await viewer.remote_tiles()
    assert small["width"] < large["width"], (small, large)
    assert small["asked"]["maxHeight"] < 360, small
    assert small["layer"]["height"] < large["layer"]["height"], (small, large)

    async def plays_small() -> bool:
        tile = (await viewer.remote_tiles())[cam_id]
        return 0 < tile["videoHeight"] <= small["layer"]["height"]

    assert await wait_for(plays_small, 10.0), await viewer.remote_tiles()

    # out of view: paused; back in view: resumed
    move = "(id) => { document.querySelector(`.tile[data-participant='${id}']`).style.transform = %s; }"
    await viewer.evaluate(move % "'translateY(-5000px)'", cam_id)
    assert await wait_for(lambda: layer(paused=True), 5.0), await viewer.remote_tiles()
    await viewer.evaluate(move % "''", cam_id)
    assert await wait_for(lambda: layer(rid="q", paused=False), 10.0), await viewer.remote_tiles()

    # the stats overlay says what the server forwards
    await viewer.page.click("#stats-toggle")

    async def overlay() -> str | None:
        stats = (await viewer.remote_tiles())[cam_id]["stats"]
        return stats if "layer: q " in stats and " fps" in stats else None

    assert await wait_for(overlay, 5.0), await viewer.remote_tiles()


async def test_the_page_rejoins_by_itself_after_the_server_restarts(
    restartable_server: RestartableServer, open_app: OpenApp
) -> None:
    server = restartable_server
    ada = await open_app(server.url, _url("w4", "Ada"))
    bob = await open_app(server.url, _url("w4", "Bob"))
    ada_id = await ada.wait_published()
    bob_id = await bob.wait_published()
    await _sees_media_of(ada, {bob_id})

    await server.stop()

    async def reconnecting() -> bool:
        states = [await ada.client_state(), await bob.client_state()]
        return states == ["reconnecting", "reconnecting"]

    assert await wait_for(reconnecting, 5.0), [await ada.status(), await bob.status()]
    assert "Reconnecting" in await ada.status()
    assert not await ada.remote_tiles(), "tiles of the old session stay"

    restarted = await server.start()
    new_ada = await ada.wait_published(timeout=20.0)
    new_bob = await bob.wait_published(timeout=20.0)
    assert {new_ada, new_bob}.isdisjoint({ada_id, bob_id})
    room = restarted.sfu.rooms["w4"]
    assert sorted(p.name for p in room.participants.values()) == ["Ada", "Bob"]
    await _sees_media_of(ada, {new_bob})
    await _sees_media_of(bob, {new_ada})
    assert (await ada.status()).startswith("Connected"), await ada.status()


async def test_the_page_rejoins_when_the_server_drops_its_peer_connection(
    server: RunningServer, open_app: OpenApp
) -> None:
    # what the server does when ICE consent fails: `left` ("peer connection failed"),
    # then it closes the websocket
    ada = await open_app(server.url, _url("w5", "Ada"))
    bob = await open_app(server.url, _url("w5", "Bob"))
    ada_id = await ada.wait_published()
    bob_id = await bob.wait_published()
    await _sees_media_of(ada, {bob_id})
    await server.sfu.rooms["w5"].participants[ada_id].close("peer connection failed")

    async def rejoined() -> str | None:
        new_id = await ada.participant_id()
        state = await ada.client_state()
        return new_id if state == "joined" and new_id not in (None, ada_id) else None

    new_id = await wait_for(rejoined, 10.0)
    assert new_id, (await ada.status(), ada.report())
    assert await ada.wait_published() == new_id
    # her new session sends (the server receives her republished tracks)...
    participant = server.sfu.rooms["w5"].participants[new_id]
    assert sorted(t.kind for t in participant.tracks.values()) == ["audio", "video"]
    # ...and receives: Bob's video and audio play again in her page
    await _sees_media_of(ada, {bob_id})

    # Bob's page swapped her old tile for the new one
    async def swapped() -> bool:
        tiles = await bob.remote_tiles()
        return list(tiles) == [new_id] and tiles[new_id]["name"] == "Ada"

    assert await wait_for(swapped, 5.0), await bob.remote_tiles()
    # ...and receives her new video and audio on the m-lines her old tracks left
    await _sees_media_of(bob, {new_id})


async def test_the_page_rejoins_when_its_ice_connection_fails(
    server: RunningServer, open_app: OpenApp
) -> None:
    # the websocket stays up; the page's publish connection reports `failed` (made up
    # here: real ICE on loopback does not fail) and the client rejoins on its own
    ada = await open_app(server.url, _url("w6", "Ada", "camera=0"))
    ada_id = await ada.wait_published()
    await ada.evaluate(
        """() => {
          const pc = window.parleyApp.client.publishConnection;
          Object.defineProperty(pc, "connectionState", {value: "failed"});
          pc.dispatchEvent(new Event("connectionstatechange"));
        }"""
    )

    async def rejoined() -> str | None:
        new_id = await ada.participant_id()
        state = await ada.client_state()
        return new_id if state == "joined" and new_id not in (None, ada_id) else None

    new_id = await wait_for(rejoined, 10.0)
    assert new_id, (await ada.status(), ada.report())
    assert await ada.wait_published() == new_id
    assert list(server.sfu.rooms["w6"].participants) == [new_id]


async def test_switching_the_microphone_keeps_the_call_going(
    server: RunningServer, open_app: OpenApp
) -> None:
    ada = await open_app(server.url, _url("w7", "Ada"))
    bob = await open_app(server.url, _url("w7", "Bob", "camera=0"))
    ada_id = await ada.wait_published()
    await bob.wait_published()
    await _sees_media_of(bob, {ada_id})
    tracks = sorted(server.sfu.rooms["w7"].participants[ada_id].tracks)

    options = await ada.evaluate(
        "() => [...document.getElementById('mic-select').options].map((o) => o.value)"
    )
    current = await ada.evaluate("() => document.getElementById('mic-select').value")
    others = [o for o in options if o != current]
    assert others, f"Chromium's fake devices offer one microphone only: {options}"
    await ada.page.select_option("#mic-select", others[0])

    async def switched() -> bool:
        return await ada.evaluate(
            """(wanted) => {
              const pc = window.parleyApp.client.publishConnection;
              const sender = pc.getSenders().find((s) => s.track && s.track.kind === "audio");
              return !!sender && sender.track.getSettings().deviceId === wanted;
            }""",
            others[0],
        )

    assert await wait_for(switched, 5.0), ada.report()
    # no renegotiation: the same published tracks, and Bob still hears and sees Ada
    assert sorted(server.sfu.rooms["w7"].participants[ada_id].tracks) == tracks
    await _sees_media_of(bob, {ada_id})
    assert await ada.notice() is None
