"""``--max-message-bytes`` is enforced while a frame is read, not after it is in memory.

A real server process. Raw TCP clients announce huge text frames (one of 128 MB, then
eight of 32 MB at once) and stream their payload; a compressed client sends a small frame
that inflates to 16 MB. The server's resident memory (``/proc/PID/status``) must grow by
far less than any of those frames, each sender must get the ``too_large`` error and a
1009 close, and a call in another room (a real aiortc publisher and subscriber) and a
websocket in the same server keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ._clients import Client
from ._parley_process import ServerProcess, parley_serve

MB = 1024 * 1024
LIMIT = 262_144
#: The growth allowed: far below the frames sent (128 MB, 8 x 32 MB, 16 MB inflated).
MAX_RSS_GROWTH_KIB = 30 * 1024


@dataclass
class Reply:
    """What a raw client got back: text frames, then the close code and reason."""

    texts: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    sent_bytes: int = 0


async def _handshake(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status = await reader.readline()
    assert b" 101 " in status, status
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return reader, writer


def _text_frame_header(length: int) -> bytes:
    """A masked (all-zero mask: the payload goes as is) text frame of ``length`` bytes."""
    return bytes([0x81, 0x80 | 127]) + struct.pack("!Q", length) + b"\0\0\0\0"


async def _read_frames(reader: asyncio.StreamReader, reply: Reply) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            head = await reader.readexactly(2)
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(length)
            if opcode == 0x1:
                reply.texts.append(json.loads(payload))
            elif opcode == 0x8:
                reply.close_code = struct.unpack("!H", payload[:2])[0]
                reply.close_reason = payload[2:].decode()
                return


async def _send_huge_frame(port: int, size: int) -> Reply:
    """Announce a text frame of ``size`` bytes, give the server a moment to answer, then
    stream the payload until the server stops us (or all of it went).

    The header goes alone first: a server that closes a socket holding unread data resets
    it, and the reset can destroy the reply before this client reads it.
    """
    reader, writer = await _handshake(port)
    reply = Reply()
    replies = asyncio.ensure_future(_read_frames(reader, reply))
    chunk = b"a" * MB
    try:
        writer.write(_text_frame_header(size))
        await writer.drain()
        await asyncio.wait({replies}, timeout=3.0)
        while reply.sent_bytes < size and not replies.done():
            writer.write(chunk)
            await writer.drain()
            reply.sent_bytes += len(chunk)
    except ConnectionError:
        pass
    finally:
        async with asyncio.timeout(10):
            await replies
        writer.close()
    return reply


async def _peak_rss_during(server: ServerProcess, work: Any) -> tuple[int, Any]:
    """Run ``work`` while sampling the server's RSS every 5 ms; (peak KiB, result)."""
    peak = server.rss_kib()
    task = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, server.rss_kib())
        await asyncio.wait({task}, timeout=0.005)
    return max(peak, server.rss_kib()), task.result()


def _assert_refused(reply: Reply) -> None:
    assert reply.texts == [
        {
            "type": "error",
            "code": "too_large",
            "message": f"message exceeds the limit of {LIMIT} bytes",
        }
    ], reply.texts
    assert reply.close_code == 1009, reply


async def _call_is_healthy(subscriber: Client, bystander: Client) -> None:
    before = await subscriber.packets_received()
    await asyncio.sleep(1.0)
    assert await subscriber.packets_received() > before + 20, "media stopped"
    await bystander.send({"type": "ping", "request_id": "still-there"})
    async with asyncio.timeout(5):
        while not any(m.get("request_id") == "still-there" for m in bystander.messages):
            await asyncio.sleep(0.02)
    for client in (subscriber, bystander):
        assert not client.ended.is_set()


async def test_oversized_frames_never_reach_memory() -> None:
    async with parley_serve("--log-level", "WARNING") as server, aiohttp.ClientSession() as http:
        publisher = await Client(http, server.url).connect()
        subscriber = await Client(http, server.url, answer=True).connect()
        bystander = await Client(http, server.url).connect()
        try:
            await publisher.join("call", "publisher")
            await subscriber.join("call", "subscriber")
            await bystander.join("aside", "bystander")
            await publisher.publish()
            async with asyncio.timeout(20):
                while await subscriber.packets_received() < 50:
                    await asyncio.sleep(0.1)
            baseline = server.rss_kib()

            # one 128 MB frame, before any join
            peak, reply = await _peak_rss_during(server, _send_huge_frame(server.port, 128 * MB))
            _assert_refused(reply)
            assert reply.sent_bytes < 128 * MB, "the server read the whole frame"
            assert peak - baseline < MAX_RSS_GROWTH_KIB, (baseline, peak)

            # eight 32 MB frames at once
            many = asyncio.gather(*(_send_huge_frame(server.port, 32 * MB) for _ in range(8)))
            peak, replies = await _peak_rss_during(server, many)
            for reply in replies:
                _assert_refused(reply)
            assert peak - baseline < MAX_RSS_GROWTH_KIB, (baseline, peak)

            # a compressed frame that inflates to 16 MB (permessage-deflate)
            async def bomb() -> tuple[Any, int | None]:
                async with http.ws_connect(f"{server.url}/ws", compress=15) as ws:
                    await ws.send_str('{"type":"ping","pad":"' + "a" * (16 * MB) + '"}')
                    first = await ws.receive(timeout=10)
                    closing = await ws.receive(timeout=10)
                    return json.loads(first.data), closing.data

            peak, (error, code) = await _peak_rss_during(server, bomb())
            assert error["code"] == "too_large" and code == 1009, (error, code)
            assert peak - baseline < MAX_RSS_GROWTH_KIB, (baseline, peak)

            await _call_is_healthy(subscriber, bystander)
        finally:
            for client in (publisher, subscriber, bystander):
                await client.close()
        assert server.problems() == [], server.problems()


async def test_the_limit_is_inclusive() -> None:
    """A frame of exactly --max-message-bytes (UTF-8 bytes) is served; more is refused."""
    async with (
        parley_serve("--log-level", "WARNING", "--max-message-bytes", "1000") as server,
        aiohttp.ClientSession() as http,
    ):
        template = '{"type":"ping","request_id":"fits","pad":"%s"}'
        fits = template % ("a" * (1000 - len(template % "")))
        assert len(fits.encode()) == 1000
        # as many characters, but three of them take three bytes each in UTF-8
        wide = template % ("\u20ac" * 3 + "a" * (1000 - len(template % "") - 3))
        assert len(wide) == 1000 and len(wide.encode()) == 1006
        async with http.ws_connect(f"{server.url}/ws") as ws:
            await ws.send_str(fits)
            assert await ws.receive_json(timeout=5) == {"type": "pong", "request_id": "fits"}
        for too_big in (fits + " ", wide):
            async with http.ws_connect(f"{server.url}/ws") as ws:
                await ws.send_str(too_big)
                error = await ws.receive_json(timeout=5)
                closing = await ws.receive(timeout=5)
            assert error == {
                "type": "error",
                "code": "too_large",
                "message": "message exceeds the limit of 1000 bytes",
            }
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009, closing
        assert server.problems() == [], server.problems()
