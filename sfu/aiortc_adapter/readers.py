"""The batch readers of a media port's sockets (part of the aiortc adapter): up to
``READ_BATCH`` datagrams per readiness with ``recvfrom``, or one ``recvmmsg`` through
``sfu._recv.Reader`` (``sfu/_recv.c``; SRTP RTP unprotected in C when given the
session), the latter inside the server's send batch (``sfu._native.SendBatch``) when a
readiness brings at least ``SEND_BATCH_MIN`` datagrams."""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aioice import ice as aioice_ice
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from .. import native

#: Datagrams read per readiness event on the fast path, and the largest datagram.
READ_BATCH = 64
RECV_SIZE = 2048
#: The send batch is opened for a readiness that brought at least this many datagrams:
#: sendmmsg saves ~10-25 % of a send from 2 packets per subscriber per batch on, and
#: costs ~4 % at 1 (``bench/send_batch.py``, docs/benchmarks.md)
SEND_BATCH_MIN = 2

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
    batch: Any = None,
) -> Callable[[], None]:
    """The readiness callback over a ``sfu._recv.Reader``: one recvmmsg per call; plain
    RTP to ``rtp_in``, the rest to ``handler``, new unprotect failures to ``count_errors``;
    inside ``batch`` (a SendBatch, or None) when the call read ``SEND_BATCH_MIN`` or more."""
    read = reader.read
    seen_errors = 0

    def dispatch(items: list[Any]) -> None:
        for item in items:
            if item.__class__ is bytes:
                rtp_in(item)
            else:
                handler(*item)

    def read_ready() -> None:
        nonlocal seen_errors
        try:
            items = read()
        except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
            protocol.error_received(exc)
            return
        if batch is not None and len(items) >= SEND_BATCH_MIN:
            batch.begin()
            try:
                dispatch(items)
            finally:
                batch.flush()
        else:
            dispatch(items)
        errors = reader.rx_errors
        if errors != seen_errors:
            count_errors(errors - seen_errors)
            seen_errors = errors

    return read_ready


def make_ingress(
    rx: pylibsrtp.Session,
    by_ssrc: dict[int, Any],
    counters: dict[str, int],
    fallback: Callable[[bytes, float], None],
) -> Any:
    """``sfu.native.Ingress`` over ``rx`` (libsrtp's ``srtp_unprotect`` and the session's
    context handed to C by address, as ``make_egress`` does for protect; it keeps ``rx``
    alive), or None without the C module (or with ``PARLEY_NATIVE_INGRESS=0``). ``by_ssrc`` is the publisher's SSRC -> Source
    table itself; ``fallback(plain, now)`` takes what is not of the steady state."""
    if not native.NATIVE_INGRESS:
        return None
    context = int(srtp_ffi.cast("uintptr_t", rx._srtp[0]))
    unprotect_fn = int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, "srtp_unprotect")))
    return native.Ingress(
        by_ssrc, counters, fallback, srtp_context=context, srtp_unprotect=unprotect_fn, keep=rx
    )


def ingress_reader(
    ingress: Any,
    protocol: aioice_ice.StunProtocol,
    handler: Handler,
    sock: socket.socket,
    batch: Any,
    failed: Callable[[str], None],
) -> Callable[[], None]:
    """The readiness callback of a publisher's socket read by the C ingress: one
    ``drain`` of up to READ_BATCH datagrams (what is not of the steady state goes to
    ``handler``), inside the server's send batch (each subscriber's copies of the batch
    leave with one ``sendmmsg``; a lone datagram with ``sendto``); ``failed("RTP")``
    when a forwarder raised on its way."""
    drain, fd = ingress.drain, sock.fileno()

    def drain_ready() -> None:
        if batch is not None:
            batch.begin()
        try:
            drain(fd, handler, READ_BATCH)
        except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
            protocol.error_received(exc)
        except Exception:  # raised on the C ingress's way (a forwarder)
            failed("RTP")
        finally:
            if batch is not None:
                batch.flush()

    return drain_ready
