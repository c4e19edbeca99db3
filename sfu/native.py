"""The per-forwarded-packet loop: in C (``sfu/_native.c``) when it is built, else in Python.

``fanout(source, pkt, vp8, now, forwarders)`` hands one incoming packet to each
forwarder. With the C module, a forwarder in its steady state (on the layer it
sends, no switch pending, no frame being dropped, its pacer idle, its subscriber's
:class:`Egress` set) is served in C: header and extension rewrite, VP8 picture-id
rewrite, SRTP protect and ``sendto``, then the same state updates the Python path
makes. Every other case calls ``Forwarder.forward``. The C types hold the hot fields
of ``StreamRewriter`` and ``Forwarder`` (their base classes), so Python reads and
writes the same state.

The send-side estimator's per-packet part (``FeedbackPath``, ``sfu/_feedback.c``; its
Python twin ``sfu/gcc/feedback_path.py``'s ``PyFeedbackPath``) and its trendline
(``Trendline``; ``TrendlineDetector``) are in C too.

The publisher's steady-state ingress is in C as well (``sfu/_ingress.c``, part of the
same module): ``Ingress`` unprotects a publish transport's SRTP and takes a packet of a
known SSRC through receive statistics, NACK tracking, the packet cache and the source's
counters into ``fanout``'s loop. Their fields live in the C base classes
``ReceiveStatsCore``, ``NackCore``, ``PacketCacheCore`` and ``SourceCore`` (of
``ReceiveStatistics``, ``NackGenerator``, ``PacketCache``, ``Source``): one copy of the
state, read and written by both paths.

``PARLEY_NATIVE_INGRESS=0`` keeps the C loop and turns the C ingress off (``NATIVE_INGRESS``).
``PARLEY_NATIVE=0`` in the environment selects the Python stand-ins below (used by
``bench/forwarding.py --target parley-py`` and by tests); ``NATIVE`` says which is in
use and ``NATIVE_ERROR`` why the C module is not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .gcc.feedback_path import PyFeedbackPath
from .gcc.trendline import TrendlineDetector

__all__ = [
    "NATIVE",
    "NATIVE_ERROR",
    "NATIVE_INGRESS",
    "Egress",
    "FeedbackPath",
    "ForwarderCore",
    "Ingress",
    "NackCore",
    "PacketCacheCore",
    "ReceiveStatsCore",
    "SourceCore",
    "Trendline",
    "PyEgress",
    "REWRITER_FIELDS",
    "RewriterCore",
    "fanout",
    "new_send_batch",
    "recvmmsg_reads",
]


#: transport-wide sequence numbers remembered at most (the C Egress's TWCC_RING); the
#: history starts at TWCC_HISTORY_MIN and doubles whenever it would forget a packet sent
#: less than TWCC_SPAN s ago (TWCC_RING_MIN, TWCC_SPAN): sized by the subscriber's rate
TWCC_HISTORY = 16384
TWCC_HISTORY_MIN = 1024
TWCC_SPAN = 2.0


class PyEgress:
    """One subscriber transport's protect + send, in Python (the C ``Egress``'s stand-in).

    Transport-cc, as in C: with ``twcc_id`` set (1-14), a packet whose first header
    extension element is that id's 2-byte placeholder (X bit, no CSRC, 0xBEDE block,
    byte 16 == ``(twcc_id << 4) | 1``) gets sequence number ``twcc_next`` (its low 16
    bits at bytes 17-18) before protect, and :meth:`history` remembers its send time
    (``clock``: CLOCK_MONOTONIC, as ``loop.time()``) and size.
    """

    def __init__(
        self,
        protect: Callable[[bytes], bytes],
        sendto: Callable[[bytes], object],
        errors: tuple[type[BaseException], ...],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._protect = protect
        self._sendto = sendto
        self._errors = errors
        self._clock = clock
        self.tx_packets = 0
        self.tx_errors = 0
        self.closed = False
        self._twcc_id = 0
        self._twcc_byte = -1
        self.twcc_next = 0
        self._history: list[tuple[int, float, int] | None] = []

    @property
    def twcc_id(self) -> int:
        return self._twcc_id

    @twcc_id.setter
    def twcc_id(self, value: int) -> None:
        if not 0 <= value <= 14:
            raise ValueError("twcc_id is 0 (off) or a one-byte extension id 1..14")
        if value and not self._history and not self.closed:
            self._history = [None] * TWCC_HISTORY_MIN
        self._twcc_id = value
        self._twcc_byte = (value << 4) | 1 if value else -1

    def history(self, seq16: int) -> tuple[int, float, int] | None:
        """(seq unwrapped, send time s, RTP size) of the packet stamped with ``seq16``
        among those the history holds (see TWCC_HISTORY), else None."""
        if not 0 <= seq16 <= 0xFFFF:
            raise ValueError("history(seq16): seq16 is 0..65535")
        if not self._history:
            return None
        size = len(self._history)
        entry = self._history[seq16 % size]
        if entry is None or entry[0] & 0xFFFF != seq16:
            return None
        if not self.twcc_next - size <= entry[0] < self.twcc_next:
            return None
        return entry

    def _emit(self, data: bytes, copies: int) -> bool:
        if self.closed:
            self.tx_errors += 1
            return False
        seq = -1
        if (
            len(data) >= 20
            and data[16] == self._twcc_byte
            and data[0] & 0x1F == 0x10
            and data[12:14] == b"\xbe\xde"
            and data[14:16] != b"\x00\x00"
        ):
            seq = self.twcc_next
            data = b"".join((data[:17], (seq & 0xFFFF).to_bytes(2, "big"), data[19:]))
        try:
            packet = self._protect(data)  # once: libsrtp refuses an index twice
        except self._errors:
            self.tx_errors += 1
            return False
        if seq >= 0:  # sent or refused by the socket (a loss to report), as in C
            now = self._clock()
            history = self._history
            old = history[seq % len(history)]
            if old is not None and now - old[1] < TWCC_SPAN and len(history) < TWCC_HISTORY:
                history = self._history = self._grown(history)
            history[seq % len(history)] = (seq, now, len(data))
            self.twcc_next = seq + 1
        try:
            for _ in range(copies):
                self._sendto(packet)
        except self._errors:
            self.tx_errors += 1
            return False
        self.tx_packets += copies
        return True

    def send(self, data: bytes) -> bool:
        return self._emit(data, 1)

    def send_twice(self, data: bytes) -> bool:
        return self._emit(data, 2)

    @staticmethod
    def _grown(history: list[tuple[int, float, int] | None]) -> list[tuple[int, float, int] | None]:
        size = 2 * len(history)
        grown: list[tuple[int, float, int] | None] = [None] * size
        for entry in history:
            if entry is not None:
                grown[entry[0] % size] = entry
        return grown

    def close(self) -> None:
        self.closed = True
        self._history = []  # nothing is sent any more: no feedback to join, as in C


#: The fields of ``RewriterCore`` (the C type's members, the stand-in's slots)
REWRITER_FIELDS = (
    "started",
    "keep_first",
    "in_ssrc",
    "switch_in_seq",
    "seq_offset",
    "ts_offset",
    "pid_offset",
    "tl0_offset",
    "pid_bits",
    "in_pid_last",
    "in_pid_ext",
    "out_seq",
    "out_ext",
    "out_ts",
    "out_pid",
    "out_tl0",
    "skipped",
    "out_time",
)


class _PyRewriterCore:
    """Stand-in for the C ``RewriterCore``: the same fields, as slots."""

    __slots__ = REWRITER_FIELDS


class _PyForwarderCore:
    """Stand-in for the C ``ForwarderCore`` (its fields live in the instance dict)."""

    #: highest VP8 temporal layer forwarded, -1: all (``Forwarder.__init__`` sets it too)
    _tid_limit = -1


#: The fields of ``ReceiveStatsCore``, ``NackCore`` and ``PacketCacheCore`` (the C
#: types' members, the stand-ins' slots)
RECEIVE_STATS_FIELDS = (
    "_base",
    "_bad_seq",
    "_clock_rate",
    "_duplicates",
    "_expected_prior",
    "_jitter",
    "_last_arrival",
    "_last_ts",
    "_lsr",
    "_max",
    "_received",
    "_received_prior",
    "_seen",
    "_sr_arrival",
    "_started",
)
NACK_FIELDS = ("_bad_seq", "_max_missing", "_missing", "_newest")
PACKET_CACHE_FIELDS = (
    "_data",
    "_ext",
    "_mask",
    "_meta",
    "_newest",
    "_pending",
    "_restart",
    "_size",
)


class _PyReceiveStatsCore:
    __slots__ = RECEIVE_STATS_FIELDS


class _PyNackCore:
    __slots__ = NACK_FIELDS


class _PyPacketCacheCore:
    __slots__ = PACKET_CACHE_FIELDS


class _PySourceCore:
    """Stand-in for the C ``SourceCore`` (its fields live in the instance dict)."""

    #: packets this source took in through the C ingress (none without it)
    native_packets = 0


def _py_fanout(
    source: object, pkt: object, vp8: object, now: float, forwarders: Sequence[Any]
) -> None:
    for forwarder in forwarders:
        forwarder.forward(source, pkt, vp8, now)


NATIVE_ERROR: str | None = None
if TYPE_CHECKING:
    RewriterCore = _PyRewriterCore
    ForwarderCore = _PyForwarderCore
    Egress = Any
    Ingress = Any
    ReceiveStatsCore = _PyReceiveStatsCore
    NackCore = _PyNackCore
    PacketCacheCore = _PyPacketCacheCore
    SourceCore = _PySourceCore
    FeedbackPath = PyFeedbackPath
    Trendline = TrendlineDetector
    fanout = _py_fanout
    NATIVE = False
else:
    if os.environ.get("PARLEY_NATIVE", "1") == "0":
        NATIVE_ERROR = "disabled by PARLEY_NATIVE=0"
    else:
        try:
            from ._native import (
                Egress,
                FeedbackPath,
                ForwarderCore,
                Ingress,
                NackCore,
                PacketCacheCore,
                ReceiveStatsCore,
                RewriterCore,
                SourceCore,
                Trendline,
                fanout,
            )
        except ImportError as exc:  # not built (no compiler at install time)
            NATIVE_ERROR = f"sfu._native is not built: {exc}"
    NATIVE = NATIVE_ERROR is None
    if not NATIVE:
        FeedbackPath = PyFeedbackPath  # type: ignore[misc]
        Trendline = TrendlineDetector  # type: ignore[misc]
        RewriterCore, ForwarderCore, Egress, Ingress, fanout = (
            _PyRewriterCore,
            _PyForwarderCore,
            None,
            None,
            _py_fanout,
        )
        ReceiveStatsCore, NackCore, PacketCacheCore, SourceCore = (
            _PyReceiveStatsCore,
            _PyNackCore,
            _PyPacketCacheCore,
            _PySourceCore,
        )
#: the publisher's ingress in C (``Ingress``): with the C module, unless
#: ``PARLEY_NATIVE_INGRESS=0`` (the C forwarding loop behind the Python ingress)
NATIVE_INGRESS = NATIVE and os.environ.get("PARLEY_NATIVE_INGRESS", "1") != "0"


def new_send_batch() -> Any:
    """A ``SendBatch`` for a server's media ports (``sfu/_native.c``), or None.

    The recvmmsg batch reader of every port opens it around the datagrams of one
    readiness when there are at least ``SEND_BATCH_MIN`` of them (``begin``/``flush``);
    every C ``Egress`` whose ``batch`` it is queues the packets it protects meanwhile,
    and ``flush`` sends each subscriber's with one ``sendmmsg``. None without the C module, or with ``PARLEY_SENDMMSG=0`` in the
    environment (``bench/forwarding.py --target parley-nosendmmsg``: one ``sendto`` per
    packet, as before)."""
    if not NATIVE or os.environ.get("PARLEY_SENDMMSG", "1") == "0":
        return None
    from ._native import SendBatch

    return SendBatch()


def recvmmsg_reads() -> bool:
    """Whether the server's batch readers read with ``recvmmsg`` (``sfu._recv.Reader``,
    SRTP still unprotected in Python) instead of a ``recvfrom`` loop: with the C module,
    unless ``PARLEY_RECVMMSG=0`` is in the environment (``--target parley-norecvmmsg``:
    the ``recvfrom`` loop, and no send batching, which needs the count up front)."""
    return NATIVE and os.environ.get("PARLEY_RECVMMSG", "1") != "0"
