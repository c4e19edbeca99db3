"""Publish offers aiortc cannot connect with are refused before anything is published,
and no task exception goes unretrieved when a participant closes during ICE.

Real server, real aiortc peers over loopback. The offers are aiortc's own with one
transport attribute taken out or spoiled (``sfu.sdp.check_transport``).
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription

from sfu.aiortc_adapter import create_peer_connection
from sfu.config import IceConfig

from .conftest import RunningServer


def _without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


async def _next(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads((await ws.receive(timeout=timeout)).data)


async def test_offers_without_usable_transport_attributes_get_bad_sdp(
    server: RunningServer,
) -> None:
    pc = create_peer_connection(IceConfig())
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    good = pc.localDescription.sdp
    fingerprint = next(line for line in good.split("\r\n") if line.startswith("a=fingerprint:"))
    bad = {
        "no a=fingerprint": _without(good, "a=fingerprint:"),
        "no a=setup": _without(good, "a=setup:"),
        "no a=ice-ufrag": _without(good, "a=ice-ufrag:"),
        "no a=ice-pwd": _without(good, "a=ice-pwd:"),
        "holdconn": good.replace("a=setup:actpass", "a=setup:holdconn"),
        "no a=fingerprint of a supported hash": "\r\n".join(
            "a=fingerprint:md5 " + line.split()[1] if line.startswith("a=fingerprint:") else line
            for line in good.split("\r\n")
        ),
        "is not a sha-256 digest": good.replace(fingerprint, fingerprint[:-3]),
    }
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{server.url}/ws") as watcher,
            http.ws_connect(f"{server.url}/ws") as offender,
        ):
            await watcher.send_json({"type": "join", "room": "offers", "name": "watcher"})
            assert (await _next(watcher))["type"] == "joined"
            await offender.send_json({"type": "join", "room": "offers", "name": "offender"})
            assert (await _next(offender))["type"] == "joined"
            assert (await _next(watcher))["type"] == "participant_joined"
            for expected, sdp in bad.items():
                await offender.send_json({"type": "publish_offer", "sdp": sdp, "request_id": 7})
                reply = await _next(offender)
                assert reply["type"] == "error" and reply["code"] == "bad_sdp", (expected, reply)
                assert expected in reply["message"], (expected, reply)
                assert reply["request_id"] == 7
            offender_p = next(
                p for p in server.sfu.rooms["offers"].participants.values() if p.name == "offender"
            )
            assert offender_p.tracks == {} and not offender_p.closed
            assert server.sfu.stats()["published_tracks"] == 0
            # the watcher heard of nothing: no track_published, no subscribe_offer
            try:
                seen = await _next(watcher, timeout=1.0)
            except TimeoutError:
                seen = None
            assert seen is None, seen
            # the same session can still publish properly, and then the watcher hears of it
            await offender.send_json({"type": "publish_offer", "sdp": good})
            assert (await _next(offender))["type"] == "publish_answer"
            assert (await _next(watcher))["type"] == "track_published"
    finally:
        await pc.close()


async def _client_closing_during_ice(url: str, room: str, name: str, delay: float) -> None:
    """Join, publish and answer the subscribe offer, then leave ``delay`` s after the
    publish offer went out: the server's peer connections are still connecting."""
    pc = create_peer_connection(IceConfig())
    sub = None
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/ws") as ws:
            await ws.send_json({"type": "join", "room": room, "name": name})
            await ws.receive(timeout=5)
            await ws.send_json({"type": "publish_offer", "sdp": pc.localDescription.sdp})
            end = loop.time() + delay
            while (left := end - loop.time()) > 0:
                try:
                    msg = json.loads((await ws.receive(timeout=left)).data)
                except (TimeoutError, TypeError):
                    break
                if msg["type"] == "publish_answer":
                    answer = RTCSessionDescription(sdp=msg["sdp"], type="answer")
                    await pc.setRemoteDescription(answer)
                elif msg["type"] == "subscribe_offer":
                    sub = create_peer_connection(IceConfig())
                    offer = RTCSessionDescription(sdp=msg["sdp"], type="offer")
                    await sub.setRemoteDescription(offer)
                    await sub.setLocalDescription(await sub.createAnswer())
                    await ws.send_json(
                        {"type": "subscribe_answer", "sdp": sub.localDescription.sdp}
                    )
    finally:
        await pc.close()
        if sub is not None:
            await sub.close()


async def test_closing_during_ice_leaves_no_task_exception_unretrieved(
    server: RunningServer,
) -> None:
    """Before the adapter awaited aiortc's connect task, 3 in 10 of these closes left an
    ``InvalidStateError: RTCIceTransport is closed`` that asyncio reported as "Task
    exception was never retrieved"."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        for i in range(20):
            delay = (0.03, 0.035, 0.04, 0.045, 0.05)[i % 5]
            await asyncio.gather(
                _client_closing_during_ice(server.url, f"ice{i}", "stays", delay + 0.3),
                _client_closing_during_ice(server.url, f"ice{i}", "leaves", delay),
            )
        await asyncio.sleep(1.0)
        gc.collect()  # unretrieved task exceptions are reported when the task is freed
        await asyncio.sleep(0.1)
    finally:
        loop.set_exception_handler(previous)
    assert [(c.get("message"), repr(c.get("exception"))) for c in reported] == [], (
        "task exceptions went unretrieved"
    )
    assert await _wait_empty(server)


async def _wait_empty(server: RunningServer) -> bool:
    for _ in range(100):
        if not server.sfu.rooms:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_subscribe_answer_without_fingerprint_gets_bad_sdp(server: RunningServer) -> None:
    """The same check on the answer a subscriber sends (aiortc would apply it and its
    connect task would die; the subscriber would never get media)."""
    publisher = create_peer_connection(IceConfig())
    publisher.addTransceiver("audio", direction="sendonly")
    await publisher.setLocalDescription(await publisher.createOffer())
    subscriber = create_peer_connection(IceConfig())
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{server.url}/ws") as pub,
            http.ws_connect(f"{server.url}/ws") as sub,
        ):
            await pub.send_json({"type": "join", "room": "answers", "name": "pub"})
            assert (await _next(pub))["type"] == "joined"
            await sub.send_json({"type": "join", "room": "answers", "name": "sub"})
            assert (await _next(sub))["type"] == "joined"
            await pub.send_json({"type": "publish_offer", "sdp": publisher.localDescription.sdp})
            while (msg := await _next(sub))["type"] != "subscribe_offer":
                pass
            await subscriber.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
            await subscriber.setLocalDescription(await subscriber.createAnswer())
            answer = _without(subscriber.localDescription.sdp, "a=fingerprint:")
            await sub.send_json({"type": "subscribe_answer", "sdp": answer})
            while (reply := await _next(sub))["type"] != "error":
                pass
            assert reply["code"] == "bad_sdp" and "no a=fingerprint" in reply["message"], reply
    finally:
        await publisher.close()
        await subscriber.close()
