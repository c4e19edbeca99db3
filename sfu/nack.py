"""NACK generation for one incoming RTP stream, and RFC 4585 generic NACK items.

:class:`NackGenerator` watches arriving sequence numbers, tracks the gaps and says
which sequence numbers to NACK at a given time. :func:`pack_nack_items` and
:func:`unpack_nack_items` convert between sequence numbers and the (PID, BLP) pairs
of a generic NACK FCI (RFC 4585 6.2.1).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from .native import NackCore

__all__ = ["NackGenerator", "pack_nack_items", "unpack_nack_items"]

#: Tolerance on retry spacing, so a fake clock stepping by 0.1 is not off by one ulp.
_EPS = 1e-9
#: A packet at least this far behind the newest one (and not missing) is a restart
#: candidate (RFC 3550 A.1's MAX_DROPOUT); nearer, it is a stray late packet.
_RESTART_DISTANCE = 3000


class _Missing:
    """One missing packet: when its gap was seen, NACKs sent, when the last was sent."""

    __slots__ = ("detected", "last_sent", "sent")

    def __init__(self, detected: float) -> None:
        self.detected = detected
        self.sent = 0
        self.last_sent = 0.0


class NackGenerator(NackCore):
    """Tracks missing sequence numbers of one stream and schedules their NACKs.

    * ``add`` records every arriving packet. A gap after the newest sequence number
      marks the skipped ones missing; a missing one that arrives (late or
      retransmitted) stops being missing.
    * A jump that would mark more than ``max_missing`` packets missing resets the
      generator instead (the caller should rather ask for a keyframe); at most
      ``max_missing`` packets are tracked, the oldest being dropped first.
    * ``due`` returns what to NACK now: each missing packet at once, then again every
      ``max(retry_interval, rtt)`` seconds, at most ``max_retries`` times, and never
      once ``max_age`` seconds have passed since its gap was seen.
    * A packet far behind (more than ``max_missing`` and at least 3000) followed by
      its successor is a sequence restart: tracking starts over from there.

    Sequence numbers are extended internally, so order is wraparound-aware:
    :attr:`missing` and ``due`` list 65535 before 0.
    """

    #: ``_newest``, ``_missing``, ``_bad_seq`` and ``_max_missing`` live in the base class
    #: (``sfu.native.NackCore``), which the C ingress updates in place
    __slots__ = ("_max_age", "_max_retries", "_retry_interval")

    def __init__(
        self,
        max_age: float = 1.0,
        max_retries: int = 10,
        retry_interval: float = 0.1,
        max_missing: int = 512,
    ) -> None:
        if max_age <= 0:
            raise ValueError(f"max_age must be positive, got {max_age}")
        if max_retries < 1:
            raise ValueError(f"max_retries must be at least 1, got {max_retries}")
        if retry_interval < 0:
            raise ValueError(f"retry_interval must not be negative, got {retry_interval}")
        if not 1 <= max_missing < 0x8000:
            raise ValueError(f"max_missing must be in [1, 32768), got {max_missing}")
        self._max_age = max_age
        self._max_retries = max_retries
        self._retry_interval = retry_interval
        self._max_missing = max_missing
        #: Extended sequence number of the newest packet, None before the first.
        self._newest: int | None = None
        #: Extended seq -> state, in increasing order (insertion order).
        self._missing: dict[int, _Missing] = {}
        #: Sequence number that would confirm a restart, -1 if none pending.
        self._bad_seq = -1

    @property
    def missing(self) -> list[int]:
        """Sequence numbers currently missing, oldest first (wraparound-aware order)."""
        return [ext & 0xFFFF for ext in self._missing]

    def __len__(self) -> int:
        return len(self._missing)

    def reset(self) -> None:
        """Forget everything: the next packet starts a new sequence."""
        self._newest = None
        self._missing.clear()
        self._bad_seq = -1

    def add(self, seq: int, now: float) -> None:
        """Record the arrival of ``seq`` at ``now``."""
        newest = self._newest
        if newest is None:
            self._newest = seq & 0xFFFF
            return
        d = ((seq - newest + 0x8000) & 0xFFFF) - 0x8000
        if d == 1:
            self._newest = newest + 1
            self._bad_seq = -1
            return
        if d > 1:
            self._bad_seq = -1
            self._newest = newest + d
            missing = self._missing
            limit = self._max_missing
            if d - 1 > limit:
                missing.clear()
                return
            for ext in range(newest + 1, newest + d):
                missing[ext] = _Missing(now)
            excess = len(missing) - limit
            if excess > 0:
                for ext in list(islice(missing, excess)):
                    del missing[ext]
            return
        if d == 0:
            return
        if self._missing.pop(newest + d, None) is not None:
            self._bad_seq = -1
            return
        if -d < _RESTART_DISTANCE or -d <= self._max_missing:
            self._bad_seq = -1
            return
        seq &= 0xFFFF
        if seq != self._bad_seq:
            self._bad_seq = (seq + 1) & 0xFFFF
            return
        # The packet before this one was just as far behind: the sender restarted.
        self._bad_seq = -1
        self._missing.clear()
        self._newest = newest + ((seq - newest) & 0xFFFF)

    def due(self, now: float, rtt: float | None = None) -> list[int]:
        """Sequence numbers to NACK at ``now``, oldest first; marks them as sent."""
        missing = self._missing
        if not missing:
            return []
        interval = self._retry_interval
        if rtt is not None and rtt > interval:
            interval = rtt
        interval -= _EPS
        max_age = self._max_age
        max_retries = self._max_retries
        newest = self._newest
        assert newest is not None
        out: list[int] = []
        drop: list[int] = []
        for ext, m in missing.items():
            if now - m.detected > max_age or newest - ext >= 0x8000:
                drop.append(ext)
                continue
            if m.sent == 0 or now - m.last_sent >= interval:
                out.append(ext & 0xFFFF)
                m.sent += 1
                m.last_sent = now
                if m.sent >= max_retries:
                    drop.append(ext)
        for ext in drop:
            del missing[ext]
        return out


def pack_nack_items(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """RFC 4585 generic NACK (PID, BLP) pairs covering exactly ``seqs``.

    Duplicates are ignored. The sequence numbers are ordered circularly, starting
    after the largest gap between them, so a run across the wrap (65535, 0, ...) is
    packed as one run: ``[65535, 0]`` gives ``[(65535, 0x0001)]``. Each item covers
    its PID and, for bit ``i`` of BLP, ``PID + i + 1``.
    """
    uniq = sorted({s & 0xFFFF for s in seqs})
    n = len(uniq)
    if n == 0:
        return []
    if n > 1:
        best_gap = uniq[0] + 0x10000 - uniq[-1]
        start = 0
        for i in range(1, n):
            gap = uniq[i] - uniq[i - 1]
            if gap > best_gap:
                best_gap = gap
                start = i
        if start:
            uniq = uniq[start:] + uniq[:start]
    items: list[tuple[int, int]] = []
    pid = uniq[0]
    blp = 0
    for s in uniq[1:]:
        d = (s - pid) & 0xFFFF
        if d <= 16:
            blp |= 1 << (d - 1)
        else:
            items.append((pid, blp))
            pid = s
            blp = 0
    items.append((pid, blp))
    return items


def unpack_nack_items(items: Iterable[tuple[int, int]]) -> list[int]:
    """Sequence numbers named by (PID, BLP) pairs, in item order, without repeats."""
    out: dict[int, None] = {}
    for pid, blp in items:
        pid &= 0xFFFF
        out[pid] = None
        blp &= 0xFFFF
        i = 1
        while blp:
            if blp & 1:
                out[(pid + i) & 0xFFFF] = None
            blp >>= 1
            i += 1
    return list(out)
