"""Webhooks through the public surface: a real receiver (an aiohttp app on a loopback port)
gets every event of a real two-bot call, in order and signed; a receiver that fails the
first attempts gets retries; a dead receiver holds up neither joins nor media."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from loadgen.bot import BotConfig, run_bot
from signaling.server import WEBHOOKS_KEY, ServerConfig
from signaling.webhooks import WebhookConfig, WebhookError, verify_webhook

from ._parley_process import parley_command
from .conftest import ServerFactory

KEY, SECRET = "APItest", "webhook-test-secret-0123456789abcdef"


class Receiver:
    """A webhook endpoint: verifies each POST, fails an event's first ``fail_first`` tries."""

    def __init__(self, fail_first: int = 0, hang: bool = False) -> None:
        self.fail_first = fail_first
        self.hang = hang
        self.events: list[dict[str, Any]] = []
        self.attempts: Counter[str] = Counter()
        self.bad: list[str] = []
        self.content_types: set[str] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self.hang:
            await asyncio.sleep(3600)
        body = await request.read()
        self.content_types.add(request.content_type)
        try:
            event = verify_webhook(body, request.headers.get("Authorization"), KEY, SECRET)
        except WebhookError as exc:
            self.bad.append(str(exc))
            return web.Response(status=401)
        self.attempts[event["id"]] += 1
        if self.attempts[event["id"]] <= self.fail_first:
            return web.Response(status=503)
        self.events.append(event)
        return web.Response(text="ok")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def kinds(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        for e in self.events:
            who = e.get("participant", {}).get("name", "")
            track = e.get("track", {}).get("kind", "")
            out.append(tuple(x for x in (e["event"], who, track) if x))
        return out


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Any]]:
    started: list[Receiver] = []

    async def make(**kwargs: Any) -> Receiver:
        receiver = await Receiver(**kwargs).start()
        started.append(receiver)
        return receiver

    try:
        yield make
    finally:
        for receiver in started:
            await receiver.stop()


async def _wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_every_event_of_a_call_arrives_in_order_signed_and_retried(
    server_factory: ServerFactory, receivers: Callable[..., Any]
) -> None:
    good: Receiver = await receivers()
    flaky: Receiver = await receivers(fail_first=2)
    config = ServerConfig(
        webhooks=WebhookConfig(
            urls=(good.url, flaky.url), api_key=KEY, api_secret=SECRET, backoff=0.05
        )
    )
    server = await server_factory(config)
    bots = [BotConfig(url=server.url, room="hooks", name=n, duration=3.0) for n in ("ann", "bob")]
    summaries = await asyncio.gather(*(run_bot(c) for c in bots))
    assert all(s["ok"] for s in summaries), summaries
    for receiver in (good, flaky):
        await _wait_for(lambda r=receiver: ("room_finished",) in r.kinds(), 15.0)  # type: ignore[misc]

    kinds = good.kinds()
    assert kinds[0] == ("room_started",) and kinds[-1] == ("room_finished",), kinds
    for name in ("ann", "bob"):
        joined = kinds.index(("participant_joined", name))
        left = kinds.index(("participant_left", name))
        for kind in ("audio", "video"):
            published = kinds.index(("track_published", name, kind))
            unpublished = kinds.index(("track_unpublished", name, kind))
            assert joined < published < unpublished, kinds
        assert joined < left, kinds
    assert len(kinds) == 2 + 2 * 2 + 2 * 4, kinds  # nothing more, nothing twice
    # the server's order: seq counts up with no gap, ids are unique, times do not go back
    assert [e["seq"] for e in good.events] == list(range(1, len(kinds) + 1))
    assert len({e["id"] for e in good.events}) == len(kinds)
    times = [e["created_at"] for e in good.events]
    assert times == sorted(times) and abs(times[0] - time.time()) < 60
    assert all(e["room"]["name"] == "hooks" for e in good.events)
    left_event = next(e for e in good.events if e["event"] == "participant_left")
    assert left_event["participant"]["reason"] and left_event["participant"]["id"]
    track_event = next(e for e in good.events if e["event"] == "track_published")
    assert track_event["track"]["id"] and track_event["track"]["mid"] is not None
    assert good.content_types == {"application/webhook+json"}
    assert not good.bad and not flaky.bad

    # the flaky receiver got each event on the third try, still in the same order
    assert flaky.kinds() == kinds
    assert set(flaky.attempts.values()) == {3}
    assert [e["id"] for e in flaky.events] == [e["id"] for e in good.events]
    webhooks = server.app[WEBHOOKS_KEY]
    assert webhooks.delivered == 2 * len(kinds) and webhooks.failed == 0
    assert webhooks.dropped == 0


async def test_a_dead_receiver_never_holds_up_joins_or_media(
    server_factory: ServerFactory, receivers: Callable[..., Any]
) -> None:
    hanging: Receiver = await receivers(hang=True)
    config = ServerConfig(
        webhooks=WebhookConfig(
            # one receiver that never answers, one port nobody listens on
            urls=(hanging.url, "http://127.0.0.1:9/hook"),
            api_key=KEY,
            api_secret=SECRET,
            queue_size=3,
            timeout=30.0,
            close_timeout=0.3,
        )
    )
    server = await server_factory(config)
    bots = [BotConfig(url=server.url, room="dead", name=n, duration=3.0) for n in ("ann", "bob")]
    summaries = await asyncio.gather(*(run_bot(c) for c in bots))
    assert all(s["ok"] for s in summaries), summaries
    assert all(s["join_ms"] < 5000 for s in summaries), [s["join_ms"] for s in summaries]
    webhooks = server.app[WEBHOOKS_KEY]
    assert webhooks.delivered == 0
    # 14 events into queues of 3 per URL: the oldest were dropped, not kept (the hanging
    # receiver's queue drops 14 - 3 - 1 in flight = 10; the refused one, retrying for
    # 3.5 s an event, pops a few more)
    await _wait_for(lambda: webhooks.dropped >= 14, 8.0)
    started = time.monotonic()
    await webhooks.close()  # gives up after close_timeout instead of waiting 30 s
    assert time.monotonic() - started < 2.0


async def test_serve_refuses_webhooks_without_a_key() -> None:
    proc = await asyncio.create_subprocess_exec(
        *parley_command(), "serve", "--port", "0", "--webhook-url", "http://127.0.0.1:9/hook",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode != 0
    assert b"--api-key" in err and b"--api-secret" in err, err


async def test_with_tokens_events_name_the_tokens_identity(
    server_factory: ServerFactory, receivers: Callable[..., Any]
) -> None:
    from signaling.auth import AuthConfig, Grants, mint_token

    good: Receiver = await receivers()
    config = ServerConfig(
        auth=AuthConfig(api_key=KEY, api_secret=SECRET),
        webhooks=WebhookConfig(urls=(good.url,), api_key=KEY, api_secret=SECRET),
    )
    server = await server_factory(config)
    token = mint_token(
        KEY, SECRET, room="ids", identity="user-42", name="Ann", grants=Grants(),
        ttl=600, now=time.time(),
    )  # fmt: skip
    bot = BotConfig(url=server.url, room="ids", name="ignored", duration=1.0, publish=False)
    summary = await run_bot(dataclasses.replace(bot, token=token))
    assert summary["joined"], summary
    await _wait_for(lambda: ("room_finished",) in good.kinds(), 15.0)
    joined = next(e for e in good.events if e["event"] == "participant_joined")
    assert joined["participant"]["identity"] == "user-42"
    assert joined["participant"]["name"] == "Ann"  # the token's name, not the join's
