"""Session behaviour that needs no network: a client that stops reading is dropped."""

from __future__ import annotations

import asyncio

from sfu.room import Sfu
from signaling import messages as m
from signaling.server import MAX_QUEUED_MESSAGES, ServerConfig, Session


class StuckWebSocket:
    """A websocket whose peer never reads: every send blocks."""

    def __init__(self) -> None:
        self.closed = False
        self.close_codes: list[int] = []
        self._never = asyncio.Event()

    async def send_str(self, data: str) -> None:
        await self._never.wait()

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.closed = True
        self.close_codes.append(code)


async def test_a_client_that_stops_reading_is_closed_not_buffered() -> None:
    ws = StuckWebSocket()
    session = Session(ws, None, Sfu(), ServerConfig())  # type: ignore[arg-type]
    for _ in range(MAX_QUEUED_MESSAGES + 50):
        session.send(m.Pong())
    await asyncio.sleep(0)
    assert ws.close_codes == [1008]
    # the queue stopped growing at the bound
    assert session._out.qsize() <= MAX_QUEUED_MESSAGES
    session._writer.cancel()


async def test_a_reading_client_gets_everything_in_order() -> None:
    sent: list[str] = []

    class ReadingWebSocket(StuckWebSocket):
        async def send_str(self, data: str) -> None:
            sent.append(data)

    ws = ReadingWebSocket()
    session = Session(ws, None, Sfu(), ServerConfig())  # type: ignore[arg-type]
    for i in range(20):
        session.send(m.Pong(request_id=i))
    await session.close()
    assert [m.parse_server_message(s).request_id for s in sent] == list(range(20))
    assert ws.close_codes == []
