"""The admin API end to end: a server with an API secret, real tokens, real peer
connections whose decoded frames are counted, ``parley admin`` and plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from loadgen.bot import BotConfig, run_bot
from parley import cli
from parley.token_cmd import auth_config
from signaling.auth import AuthConfig, Grants, mint_token
from signaling.server import ServerConfig

from ._clients import Client
from .conftest import RunningServer, ServerFactory

KEY = "admin-test-key"
SECRET = "admin-test-secret-of-a-decent-length-0123456789"


def token(room: str = "r1", identity: str = "pub", **kw: Any) -> str:
    return mint_token(KEY, SECRET, room=room, identity=identity, now=time.time(), **kw)


class Counting(Client):
    """A client that counts the frames it decodes, by kind."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.frames: Counter[str] = Counter()

    def _drain(self, track: MediaStreamTrack) -> None:
        async def count() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()
                    self.frames[track.kind] += 1

        self._drains.append(asyncio.ensure_future(count()))


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def frames_in(client: Counting, kind: str, seconds: float) -> int:
    before = client.frames[kind]
    await asyncio.sleep(seconds)
    return client.frames[kind] - before


async def join(client: Client, tok: str) -> dict[str, Any]:
    await client.send({"type": "join", "room": "r1", "name": "x", "token": tok})
    return await client.wait_for("joined")


def admin(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, Any]:
    """``parley admin`` in-process (its HTTP is blocking: run it in a thread)."""
    status = cli.main(["admin", "--url", url, "--api-key", KEY, "--api-secret", SECRET, *args])
    return status, json.loads(capsys.readouterr().out)


@pytest.fixture
async def secured(server_factory: ServerFactory) -> RunningServer:
    return await server_factory(ServerConfig(auth=AuthConfig(api_key=KEY, api_secret=SECRET)))


async def test_admin_needs_the_secret_or_a_room_admin_token(secured: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        c = await Client(http, secured.url).connect()
        await join(c, token())

        async def status(path: str, credential: str | None, method: str = "GET") -> int:
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            async with http.request(method, secured.url + path, headers=headers) as resp:
                if resp.status >= 400:
                    assert (await resp.json())["error"] in (
                        "unauthorized",
                        "not_allowed",
                        "not_found",
                    )
                return resp.status

        assert await status("/admin/rooms", None) == 401
        assert await status("/admin/rooms", token()) == 401  # a join token
        assert await status("/admin/rooms", "not-the-secret") == 401
        assert await status("/admin/rooms", SECRET) == 200
        other = token(room="r2", grants=Grants(room_admin=True))
        assert await status("/admin/rooms/r1", other) == 403
        assert await status("/admin/rooms/r1", other, "DELETE") == 403
        assert await status("/admin/rooms/r1", token(grants=Grants(room_admin=True))) == 200
        assert await status("/admin/rooms/nope", SECRET) == 404
        # a room admin lists only its room
        async with http.get(
            secured.url + "/admin/rooms", headers={"Authorization": f"Bearer {other}"}
        ) as resp:
            assert (await resp.json()) == {"rooms": []}
        assert len(secured.sfu.rooms["r1"].participants) == 1  # nothing was done
        await c.close()


async def test_list_mute_unmute_grants_remove_close(
    secured: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = secured.url
    async with aiohttp.ClientSession() as http:
        pub = await Counting(http, url, answer=True).connect()
        await join(pub, token(name="Publisher"))
        sub = await Counting(http, url, answer=True).connect()
        await join(sub, token(identity="sub"))
        answer = await pub.publish()
        video = next(t for t in answer["tracks"] if t["kind"] == "video")
        await wait_until(lambda: sub.frames["video"] > 10, timeout=15)

        status, rooms = await asyncio.to_thread(admin, capsys, url, "rooms")
        assert status == 0
        assert rooms == {"rooms": [{"room": "r1", "participants": 2, "published_tracks": 2}]}
        status, room = await asyncio.to_thread(admin, capsys, url, "participants", "r1")
        people = {p["identity"]: p for p in room["participants"]}
        assert set(people) == {"pub", "sub"}
        assert people["pub"]["name"] == "Publisher"
        assert sorted(t["kind"] for t in people["pub"]["tracks"]) == ["audio", "video"]
        assert people["sub"]["grants"]["can_publish"] is True
        subscribed = {s["track"]: s for s in people["sub"]["subscriptions"]}
        assert subscribed[video["id"]]["layer"]["height"] == 240
        assert subscribed[video["id"]]["paused"] is False
        assert "estimate_bps" in people["sub"] and "egress_bps" in people["sub"]

        # mute the video by its mid, with the publisher's identity: the subscriber stops
        status, muted = await asyncio.to_thread(
            admin, capsys, url, "mute", "r1", "pub", video["mid"]
        )
        assert status == 0 and muted["muted"] is True and muted["track"] == video["id"]
        told = await sub.wait_for("track_muted")
        assert told == {
            "type": "track_muted",
            "participant": people["pub"]["id"],
            "track": video["id"],
            "muted": True,
        }
        await asyncio.sleep(0.5)  # what was in flight
        assert any(
            m["type"] == "layer" and m["track"] == video["id"] and m["paused"] for m in sub.messages
        )
        assert await frames_in(sub, "video", 1.5) == 0
        assert await frames_in(sub, "audio", 1.0) > 0  # only that track
        status, _ = await asyncio.to_thread(
            admin, capsys, url, "unmute", "r1", people["pub"]["id"], video["id"]
        )
        assert status == 0
        await wait_until(
            lambda: any(m["type"] == "track_muted" and not m["muted"] for m in sub.messages)
        )
        assert await frames_in(sub, "video", 2.0) > 5

        # revoke can_publish: its tracks are unpublished, a new offer is refused
        status, changed = await asyncio.to_thread(
            admin, capsys, url, "grants", "r1", "pub", "can_publish=false"
        )
        assert status == 0 and changed["grants"]["can_publish"] is False
        await wait_until(
            lambda: len([m for m in sub.messages if m["type"] == "track_unpublished"]) == 2
        )
        assert len([m for m in pub.messages if m["type"] == "track_unpublished"]) == 2
        assert not list(secured.sfu.rooms["r1"].participants[people["pub"]["id"]].tracks)
        start = len(pub.messages)
        await pub.send({"type": "publish_offer", "sdp": "v=0\r\n"})
        await wait_until(lambda: any(m["type"] == "error" for m in pub.messages[start:]))
        assert [m["code"] for m in pub.messages[start:] if m["type"] == "error"] == ["not_allowed"]

        # remove the subscriber: it is told why, and not to come back on its own
        async with http.delete(
            f"{url}/admin/rooms/r1/participants/sub",
            headers={"Authorization": f"Bearer {SECRET}"},
        ) as resp:
            assert resp.status == 200
        left = await sub.wait_for("left")
        assert left == {
            "type": "left",
            "reason": "removed by the server's operator",
            "reconnect": False,
        }
        await asyncio.wait_for(sub.ended.wait(), 5)
        await wait_until(lambda: any(m["type"] == "participant_left" for m in pub.messages))

        # close the room: the last one is told, the room is gone
        status, closed = await asyncio.to_thread(admin, capsys, url, "close", "r1")
        assert status == 0 and closed["removed"] == 1
        assert (await pub.wait_for("left"))["reason"] == "room closed"
        status, rooms = await asyncio.to_thread(admin, capsys, url, "rooms")
        assert rooms == {"rooms": []}
        status, missing = await asyncio.to_thread(admin, capsys, url, "participants", "r1")
        assert status == 1 and missing["error"] == "not_found"
        for c in (pub, sub):
            await c.close()


async def test_granting_subscribe_later_subscribes(secured: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        pub = await Counting(http, secured.url, answer=True).connect()
        await join(pub, token())
        deaf = await Counting(http, secured.url, answer=True).connect()
        await join(deaf, token(identity="deaf", grants=Grants(can_subscribe=False)))
        await pub.publish()
        await deaf.wait_for("track_published")
        await asyncio.sleep(1.0)
        assert deaf.frames["video"] == 0
        async with http.post(
            f"{secured.url}/admin/rooms/r1/participants/deaf/grants",
            json={"can_subscribe": True},
            headers={"Authorization": f"Bearer {SECRET}"},
        ) as resp:
            assert resp.status == 200
        await wait_until(lambda: deaf.frames["video"] > 5, timeout=15)
        async with http.post(
            f"{secured.url}/admin/rooms/r1/participants/deaf/grants",
            json={"can_fly": True},
            headers={"Authorization": f"Bearer {SECRET}"},
        ) as resp:
            assert resp.status == 400
        for c in (pub, deaf):
            await c.close()


async def test_a_removed_bot_does_not_rejoin_even_with_reconnect(secured: RunningServer) -> None:
    config = BotConfig(
        url=secured.url, room="r1", name="bot", duration=5.0, reconnect=True, token=token()
    )
    run = asyncio.ensure_future(run_bot(config))
    await wait_until(lambda: "r1" in secured.sfu.rooms and secured.sfu.rooms["r1"].participants)
    await asyncio.sleep(1.0)
    async with (
        aiohttp.ClientSession() as http,
        http.delete(
            f"{secured.url}/admin/rooms/r1/participants/pub",  # by its token identity
            headers={"Authorization": f"Bearer {SECRET}"},
        ) as resp,
    ):
        assert resp.status == 200
    summary = await run
    assert summary["left_reason"] == "removed by the server's operator"
    assert summary["reconnects"] == [], summary["reconnects"]
    assert "r1" not in secured.sfu.rooms


async def test_without_a_secret_the_admin_api_answers_loopback_callers(
    server_factory: ServerFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what `parley serve` without a secret runs (cli.serve_main -> token_cmd.auth_config)
    monkeypatch.delenv("PARLEY_API_SECRET", raising=False)
    args = cli.build_serve_parser().parse_args([])
    assert not args.api_secret
    server = await server_factory(ServerConfig(auth=auth_config(args)))
    async with aiohttp.ClientSession() as http:
        c = await Client(http, server.url).connect()
        await c.join("open", "ann")

        def run() -> tuple[int, Any]:
            status = cli.main(["admin", "--url", server.url, "participants", "open"])
            return status, json.loads(capsys.readouterr().out)

        status, room = await asyncio.to_thread(run)
        assert status == 0 and [p["name"] for p in room["participants"]] == ["ann"]
        assert room["participants"][0]["identity"] is None  # no token, no identity
        await c.close()


async def test_an_embedders_server_without_a_secret_has_no_admin_api(
    server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/admin/rooms") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"
