"""Ring buffer of recently forwarded RTP packets, keyed by 16-bit sequence number.

Used to answer NACKs: ``store`` every packet, ``get`` the ones a receiver asks for.

Sequence numbers are extended internally (relative to the newest stored one), so a
slot is only ever returned for the exact packet that filled it: a packet that was
overwritten by a newer one sharing its slot, that fell out of the window of the last
``capacity`` sequence numbers, or that belongs to an earlier 65536-cycle is never
returned for a new sequence number with the same low bits.
"""

from __future__ import annotations

from collections.abc import Callable

from .native import PacketCacheCore

__all__ = ["PacketCache"]

#: Extended sequence number of an empty slot; never equal to a real one.
_EMPTY = -(1 << 62)

#: A packet at least this far behind the newest one (and outside the window) is a
#: restart candidate: if its successor follows it immediately, the sender restarted
#: its sequence and the cache starts over (RFC 3550 A.1's MAX_DROPOUT). Retransmitted
#: packets arriving late but nearer are simply not stored.
_RESTART_DISTANCE = 3000


class PacketCache(PacketCacheCore):
    """Keeps the packets of the last ``capacity`` sequence numbers.

    ``capacity`` is rounded up to a power of two (see :attr:`capacity`). ``store`` and
    ``get`` are O(1) and allocate nothing but ``get``'s result tuple.
    """

    #: the fields live in the base class (``sfu.native.PacketCacheCore``), which the C
    #: ingress updates in place (``store`` with no meta); ``rebuild(data)`` makes the meta
    #: of a packet stored without one when ``get`` is first asked for it
    __slots__ = ("rebuild",)

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        size = 1 << (capacity - 1).bit_length()
        self.rebuild: Callable[[bytes], object] | None = None
        self._size = size
        self._mask = size - 1
        self._restart = max(size, _RESTART_DISTANCE)
        self._ext: list[int] = [_EMPTY] * size
        self._data: list[bytes | None] = [None] * size
        self._meta: list[object] = [None] * size
        #: Extended sequence number of the newest stored packet.
        self._newest: int | None = None
        #: A packet far behind the window, held to detect a sequence restart.
        self._pending: tuple[int, bytes, object] | None = None

    @property
    def capacity(self) -> int:
        """Number of slots (the requested capacity rounded up to a power of two)."""
        return self._size

    @property
    def newest(self) -> int | None:
        """Sequence number (16 bit) of the newest stored packet, ``None`` if empty."""
        newest = self._newest
        return None if newest is None else newest & 0xFFFF

    def store(self, seq: int, data: bytes, meta: object = None) -> None:
        """Keep ``data`` (and ``meta``) for ``seq``, replacing whatever shares its slot.

        A packet older than the window is dropped, unless it and its successor both
        arrive far behind: that is a sequence restart and the cache starts over.
        """
        newest = self._newest
        if newest is None:
            ext = seq & 0xFFFF
            self._newest = ext
        else:
            ext = newest + ((seq - newest + 0x8000) & 0xFFFF) - 0x8000
            if ext > newest:
                self._newest = ext
            elif ext <= newest - self._size:
                self._store_old(seq, data, meta, newest - ext)
                return
            if self._pending is not None:
                self._pending = None
        i = ext & self._mask
        self._ext[i] = ext
        self._data[i] = data
        self._meta[i] = meta

    def _store_old(self, seq: int, data: bytes, meta: object, behind: int) -> None:
        pending = self._pending
        self._pending = None
        if behind < self._restart:
            return
        if pending is not None and (pending[0] + 1) & 0xFFFF == seq & 0xFFFF:
            self.clear()
            self.store(*pending)
            self.store(seq, data, meta)
        else:
            self._pending = (seq, data, meta)

    def get(self, seq: int) -> tuple[bytes, object] | None:
        """``(data, meta)`` stored for ``seq``, or ``None`` if not (or no longer) held."""
        newest = self._newest
        if newest is None:
            return None
        ext = newest + ((seq - newest + 0x8000) & 0xFFFF) - 0x8000
        if ext > newest or ext <= newest - self._size:
            return None
        i = ext & self._mask
        if self._ext[i] != ext:
            return None
        data = self._data[i]
        assert data is not None
        meta = self._meta[i]
        if meta is None and self.rebuild is not None:
            meta = self._meta[i] = self.rebuild(data)
        return data, meta

    def resize(self, capacity: int) -> None:
        """Keep ``capacity`` slots (rounded up to a power of two) from now on, with the
        packets of the newest sequence numbers that fit (``sfu/cache_window.py``)."""
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        size = 1 << (capacity - 1).bit_length()
        if size == self._size:
            return
        ext, data, meta, old_mask = self._ext, self._data, self._meta, self._mask
        kept = min(size, self._size)
        self._size = size
        self._mask = size - 1
        self._restart = max(size, _RESTART_DISTANCE)
        self._ext = [_EMPTY] * size
        self._data = [None] * size
        self._meta = [None] * size
        newest = self._newest
        if newest is None:
            return
        for e in range(newest - kept + 1, newest + 1):
            old = e & old_mask
            if ext[old] == e:
                i = e & self._mask
                self._ext[i] = e
                self._data[i] = data[old]
                self._meta[i] = meta[old]

    def clear(self) -> None:
        """Drop every packet (and the sequence reference)."""
        size = self._size
        self._ext = [_EMPTY] * size
        self._data = [None] * size
        self._meta = [None] * size
        self._newest = None
        self._pending = None

    def __len__(self) -> int:
        """Number of packets currently retrievable (O(capacity))."""
        newest = self._newest
        if newest is None:
            return 0
        low = newest - self._size
        return sum(1 for ext in self._ext if low < ext <= newest)

    def __contains__(self, seq: object) -> bool:
        return isinstance(seq, int) and self.get(seq) is not None
