"""Kernel receive times (``sfu/aiortc_adapter/arrival_stamps.py``) over a real UDP socket:
packets that reach the socket while the event loop is busy keep the times they arrived,
not the time the process got to them."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import Any

from sfu.aiortc_adapter.arrival_stamps import KernelArrivals, rtp_key


def _rtp(seq: int, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 90, ssrc) + bytes(100)


class _Protocol(asyncio.DatagramProtocol):
    """What KernelArrivals reads of an aioice ``StunProtocol``: its transport and
    ``datagram_received``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.BaseTransport | None = None
        self.received: list[tuple[bytes, float]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.append((data, self.loop.time()))


class _Connection:
    def __init__(self, protocol: _Protocol) -> None:
        self._protocols = [protocol]


def test_rtp_key_skips_rtcp_and_stun() -> None:
    assert rtp_key(_rtp(7, 99)) == (99, 7)
    assert rtp_key(bytes([0x80, 200]) + bytes(30)) is None  # a sender report
    assert rtp_key(bytes([0x00, 0x01]) + bytes(30)) is None  # STUN
    assert rtp_key(b"\x80") is None


async def test_packets_read_late_keep_the_time_they_reached_the_socket() -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _Protocol(loop), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    arrivals = KernelArrivals(_Connection(protocol))  # type: ignore[arg-type]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.sendto(_rtp(0), ("127.0.0.1", port))  # turns the kernel's stamping on
        await asyncio.sleep(0.05)

        def send() -> None:
            for seq in range(1, 21):
                sender.sendto(_rtp(seq), ("127.0.0.1", port))
                time.sleep(0.02)

        thread = threading.Thread(target=send)
        thread.start()
        time.sleep(0.5)  # the event loop is busy: the packets wait in the socket
        thread.join()
        await asyncio.sleep(0.05)
        read = [(data, at) for data, at in protocol.received if rtp_key(data)[1] >= 1]
        assert len(read) == 20
        # the loop read them all within a few ms of each other ...
        assert read[-1][1] - read[0][1] < 0.1
        stamps = [arrivals.arrival(data, at) for data, at in read]
        # ... but their stamps are spread as they were sent (20 ms apart), in the past
        assert stamps == sorted(stamps)
        assert 0.3 <= stamps[-1] - stamps[0] <= 0.6, stamps
        assert all(stamp <= at for stamp, (_, at) in zip(stamps, read, strict=True))
        assert arrivals.stamped == 20 and arrivals.unstamped == 0
        # a packet the kernel times were not kept for: the time given
        assert arrivals.arrival(_rtp(999), 5.0) == 5.0 and arrivals.unstamped == 1
    finally:
        arrivals.close()
        sender.close()
        transport.close()
    assert "datagram_received" not in vars(protocol)  # close() gave the method back
