"""Decrypted RTP seen on its way into aiortc, and raw RTCP sent on the same transport:
for a peer that lets aiortc decode (``parley bot``) but owes the sender feedback aiortc
does not implement (transport-cc). Part of the aiortc adapter: private API of aiortc."""

from __future__ import annotations

import asyncio
import logging

import pylibsrtp
from aiortc.rtcdtlstransport import RTCDtlsTransport

from .arrival_stamps import KernelArrivals
from .ice import ice_connection
from .media_port import RtpHandler

logger = logging.getLogger("sfu.aiortc_adapter")


class ReceiveTap:
    """Calls ``on_rtp(data, now)`` with every decrypted RTP packet ``dtls`` hands aiortc,
    just before aiortc gets it (``now``: the event loop's clock when aiortc's DTLS task
    takes the packet from aioice's queue; with ``kernel_arrivals``, when the kernel
    received it, on that clock: ``arrival_stamps.py``). aiortc still gets every packet, unchanged;
    a handler that raises is counted (``errors``) and logged once, never passed on.

    ``send_rtcp`` protects one RTCP packet with the transport's SRTP session and sends
    it on the nominated pair. ``close()`` gives aiortc its own handler back.
    """

    def __init__(
        self, dtls: RTCDtlsTransport, on_rtp: RtpHandler, *, kernel_arrivals: bool = False
    ) -> None:
        self._dtls = dtls
        self.arrivals = KernelArrivals(ice_connection(dtls)) if kernel_arrivals else None
        arrivals = self.arrivals
        self._closed = False
        self.packets = 0
        self.errors = 0
        self.rtcp_sent = 0
        loop = asyncio.get_running_loop()
        original = dtls._handle_rtp_data
        self._original = original

        async def handle_rtp(data: bytes, arrival_time_ms: int) -> None:
            if not self._closed:
                self.packets += 1
                try:
                    now = loop.time()
                    on_rtp(data, now if arrivals is None else arrivals.arrival(data, now))
                except Exception:  # the tap must never cost aiortc a packet
                    self.errors += 1
                    if self.errors == 1:
                        logger.exception("receive tap handler failed (later: counted only)")
            await original(data, arrival_time_ms)

        dtls._handle_rtp_data = handle_rtp  # type: ignore[method-assign]

    async def send_rtcp(self, packet: bytes) -> bool:
        """Protect and send one RTCP packet; False when the transport is not connected
        (yet, or any more) or the packet could not be protected."""
        if self._closed or self._dtls.state != "connected":
            return False
        try:
            await self._dtls._send_rtp(packet)  # protects RTCP as RTCP
        except (ConnectionError, pylibsrtp.Error):
            return False
        self.rtcp_sent += 1
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dtls._handle_rtp_data = self._original  # type: ignore[method-assign]
            if self.arrivals is not None:
                self.arrivals.close()
