"""The pipe's control channel: reliable, ordered JSON messages over its UDP socket (pure:
no I/O, time passed in as ``now``).

Each reliable message carries the sender's session id ``s`` (random per pipe) and a
sequence number ``n`` (1, 2, ...). The receiver acknowledges every one (``ack``, also for
duplicates) and delivers them in order, once, holding back those that overtook a lost
one. The sender retransmits an unacknowledged message every ``retransmit`` seconds and
gives up after ``attempts`` sends: the pipe is then broken (``sfu/pipe.py`` closes it).
A new session id from the peer (in any message: pings carry it too) means the peer
restarted: ``restarted`` is called and the peer's old state is forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .pipe_wire import encode_control

__all__ = ["ControlChannel"]


class ControlChannel:
    def __init__(
        self,
        session: str,
        send: Callable[[bytes], None],
        deliver: Callable[[dict[str, Any]], None],
        restarted: Callable[[], None],
        *,
        retransmit: float = 0.1,
        attempts: int = 30,
    ) -> None:
        self.session = session
        self._send = send
        self._deliver = deliver
        self._restarted = restarted
        self.retransmit = retransmit
        self.attempts = attempts
        self._next = 1
        #: n -> [datagram, next send time, sends so far]
        self._unacked: dict[int, list[Any]] = {}
        #: the peer's session, the next n to deliver, and what overtook it
        self.peer_session: str | None = None
        self._expected = 1
        self._held: dict[int, dict[str, Any]] = {}
        self.retransmissions = 0
        self.duplicates = 0

    @property
    def pending(self) -> int:
        """Messages sent and not acknowledged yet."""
        return len(self._unacked)

    def send(self, message: dict[str, Any], now: float) -> int:
        """Send ``message`` reliably; returns its sequence number."""
        n = self._next
        self._next += 1
        data = encode_control({**message, "s": self.session, "n": n})
        self._unacked[n] = [data, now + self.retransmit, 1]
        self._send(data)
        return n

    def acked(self, n: int) -> bool:
        """Whether message ``n`` was acknowledged (or never sent)."""
        return n not in self._unacked

    def poll(self, now: float) -> list[int]:
        """Retransmit what is due; returns the messages given up on (the peer is gone)."""
        failed = []
        for n, entry in list(self._unacked.items()):
            if entry[1] > now:
                continue
            if entry[2] >= self.attempts:
                del self._unacked[n]
                failed.append(n)
                continue
            entry[1] = now + self.retransmit
            entry[2] += 1
            self.retransmissions += 1
            self._send(entry[0])
        return failed

    def next_due(self) -> float | None:
        """When ``poll`` has work next (None: nothing is waiting for an ack)."""
        return min((e[1] for e in self._unacked.values()), default=None)

    def on_message(self, message: dict[str, Any]) -> None:
        """A decoded control message from the peer. One from a new peer session first
        calls ``restarted`` (the peer restarted: whatever it announced is void)."""
        if message["t"] == "ack":
            self._unacked.pop(message["n"], None)
            return
        if "s" in message and message["s"] != self.peer_session:
            if self.peer_session is not None:
                self._restarted()
            self.peer_session = message["s"]
            self._expected = 1
            self._held.clear()
        if "n" not in message:
            self._deliver(message)  # unreliable (ping)
            return
        n = message["n"]
        self._send(encode_control({"t": "ack", "n": n}))
        if n < self._expected or n in self._held:
            self.duplicates += 1
            return
        self._held[n] = message
        while self._expected in self._held:
            self._deliver(self._held.pop(self._expected))
            self._expected += 1
