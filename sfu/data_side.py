"""A participant's data channel: its messages relayed to the room (``sfu/datachannel.py``).

The client opens the channel labelled ``"parley"`` on its publish connection; the
server takes it in ``attach`` (aiortc's ``datachannel`` event) and uses the same
channel both ways: what the client sends is checked (size, rate, envelope) and relayed
to the other participants' channels; what others send arrives on it. Channels with
another label are closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .datachannel import (
    BAD_DATA,
    DATA_CHANNEL_LABEL,
    DATA_RATE_LIMITED,
    DATA_TOO_LARGE,
    DataLimiter,
    DataLimits,
    EnvelopeError,
    message_size,
    parse_envelope,
    recipients,
    relayed,
)
from .ports import Clock

logger = logging.getLogger(__name__)

#: why a message is refused, in words (the error's ``message``)
_REASONS = {
    DATA_TOO_LARGE: "data channel message of {size} bytes is larger than {limit} bytes",
    DATA_RATE_LIMITED: "data channel message dropped: over the rate limit",
}

#: A sender is told of refused messages at most once per this many seconds per error
#: code (the next report says how many were refused meanwhile): a flood of refused
#: messages must not become a flood of websocket errors.
REPORT_INTERVAL = 1.0

#: counters this side keeps in its participant's ``counters``
COUNTERS = (
    "data_in",
    "data_relayed",
    "data_dropped_size",
    "data_dropped_rate",
    "data_bad",
    "data_dropped_slow",
    "data_not_allowed",
)

#: the error code of a message from a participant that may not send data
NOT_ALLOWED = "not_allowed"


class DataSide:
    """The ``"parley"`` data channel of one participant."""

    def __init__(
        self,
        participant_id: str,
        limits: DataLimits,
        clock: Clock,
        counters: dict[str, int],
        peers: Callable[[], Mapping[str, DataSide]],
        on_refused: Callable[[str, str], None],
    ) -> None:
        self.id = participant_id
        self.limits = limits
        self._clock = clock
        self.counters = counters
        for name in COUNTERS:
            counters.setdefault(name, 0)
        #: the other participants' data sides by id, in room order (self included)
        self._peers = peers
        self._on_refused = on_refused
        self._limiter = DataLimiter(limits, clock.time())
        #: per error code: when the sender was last told, and refusals not told since
        self._reported: dict[str, float] = {}
        self._untold: dict[str, int] = {}
        self.channel: Any = None
        self.closed = False
        #: False: this participant's messages are refused (its token's grants)
        self.may_send = True
        #: called with each message relayed (as relayed) and its ``to``, after the
        #: room's own participants got it: the pipes of a spread room (``sfu/pipe_data.py``)
        self.relay_taps: list[Callable[[str | bytes, tuple[str, ...] | None], None]] = []

    def attach(self, channel: Any) -> None:
        """aiortc's ``datachannel`` event on the publish connection."""
        if channel.label != DATA_CHANNEL_LABEL or self.closed or self.channel is not None:
            channel.close()
            return
        self.channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            try:
                self.on_message(message, self._clock.time())
            except Exception:  # one message must never stop the channel
                logger.exception("participant %s: data channel message failed", self.id)

        @channel.on("close")
        def on_close() -> None:
            if self.channel is channel:
                self.channel = None

    def on_message(self, message: str | bytes, now: float) -> None:
        """Check one message of this participant's and relay it."""
        self.counters["data_in"] += 1
        if not self.may_send:
            self.counters["data_not_allowed"] += 1
            self._refuse(NOT_ALLOWED, "this participant may not send data channel messages", now)
            return
        size = message_size(message)
        refused = self._limiter.check(size, now)
        if refused is not None:
            key = "data_dropped_size" if refused == DATA_TOO_LARGE else "data_dropped_rate"
            self.counters[key] += 1
            text = _REASONS[refused].format(size=size, limit=self.limits.max_message_bytes)
            self._refuse(refused, text, now)
            return
        try:
            envelope = parse_envelope(message)
        except EnvelopeError as exc:
            self.counters["data_bad"] += 1
            self._refuse(BAD_DATA, f"data channel message refused: {exc}", now)
            return
        peers = self._peers()
        out = relayed(self.id, envelope)
        for pid in recipients(self.id, envelope, list(peers)):
            if peers[pid].deliver(out):
                self.counters["data_relayed"] += 1
        for tap in list(self.relay_taps):
            tap(out, envelope.to)

    def _refuse(self, code: str, text: str, now: float) -> None:
        """Tell the sender, at most once per REPORT_INTERVAL per code."""
        last = self._reported.get(code)
        if last is not None and now - last < REPORT_INTERVAL:
            self._untold[code] = self._untold.get(code, 0) + 1
            return
        untold = self._untold.pop(code, 0)
        if untold:
            text += f" ({untold} more refused since the last report)"
        self._reported[code] = now
        self._on_refused(code, text)

    def deliver(self, message: str | bytes) -> bool:
        """Send a relayed message to this participant; False when it cannot take it now."""
        channel = self.channel
        if self.closed or channel is None or channel.readyState != "open":
            return False
        if channel.bufferedAmount > self.limits.max_buffered_bytes:
            self.counters["data_dropped_slow"] += 1
            return False
        try:
            channel.send(message)
        except Exception:  # a channel closing under us
            logger.debug("participant %s: data channel send failed", self.id, exc_info=True)
            return False
        return True

    def close(self) -> None:
        self.closed = True
        channel, self.channel = self.channel, None
        if channel is not None:
            try:
                channel.close()
            except Exception:
                logger.debug("participant %s: closing the data channel failed", self.id)
