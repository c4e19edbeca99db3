"""The per-forwarded-packet loop: in C (``sfu/_native.c``) when it is built, else in Python.

``fanout(source, pkt, vp8, now, forwarders)`` hands one incoming packet to each
forwarder. With the C module, a forwarder in its steady state (on the layer it
sends, no switch pending, no frame being dropped, its pacer idle, its subscriber's
:class:`Egress` set) is served in C: header and extension rewrite, VP8 picture-id
rewrite, SRTP protect and ``sendto``, then the same state updates the Python path
makes. Every other case calls ``Forwarder.forward``. The C types hold the hot fields
of ``StreamRewriter`` and ``Forwarder`` (their base classes), so Python reads and
writes the same state.

``PARLEY_NATIVE=0`` in the environment selects the Python stand-ins below (used by
``bench/forwarding.py --target parley-py`` and by tests); ``NATIVE`` says which is in
use and ``NATIVE_ERROR`` why the C module is not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

__all__ = [
    "NATIVE",
    "NATIVE_ERROR",
    "Egress",
    "ForwarderCore",
    "PyEgress",
    "REWRITER_FIELDS",
    "RewriterCore",
    "fanout",
]


class PyEgress:
    """One subscriber transport's protect + send, in Python (the C ``Egress``'s stand-in)."""

    def __init__(
        self,
        protect: Callable[[bytes], bytes],
        sendto: Callable[[bytes], object],
        errors: tuple[type[BaseException], ...],
    ) -> None:
        self._protect = protect
        self._sendto = sendto
        self._errors = errors
        self.tx_packets = 0
        self.tx_errors = 0
        self.closed = False

    def _emit(self, data: bytes, copies: int) -> bool:
        if self.closed:
            self.tx_errors += 1
            return False
        try:
            packet = self._protect(data)  # once: libsrtp refuses an index twice
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

    def close(self) -> None:
        self.closed = True


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
    fanout = _py_fanout
    NATIVE = False
else:
    if os.environ.get("PARLEY_NATIVE", "1") == "0":
        NATIVE_ERROR = "disabled by PARLEY_NATIVE=0"
    else:
        try:
            from ._native import Egress, ForwarderCore, RewriterCore, fanout
        except ImportError as exc:  # not built (no compiler at install time)
            NATIVE_ERROR = f"sfu._native is not built: {exc}"
    NATIVE = NATIVE_ERROR is None
    if not NATIVE:
        RewriterCore, ForwarderCore, Egress, fanout = (
            _PyRewriterCore,
            _PyForwarderCore,
            None,
            _py_fanout,
        )
