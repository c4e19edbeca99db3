"""Join tokens through the public surface: a server with an API secret, real JWTs, real
websockets, real bots (``loadgen.bot``) and peer connections; ``/healthz``; the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from loadgen.bot import BotConfig, run_bot
from parley import cli
from parley.token_cmd import exposure_error
from signaling.auth import AuthConfig, Grants, mint_token, verify_token
from signaling.server import ServerConfig

from ._clients import Client
from ._parley_process import parley_serve
from .conftest import RunningServer, ServerFactory

KEY = "test-key"
SECRET = "test-secret-of-a-decent-length-0123456789abcdef"
AUTH = AuthConfig(api_key=KEY, api_secret=SECRET)


def token(room: str = "r1", identity: str = "ada", **kw: Any) -> str:
    args: dict[str, Any] = {"room": room, "identity": identity, "now": time.time()}
    args.update(kw)
    return mint_token(KEY, SECRET, **args)


@pytest.fixture
async def secured(server_factory: ServerFactory) -> RunningServer:
    return await server_factory(ServerConfig(auth=AUTH))


async def reply(client: Client, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send ``message`` and return the next ``joined``/``error``/``publish_answer``."""
    start = len(client.messages)
    await client.send(message)
    async with asyncio.timeout(timeout):
        while True:
            for m in client.messages[start:]:
                if m["type"] in ("joined", "error", "publish_answer"):
                    return m
            await asyncio.sleep(0.02)


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_bad_tokens_are_refused_with_their_codes_and_a_good_one_joins(
    secured: RunningServer,
) -> None:
    claims = {"iss": KEY, "sub": "ada", "room": "r1", "exp": int(time.time()) + 60}
    cases = {
        "token_required": None,
        "token_invalid": "garbage",
        # unsigned (alg: none), and signed with another secret
        "token_invalid ": jwt.encode(claims, None, algorithm="none"),
        "token_invalid  ": jwt.encode(claims, "not-the-secret-but-long-enough-0123456789", "HS256"),
        "token_expired": token(ttl=60, now=time.time() - 3600),
        "token_wrong_room": token(room="r2"),
    }
    async with aiohttp.ClientSession() as http:
        c = await Client(http, secured.url).connect()
        for code, bad in cases.items():
            join: dict[str, Any] = {"type": "join", "room": "r1", "name": "x", "request_id": 1}
            if bad is not None:
                join["token"] = bad
            answer = await reply(c, join)
            assert answer["type"] == "error" and answer["code"] == code.strip(), (code, answer)
            assert answer["request"] == "join" and answer["request_id"] == 1
        assert not secured.sfu.rooms  # nobody got in
        # the connection stayed open: a good token joins, its name from the token
        good = token(name="Ada Lovelace")
        answer = await reply(c, {"type": "join", "room": "r1", "name": "ignored", "token": good})
        assert answer["type"] == "joined", answer
        (p,) = secured.sfu.rooms["r1"].participants.values()
        assert p.name == "Ada Lovelace"
        await c.close()


async def test_a_subscribe_only_bot_receives_but_cannot_publish(secured: RunningServer) -> None:
    publisher = BotConfig(url=secured.url, room="r1", name="pub", duration=6.0, token=token())
    listener = BotConfig(
        url=secured.url,
        room="r1",
        name="sub",
        duration=5.0,
        token=token(identity="sub", grants=Grants(can_publish=False)),
    )

    async def later() -> dict[str, Any]:
        await asyncio.sleep(1.0)
        return await run_bot(listener)

    pub, sub = await asyncio.gather(run_bot(publisher), later())
    assert pub["ok"], pub
    assert sub["joined"] and not sub["published"], sub
    assert any(e["code"] == "not_allowed" for e in sub["errors"]), sub["errors"]
    received = {t["kind"]: t["frames_decoded"] for t in sub["tracks"]}
    assert received.get("video", 0) > 0, sub["tracks"]
    # and the publisher received nothing from it
    assert all(t["participant"] != sub["id"] for t in pub["tracks"]), pub["tracks"]


async def test_without_can_subscribe_nothing_is_forwarded(secured: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        deaf = await Client(http, secured.url, answer=True).connect()
        answer = await reply(
            deaf,
            {
                "type": "join",
                "room": "r1",
                "name": "x",
                "token": token(identity="deaf", grants=Grants(can_subscribe=False)),
            },
        )
        assert answer["type"] == "joined"
        pub = await Client(http, secured.url, answer=True).connect()
        await reply(pub, {"type": "join", "room": "r1", "name": "x", "token": token()})
        await pub.publish()
        await deaf.wait_for("track_published")
        # a subscriber with the grant would get a subscribe_offer within milliseconds
        await asyncio.sleep(1.5)
        assert not [m for m in deaf.messages if m["type"] == "subscribe_offer"], deaf.messages
        room = secured.sfu.rooms["r1"]
        (deaf_p,) = [p for p in room.participants.values() if p.name == "deaf"]
        assert deaf_p.subscriptions == {}
        # it still publishes, and the other receives it
        await deaf.publish()
        await wait_until(
            lambda: len([m for m in pub.messages if m["type"] == "track_published"]) == 2
        )
        for c in (deaf, pub):
            await c.close()


async def test_a_hidden_participant_is_not_announced_and_may_not_publish(
    secured: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as http:
        seen = await Client(http, secured.url).connect()
        await reply(seen, {"type": "join", "room": "r1", "name": "x", "token": token()})
        ghost = await Client(http, secured.url).connect()
        hidden = token(identity="ghost", grants=Grants(hidden=True))
        joined = await reply(ghost, {"type": "join", "room": "r1", "name": "x", "token": hidden})
        assert joined["type"] == "joined"
        assert [p["name"] for p in joined["participants"]] == ["ada"]  # it sees the others
        late = await Client(http, secured.url).connect()
        late_joined = await reply(
            late, {"type": "join", "room": "r1", "name": "x", "token": token(identity="bob")}
        )
        assert [p["name"] for p in late_joined["participants"]] == ["ada"]
        refused = await reply(ghost, {"type": "publish_offer", "sdp": "v=0\r\n"})
        assert refused["type"] == "error" and refused["code"] == "not_allowed", refused
        await ghost.close()
        await wait_until(lambda: len(secured.sfu.rooms["r1"].participants) == 2)
        await asyncio.sleep(0.3)
        for c in (seen, late):
            about = [
                m for m in c.messages if m["type"] in ("participant_joined", "participant_left")
            ]
            assert all(m.get("participant", {}).get("name") != "ghost" for m in about), about
            ids = {m.get("id") for m in about if m["type"] == "participant_left"}
            assert ids == set(), about
        # ada was told of bob, the visible late joiner
        assert [
            m["participant"]["name"] for m in seen.messages if m["type"] == "participant_joined"
        ] == ["bob"]
        for c in (seen, late):
            await c.close()


async def test_healthz_counts_only_for_the_operator(secured: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:

        async def get(auth: str | None) -> dict[str, Any]:
            headers = {"Authorization": auth} if auth else {}
            async with http.get(f"{secured.url}/healthz", headers=headers) as resp:
                assert resp.status == 200
                return dict(await resp.json())

        assert await get(None) == {"status": "ok"}
        assert await get(f"Bearer {token()}") == {"status": "ok"}  # a join token is not enough
        assert await get("Bearer wrong") == {"status": "ok"}
        for credential in (SECRET, token(room="*", grants=Grants(room_admin=True))):
            body = await get(f"Bearer {credential}")
            assert body["status"] == "ok" and body["rooms"] == 0 and "participants" in body


def test_parley_token_prints_a_token_that_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(
        ["token", "--api-key", KEY, "--api-secret", SECRET, "--room", "r9", "--identity", "eve",
         "--name", "Eve", "--no-publish", "--hidden", "--ttl", "10m"]
    )  # fmt: skip
    assert status == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    claims = verify_token(last, AUTH, now=time.time(), room="r9")
    assert (claims.identity, claims.name) == ("eve", "Eve")
    assert claims.grants == Grants(can_publish=False, hidden=True)
    assert 590 <= claims.expires - time.time() <= 600


def test_parley_token_takes_key_and_secret_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_API_KEY", KEY)
    monkeypatch.setenv("PARLEY_API_SECRET", SECRET)
    assert cli.main(["token", "--room", "r1", "--identity", "x", "--grants", "can_subscribe"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    grants = verify_token(last, AUTH, now=time.time(), room="r1").grants
    assert grants == Grants(can_publish=False, can_subscribe=True, can_publish_data=False)


def test_serve_refuses_a_public_address_without_a_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARLEY_API_SECRET", raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "without an API secret" in err and "--allow-anonymous" in err
    assert exposure_error("0.0.0.0", AuthConfig(), allow_anonymous=True) is None
    assert exposure_error("0.0.0.0", AUTH, allow_anonymous=False) is None
    assert exposure_error("::", AuthConfig(), allow_anonymous=False) is not None
    # what `make serve` runs, and the default host, stay open with no set-up
    args = cli.build_serve_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.api_secret is None
    assert exposure_error(args.host, AuthConfig(), allow_anonymous=False) is None
    assert exposure_error("localhost", AuthConfig(), allow_anonymous=False) is None


async def test_without_can_publish_data_its_messages_are_refused(secured: RunningServer) -> None:
    quiet = BotConfig(
        url=secured.url,
        room="r1",
        name="quiet",
        duration=5.0,
        data_every=0.3,
        token=token(identity="quiet", grants=Grants(can_publish_data=False)),
    )
    talk = BotConfig(
        url=secured.url, room="r1", name="talk", duration=5.0, data_every=0.3, token=token()
    )
    q, t = await asyncio.gather(run_bot(quiet), run_bot(talk))
    assert q["data"]["sent"] > 3 and t["data"]["sent"] > 3
    assert q["id"] not in t["data"]["received_from"], t["data"]
    assert q["data"]["received_from"].get(t["id"], 0) > 0, q["data"]
    assert any(e["code"] == "not_allowed" for e in q["errors"]), q["errors"]
    assert not any(e["code"] == "not_allowed" for e in t["errors"]), t["errors"]


async def test_parley_serve_with_a_secret_and_parley_load_minting_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PARLEY_API_KEY": KEY, "PARLEY_API_SECRET": SECRET}
    async with parley_serve("--log-level", "WARNING") as anonymous:
        # the subprocess here got no secret: it is open (on loopback)
        async with aiohttp.ClientSession() as http, http.get(f"{anonymous.url}/healthz") as r:
            assert "rooms" in await r.json()
    monkeypatch.setenv("PARLEY_API_SECRET", SECRET)  # the server process reads it at start
    async with parley_serve("--api-key", KEY, "--log-level", "WARNING") as server:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as resp:
                assert await resp.json() == {"status": "ok"}  # the secret is in force
        report = tmp_path / "load.json"
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parley", "load", "--url", server.url,
            "--publishers", "1", "--subscribers", "1", "--duration", "3", "--quiet",
            "--slo-p99-ms", "2000", "--slo-freeze-ms", "5000", "--slo-loss-pct", "50",
            "--json", str(report),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(load.communicate(), 120)
        assert load.returncode == 0, (out + err).decode()
        result = json.loads(report.read_text())
        assert result["bots"]["joined"] == 2, result["bots"]
        assert result["config"]["api_secret"] == "(set)"
        assert SECRET not in report.read_text()


async def test_one_identity_is_in_a_room_once(secured: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        first = await Client(http, secured.url).connect()
        await reply(first, {"type": "join", "room": "r1", "name": "x", "token": token()})
        other = await Client(http, secured.url).connect()
        await reply(other, {"type": "join", "room": "r1", "name": "x", "token": token("r1", "bob")})
        second = await Client(http, secured.url).connect()
        joined = await reply(second, {"type": "join", "room": "r1", "name": "x", "token": token()})
        assert joined["type"] == "joined"
        assert [p["name"] for p in joined["participants"]] == ["bob"]  # not its old self
        left = await first.wait_for("left")
        assert left["reconnect"] is False and "same identity" in left["reason"]
        assert sorted(p.name for p in secured.sfu.rooms["r1"].participants.values()) == [
            "ada",
            "bob",
        ]
        # a token whose name the protocol cannot carry is refused
        bad = token(identity="eve", name="line\nbreak")
        third = await Client(http, secured.url).connect()
        refused = await reply(third, {"type": "join", "room": "r1", "name": "x", "token": bad})
        assert refused["code"] == "token_invalid" and "name" in refused["message"]
        for c in (first, other, second, third):
            await c.close()


async def test_metrics_only_for_the_operator_when_there_is_a_secret(
    secured: RunningServer, server: RunningServer
) -> None:
    async with aiohttp.ClientSession() as http:

        async def status(base: str, auth: str | None) -> int:
            headers = {"Authorization": auth} if auth else {}
            async with http.get(f"{base}/metrics", headers=headers) as resp:
                if resp.status == 200:
                    assert "parley_rooms" in await resp.text()
                return resp.status

        assert await status(secured.url, None) == 401
        assert await status(secured.url, f"Bearer {token()}") == 401  # a join token
        assert await status(secured.url, f"Bearer {SECRET}") == 200
        admin = token(room="*", grants=Grants(room_admin=True))
        assert await status(secured.url, f"Bearer {admin}") == 200
        assert await status(server.url, None) == 200  # no secret: open (loopback by default)
