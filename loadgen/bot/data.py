"""A bot's data channel (docs/protocol.md, "Data channel"): the ``"parley"`` channel on
its publish connection, a message every ``every`` seconds (``parley bot --data-every``),
and counts of what it sent and received, by sender, for the JSON summary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection

from sfu.datachannel import (
    DATA_CHANNEL_LABEL,
    EnvelopeError,
    decode_relayed,
    encode_envelope,
    message_size,
)

logger = logging.getLogger(__name__)

#: the first few messages received are kept in the summary (``received_first``)
KEEP_FIRST = 10


class BotData:
    """The data channel of one bot, across its reconnects."""

    def __init__(
        self,
        name: str,
        every: float | None,
        to: tuple[str, ...],
        size: int,
        resolve: Callable[[str], str | None],
    ) -> None:
        self.name = name
        self.every = every
        #: participant ids or names the periodic messages go to (empty: the room)
        self.to = to
        #: bytes of padding in each periodic message's text
        self.size = size
        self._resolve = resolve
        self.channel: RTCDataChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()
        self.sent = 0
        self.sent_bytes = 0
        self.send_failures = 0
        self.received = 0
        self.received_bytes = 0
        self.received_from: dict[str, int] = {}
        self.received_first: list[dict[str, Any]] = []
        self.unreadable = 0

    def open(self, pc: RTCPeerConnection) -> RTCDataChannel:
        """Create the channel on a new publish connection (before its offer)."""
        self._stop()
        self._opened.clear()
        channel = pc.createDataChannel(DATA_CHANNEL_LABEL)
        self.channel = channel

        @channel.on("open")
        def on_open() -> None:
            self._opened.set()
            if self.every is not None and self._task is None:
                self._task = asyncio.ensure_future(self._send_periodically(channel))

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            self._on_message(message)

        return channel

    async def wait_open(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._opened.wait(), timeout)
        return self._opened.is_set()

    def send(self, data: object, to: tuple[str, ...] | None = None) -> bool:
        """Send ``data`` (bytes: a binary envelope, else JSON) to ``to`` (participant ids
        or names; None: the room). False when the channel is not open."""
        channel = self.channel
        if channel is None or channel.readyState != "open":
            self.send_failures += 1
            return False
        ids: tuple[str, ...] | None = None
        if to is not None:
            ids = tuple(pid for pid in (self._resolve(n) or n for n in to))
        message = encode_envelope(data, ids)
        channel.send(message)
        self.sent += 1
        self.sent_bytes += message_size(message)
        return True

    async def _send_periodically(self, channel: RTCDataChannel) -> None:
        assert self.every is not None
        seq = 0
        while channel.readyState == "open":
            seq += 1
            self.send({"seq": seq, "name": self.name, "pad": "x" * self.size}, self.to or None)
            await asyncio.sleep(self.every)

    def _on_message(self, message: str | bytes) -> None:
        try:
            sender, data = decode_relayed(message)
        except EnvelopeError:
            self.unreadable += 1
            return
        self.received += 1
        self.received_bytes += message_size(message)
        self.received_from[sender] = self.received_from.get(sender, 0) + 1
        if len(self.received_first) < KEEP_FIRST:
            shown = data.hex() if isinstance(data, bytes) else data
            self.received_first.append({"from": sender, "data": shown})

    def summary(self) -> dict[str, Any]:
        return {
            "every_s": self.every,
            "sent": self.sent,
            "sent_bytes": self.sent_bytes,
            "send_failures": self.send_failures,
            "received": self.received,
            "received_bytes": self.received_bytes,
            "received_from": dict(sorted(self.received_from.items())),
            "received_first": list(self.received_first),
            "unreadable": self.unreadable,
        }

    def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        self._stop()
        channel, self.channel = self.channel, None
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.close()
