"""Hooks only the benchmark clients use (``bench/forwarding.py``): DTLS-SRTP profile
choice, the ICE connection's sockets, and reading many datagrams per wakeup. Every
private attribute they touch is listed in ``HOOKED_ATTRIBUTES`` (``check_hooks``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from aiortc.rtcdtlstransport import RTCDtlsTransport

from .ice import ice_connection


def restrict_srtp_profiles(dtls: RTCDtlsTransport, openssl_profile: bytes) -> None:
    """Offer/accept only the DTLS-SRTP profile of this OpenSSL name (before DTLS starts);
    ``ValueError`` when this aiortc/libsrtp build does not support it."""
    from aiortc import rtcdtlstransport

    chosen = [p for p in rtcdtlstransport.SRTP_PROFILES if p.openssl_profile == openssl_profile]
    if not chosen:
        raise ValueError(f"this libsrtp/aiortc build does not support {openssl_profile.decode()}")
    dtls._srtp_profiles = chosen


def selected_srtp_profile(dtls: RTCDtlsTransport) -> str | None:
    """The DTLS-SRTP profile negotiated, once DTLS is up (``None`` before)."""
    ssl = getattr(dtls, "_ssl", None)
    if ssl is None:
        return None
    with contextlib.suppress(Exception):
        value = ssl.get_selected_srtp_profile()
        return value.decode() if value else None
    return None


def drain_datagrams_per_wakeup(dtls: RTCDtlsTransport, batch: int = 512) -> None:
    """Make each ICE socket read up to ``batch`` queued datagrams per wakeup instead of
    asyncio's one per loop turn (a benchmark *client* receiving tens of thousands of
    packets a second). Datagrams still go through ``StunProtocol.datagram_received``."""
    loop = asyncio.get_running_loop()
    for protocol in ice_connection(dtls)._protocols:
        transport = getattr(protocol, "transport", None)
        if transport is None:
            continue
        sock: socket.socket = transport._sock

        def drain(sock: socket.socket = sock, protocol: Any = protocol) -> None:
            for _ in range(batch):
                try:
                    data, addr = sock.recvfrom(4096)
                except OSError:  # BlockingIOError, InterruptedError: nothing more now
                    return
                protocol.datagram_received(data, addr)

        # replaces the transport's own reader (the public add_reader refuses its fd)
        loop._add_reader(sock.fileno(), drain)  # type: ignore[attr-defined]
