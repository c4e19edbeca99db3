"""The batch readers of a media port's sockets (part of the aiortc adapter): up to
``READ_BATCH`` datagrams per readiness with ``recvfrom``, or one ``recvmmsg`` through
``sfu._recv.Reader`` (``sfu/_recv.c``; SRTP RTP unprotected in C when given the
session), each optionally inside the server's send batch (``sfu._native.SendBatch``)."""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aioice import ice as aioice_ice
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

#: Datagrams read per readiness event on the fast path, and the largest datagram.
READ_BATCH = 64
RECV_SIZE = 2048

native_recv: Any
try:  # batched reads (recvmmsg) with SRTP unprotect of RTP in C (sfu/_recv.c)
    native_recv = importlib.import_module("sfu._recv")
except ImportError:  # pragma: no cover - the C module is not built
    native_recv = None

Handler = Callable[[bytes | str, tuple[Any, ...]], None]


def make_reader(
    sock: socket.socket, srtp: pylibsrtp.Session | None, batch: int = READ_BATCH
) -> Any:
    """``sfu._recv.Reader`` on ``sock`` (non-blocking), unprotecting SRTP RTP with ``srtp``
    (libsrtp's context and ``srtp_unprotect`` handed to C by address; the reader keeps
    ``sock`` and ``srtp`` alive until closed). RuntimeError without the C module."""
    if native_recv is None:
        raise RuntimeError("sfu._recv is not built")
    if srtp is None:
        return native_recv.Reader(sock.fileno(), batch, 0, 0, sock)
    context = int(srtp_ffi.cast("uintptr_t", srtp._srtp[0]))
    unprotect_fn = int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, "srtp_unprotect")))
    return native_recv.Reader(sock.fileno(), batch, context, unprotect_fn, (sock, srtp))


def batched(read_ready: Callable[[], None], batch: Any) -> Callable[[], None]:
    """``read_ready`` inside ``batch`` (a SendBatch, or None: unchanged): what the
    datagrams of one readiness make the egresses send leaves at the end, one sendmmsg
    per egress."""
    if batch is None:
        return read_ready
    begin, flush = batch.begin, batch.flush

    def read_batched() -> None:
        begin()
        try:
            read_ready()
        finally:
            flush()

    return read_batched


def recvfrom_reader(
    protocol: aioice_ice.StunProtocol, sock: socket.socket, handler: Handler
) -> Callable[[], None]:
    """The readiness callback: up to READ_BATCH ``recvfrom`` calls."""
    recvfrom = sock.recvfrom

    def read_ready() -> None:
        for _ in range(READ_BATCH):
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                protocol.error_received(exc)
                return
            handler(data, addr)

    return read_ready


def native_reader(
    reader: Any,
    protocol: aioice_ice.StunProtocol,
    handler: Handler,
    rtp_in: Callable[[bytes], None],
    count_errors: Callable[[int], None],
) -> Callable[[], None]:
    """The readiness callback over a ``sfu._recv.Reader``: one recvmmsg per call; plain
    RTP to ``rtp_in``, the rest to ``handler``, new unprotect failures to ``count_errors``."""
    read = reader.read
    seen_errors = 0

    def read_ready() -> None:
        nonlocal seen_errors
        try:
            items = read()
        except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
            protocol.error_received(exc)
            return
        for item in items:
            if item.__class__ is bytes:
                rtp_in(item)
            else:
                handler(*item)
        errors = reader.rx_errors
        if errors != seen_errors:
            count_errors(errors - seen_errors)
            seen_errors = errors

    return read_ready
