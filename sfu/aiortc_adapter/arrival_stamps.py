"""When the kernel received each RTP packet of a connection, on the event loop's clock.

A receiver's transport-cc feedback reports when each packet arrived. Taken in Python
(aiortc stamps a packet when its DTLS task takes it from aioice's queue), the time also
holds however long the process was busy elsewhere: on a loaded machine a receiver's
stamps lag behind the network without any queue on the path, and the sender's delay
estimator reads that as congestion (issue 12 item 6: three bots in a call paused for no
network cause). libwebrtc stamps a packet with the socket's receive time
(``SIOCGSTAMP`` in its ``PhysicalSocket``); :class:`KernelArrivals` does the same for an
aioice connection: it wraps each of its ``StunProtocol.datagram_received``, asks the
kernel for the packet's receive time right after asyncio's ``recvfrom``, and keeps it by
the packet's SSRC and sequence number (the RTP header is not encrypted by SRTP), so
that the decrypted packet finds it again. Part of the aiortc adapter: private API.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

from aioice import ice as aioice_ice

logger = logging.getLogger("sfu.aiortc_adapter")

#: linux/sockios.h: the receive time of the last packet read from the socket
SIOCGSTAMP = 0x8906
_TIMEVAL = struct.Struct("@ll")


def socket_receive_time(fd: int) -> float | None:
    """The kernel's receive time (``time.time()`` clock) of the last packet read from
    ``fd``, or None (the first call only turns the stamping on)."""
    try:
        seconds, micros = _TIMEVAL.unpack(fcntl.ioctl(fd, SIOCGSTAMP, bytes(_TIMEVAL.size)))
    except OSError:
        return None
    return seconds + micros / 1e6


def rtp_key(data: bytes) -> tuple[int, int] | None:
    """(SSRC, sequence number) of an RTP packet, None for RTCP or anything else."""
    if len(data) < 12 or not 128 <= data[0] < 192 or 192 <= data[1] <= 223:
        return None
    return int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big")


class KernelArrivals:
    """Kernel receive times of the RTP packets of one aioice connection."""

    def __init__(self, connection: aioice_ice.Connection, max_pending: int = 4096) -> None:
        self._pending: dict[tuple[int, int], float] = {}
        self._max_pending = max_pending
        self._restore: list[Callable[[], None]] = []
        #: packets whose kernel time was found / not found
        self.stamped = 0
        self.unstamped = 0
        for protocol in connection._protocols:
            self._wrap(protocol)

    def _wrap(self, protocol: aioice_ice.StunProtocol) -> None:
        transport = getattr(protocol, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return
        fd = sock.fileno()
        original = protocol.datagram_received
        own = vars(protocol).get("datagram_received")  # another hook's, kept on close
        pending, limit = self._pending, self._max_pending

        def datagram_received(data: bytes | str, addr: tuple[Any, ...]) -> None:
            if isinstance(data, bytes) and (key := rtp_key(data)) is not None:
                received = socket_receive_time(fd)
                if received is not None:
                    if len(pending) >= limit:  # never decrypted (dropped): the oldest go
                        del pending[next(iter(pending))]
                    pending[key] = received
            original(data, addr)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign]

        def restore() -> None:
            if own is not None:
                protocol.datagram_received = own  # type: ignore[method-assign]
                return
            with contextlib.suppress(AttributeError):
                del protocol.datagram_received  # the class's method again

        self._restore.append(restore)

    def arrival(self, data: bytes, now: float) -> float:
        """When decrypted RTP ``data`` reached the socket, on the clock of ``now`` (the
        event loop's time now); ``now`` when the kernel's time is not known."""
        key = rtp_key(data)
        received = self._pending.pop(key, None) if key is not None else None
        if received is None:
            self.unstamped += 1
            return now
        self.stamped += 1
        return now - max(0.0, time.time() - received)

    def close(self) -> None:
        for restore in self._restore:
            restore()
        self._restore.clear()
        self._pending.clear()
