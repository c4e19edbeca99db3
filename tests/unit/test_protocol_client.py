"""parley_client.ProtocolClient against a real server on loopback (websocket only: no
peer connection is opened, so no namespace is needed)."""

from __future__ import annotations

import asyncio

import pytest

from parley_client import ClientClosed, ProtocolClient, RequestFailed
from signaling.messages import (
    ErrorMessage,
    Joined,
    ParticipantJoined,
    ProtocolError,
    ServerMessage,
)
from signaling.server import shutdown_sessions
from tests._server import RunningServer, server, server_factory

__all__ = ["server", "server_factory"]


class Recorder:
    def __init__(self) -> None:
        self.messages: list[ServerMessage] = []
        self.invalid: list[ProtocolError] = []

    def message(self, message: ServerMessage) -> None:
        self.messages.append(message)

    def of(self, kind: type) -> list[ServerMessage]:
        return [m for m in self.messages if isinstance(m, kind)]


async def _client(server: RunningServer, recorder: Recorder | None = None) -> ProtocolClient:
    recorder = recorder or Recorder()
    client = ProtocolClient(
        server.url, on_message=recorder.message, on_invalid=recorder.invalid.append
    )
    await client.connect(5.0)
    return client


async def test_join_returns_joined_after_on_message_saw_it(server: RunningServer) -> None:
    recorder = Recorder()
    client = await _client(server, recorder)
    try:
        joined = await client.join("room1", "ada", 5.0)
        assert isinstance(joined, Joined)
        assert joined.room == "room1" and joined.id
        assert joined.request_id is not None  # the reply was matched by its id
        assert recorder.of(Joined) == [joined]
    finally:
        await client.close()


async def test_events_reach_on_message(server: RunningServer) -> None:
    recorder = Recorder()
    first = await _client(server, recorder)
    second = await _client(server)
    try:
        await first.join("room2", "ada", 5.0)
        joined = await second.join("room2", "bob", 5.0)
        assert [p.name for p in joined.participants] == ["ada"]
        for _ in range(100):
            if recorder.of(ParticipantJoined):
                break
            await asyncio.sleep(0.01)
        (event,) = recorder.of(ParticipantJoined)
        assert isinstance(event, ParticipantJoined) and event.participant.name == "bob"
    finally:
        await first.close()
        await second.close()


async def test_ping_pong_and_leave(server: RunningServer) -> None:
    client = await _client(server)
    try:
        await client.join("room3", "ada", 5.0)
        pong = await client.ping(5.0)
        assert pong.request_id is not None
        left = await client.leave(5.0)
        assert left is not None and left.reason
    finally:
        await client.close()


async def test_refused_request_raises_with_the_error(server: RunningServer) -> None:
    recorder = Recorder()
    client = await _client(server, recorder)
    try:
        await client.join("room4", "ada", 5.0)
        with pytest.raises(RequestFailed) as raised:
            await client.join("room4", "ada", 5.0)  # joining twice: wrong_state
        assert raised.value.error.code == "wrong_state"
        assert recorder.of(ErrorMessage) == [raised.value.error]
        with pytest.raises(RequestFailed) as raised:
            await client.publish("not sdp", 5.0)
        assert raised.value.error.code == "bad_sdp"
        assert raised.value.error.request == "publish_offer"
    finally:
        await client.close()


async def test_set_layer_error_is_an_event(server: RunningServer) -> None:
    recorder = Recorder()
    client = await _client(server, recorder)
    try:
        await client.join("room5", "ada", 5.0)
        await client.set_layer("no-such-track", max_height=180, request_id="sl-1")
        await client.ping(5.0)  # replies come in order: the error came before the pong
        (error,) = recorder.of(ErrorMessage)
        assert isinstance(error, ErrorMessage)
        assert (error.code, error.request_id) == ("not_found", "sl-1")
    finally:
        await client.close()


async def test_server_shutdown_is_kept_and_requests_fail(server: RunningServer) -> None:
    client = await _client(server)
    try:
        await client.join("room6", "ada", 5.0)
        await shutdown_sessions(server.app)
        await asyncio.wait_for(client.closed.wait(), 5.0)
        assert client.server_shutdown is not None and client.server_shutdown.reason
        assert not client.connected
        with pytest.raises(ClientClosed):
            await client.ping(1.0)
    finally:
        await client.close()


async def test_connect_times_out_and_close_is_idempotent() -> None:
    client = ProtocolClient("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises((OSError, TimeoutError)):
        await client.connect(2.0)
    await client.close()
    await client.close()
    assert client.closed.is_set()


async def test_a_reply_without_request_id_answers_the_oldest_request_of_its_type() -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:  # a server that never echoes request_id
            await ws.send_json(
                {"type": "joined", "id": "p1", "room": "r", "participants": [], "ice_servers": []}
            )
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = ProtocolClient(f"http://127.0.0.1:{port}")
    try:
        await client.connect(5.0)
        joined = await client.join("r", "ada", 5.0)
        assert (joined.id, joined.request_id) == ("p1", None)
    finally:
        await client.close()
        await runner.cleanup()
