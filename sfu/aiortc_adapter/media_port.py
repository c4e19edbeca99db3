"""Raw decrypted RTP/RTCP in and out of one DTLS transport: the synchronous fast path
(SRTP unprotected in the datagram callback, batched socket reads) and the egress
(SRTP protect and ``sendto``, in C when ``sfu/_native.c`` is built). Part of the aiortc
adapter: private API of aiortc, aioice and pylibsrtp."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, cast

import pylibsrtp
from aioice import ice as aioice_ice
from aiortc.rtcdtlstransport import RTCDtlsTransport
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from .. import native
from .ice import ice_connection
from .readers import (
    ingress_reader,
    make_ingress,
    make_reader,
    native_reader,
    native_recv,
    recvfrom_reader,
)

logger = logging.getLogger("sfu.aiortc_adapter")


#: Receive buffer asked for the media sockets (the kernel caps it at net.core.rmem_max).
RECV_BUFFER_BYTES = 4 * 1024 * 1024

#: At most one log line per this many seconds (s) about failing packet handlers.
HANDLER_ERROR_LOG_INTERVAL = 10.0

RtpHandler = Callable[[bytes, float], None]
RtcpHandler = Callable[[bytes, float], None]


def srtp_transform(session: pylibsrtp.Session, protect: bool) -> Callable[[bytes], bytes]:
    """``session.protect`` / ``session.unprotect`` for RTP without pylibsrtp's per-call
    allocations (it allocates an ``int *`` and checks types on every packet).

    The closure owns its buffer and keeps ``session`` alive. Raises ``pylibsrtp.Error``.
    """
    func = srtp_lib.srtp_protect if protect else srtp_lib.srtp_unprotect
    limit = 1500 - (144 if protect else 0)
    cdata = srtp_ffi.new("char[]", 1500)
    buffer = srtp_ffi.buffer(cdata)
    length = srtp_ffi.new("int *")
    context = session._srtp[0]

    def srtp_transform_packet(data: bytes, _session: pylibsrtp.Session = session) -> bytes:
        n = len(data)
        if n > limit:
            raise pylibsrtp.Error("packet is too long")
        buffer[0:n] = data
        length[0] = n
        status = func(context, cdata, length)
        if status:
            raise pylibsrtp.Error(f"libsrtp status {status}")
        return buffer[0 : length[0]]

    # distinct names, so that profiles tell the two directions apart
    srtp_transform_packet.__name__ = "srtp_protect" if protect else "srtp_unprotect"
    srtp_transform_packet.__qualname__ = srtp_transform_packet.__name__
    srtp_transform_packet.__code__ = srtp_transform_packet.__code__.replace(
        co_name=srtp_transform_packet.__name__, co_qualname=srtp_transform_packet.__name__
    )
    return srtp_transform_packet


def make_egress(
    tx: pylibsrtp.Session,
    remote: tuple[Any, ...],
    sock: socket.socket | None,
    fallback_sendto: Callable[[bytes, tuple[Any, ...]], object] | None = None,
    protect_name: str = "srtp_protect",
) -> Any:
    """Protect + send to ``remote`` with ``tx``: ``sfu.native.Egress`` (libsrtp's
    ``srtp_protect`` and the session's context handed to C by address; the Egress keeps
    ``tx`` and ``sock`` alive) when the C module is built and there is a socket, else
    ``sfu.native.PyEgress`` over ``sock.sendto`` (or ``fallback_sendto``). Neither
    blocks: a packet a full socket buffer refuses is dropped and counted, as the
    network would drop it. ``protect_name="srtp_protect_rtcp"``: one for RTCP."""
    if native.NATIVE and sock is not None:
        context = int(srtp_ffi.cast("uintptr_t", tx._srtp[0]))
        protect_fn = int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, protect_name)))
        return native.Egress(sock, tuple(remote), context, protect_fn, tx)
    sendto = sock.sendto if sock is not None else fallback_sendto
    if sendto is None:
        raise ValueError("make_egress needs a socket or a fallback sendto")
    protect = (
        srtp_transform(tx, protect=True) if protect_name == "srtp_protect" else tx.protect_rtcp
    )

    def send(packet: bytes, _sendto: Callable[[bytes, tuple[Any, ...]], object] = sendto) -> None:
        _sendto(packet, remote)

    return native.PyEgress(protect, send, (pylibsrtp.Error, OSError))


class MediaPort:
    """Raw decrypted RTP/RTCP in and out of one DTLS transport.

    ``on_rtp(data, now)`` and ``on_rtcp(data, now)`` receive decrypted packets
    (``now`` in seconds of the event loop's clock). With ``ingress=(by_ssrc, counters)``
    (a publish transport) and the C module built, RTP goes through ``make_ingress``
    once the fast path is up: packets of the steady state never reach ``on_rtp``. ``send(data)`` protects and sends
    one RTP or RTCP packet synchronously; it returns False when the transport is not
    ready or the packet could not be protected.

    ``native_io``: read the fast path's sockets with ``sfu._recv.Reader`` (one recvmmsg
    per readiness, SRTP RTP unprotected in C) and send RTCP through a C ``Egress`` with
    ``srtp_protect_rtcp`` (no pylibsrtp nor asyncio per packet) when the C modules are
    in use; the load generator's subscribers ask for it (``docs/loadgen.md``).

    ``send_batch`` (set before the fast path): the server's ``sfu._native.SendBatch`` (``sfu.native.new_send_batch``):
    the recvmmsg batch reader opens it around a readiness's datagrams (two or more) and
    the C egress queues in it: each subscriber's packets of the batch leave with one
    ``sendmmsg``.
    """

    def __init__(
        self,
        dtls: RTCDtlsTransport,
        on_rtp: RtpHandler,
        on_rtcp: RtcpHandler,
        native_io: bool = False,
        ingress: tuple[dict[int, Any], dict[str, int]] | None = None,
    ) -> None:
        self._dtls = dtls
        #: set before ``install_fast_path``
        self.send_batch: Any = None
        self._native_io = native_io and native.NATIVE and native_recv is not None
        self._readers: list[Any] = []
        self._ingress_tables = ingress
        #: the C ingress (``make_ingress``) once the fast path is up, else None
        self.ingress: Any = None
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._loop = asyncio.get_running_loop()
        self._fast_path = False
        self._closed = False
        self._rx_packets = 0
        self._rx_errors = 0
        self._error_logged_at: float | None = None
        self._unlogged_errors = 0
        self._tx_packets = 0
        self._tx_errors = 0
        #: protect + sendto on the nominated pair once the fast path is up: the C
        #: ``sfu.native.Egress`` (forwarders use it directly), else ``PyEgress``
        self.egress: Any = None
        #: with ``native_io``: the same for RTCP (``srtp_protect_rtcp``)
        self._rtcp_egress: Any = None
        self._sockets: list[socket.socket] = []

        async def handle_rtp(data: bytes, arrival_time_ms: int) -> None:
            self._rtp_in(data)

        async def handle_rtcp(data: bytes) -> None:
            self._rtcp_in(data)

        dtls._handle_rtp_data = handle_rtp  # type: ignore[method-assign]
        dtls._handle_rtcp_data = handle_rtcp  # type: ignore[method-assign]

    @property
    def fast_path(self) -> bool:
        return self._fast_path

    @property
    def rx_packets(self) -> int:
        """RTP packets received (both paths)."""
        ingress = self.ingress
        return self._rx_packets + (ingress.rx_packets if ingress is not None else 0)

    @property
    def rx_errors(self) -> int:
        """Packets that could not be unprotected, or whose handler raised (both paths)."""
        ingress = self.ingress
        return self._rx_errors + (ingress.rx_errors if ingress is not None else 0)

    def _rtp_in(self, data: bytes) -> None:
        self._rx_packets += 1
        self._rtp_plain(data, self._loop.time())

    def _rtp_plain(self, data: bytes, now: float) -> None:
        try:
            self._on_rtp(data, now)
        except Exception:  # a bad packet must never kill the transport
            self._handler_failed("RTP")

    def _rtcp_in(self, data: bytes) -> None:
        try:
            self._on_rtcp(data, self._loop.time())
        except Exception:
            self._handler_failed("RTCP")

    def _handler_failed(self, kind: str) -> None:
        """A handler raised: a bug, since malformed packets are dropped where they are
        parsed. The first failure is logged with its traceback, then at most one line
        per HANDLER_ERROR_LOG_INTERVAL, so that a peer repeating the packet cannot
        flood the log nor spend the server's CPU on tracebacks."""
        self._rx_errors += 1
        self._unlogged_errors += 1
        now = self._loop.time()
        last = self._error_logged_at
        if last is None:
            logger.exception(
                "%s handler failed (later failures: one line per %g s)",
                kind,
                HANDLER_ERROR_LOG_INTERVAL,
            )
        elif now - last >= HANDLER_ERROR_LOG_INTERVAL:
            logger.error(
                "%d more RTP/RTCP handler failures (%d in all)",
                self._unlogged_errors,
                self.rx_errors,
            )
        else:
            return
        self._error_logged_at = now
        self._unlogged_errors = 0

    def install_fast_path(self) -> bool:
        """Handle SRTP synchronously in the UDP protocol once DTLS is connected.

        Each of the ICE connection's sockets then gets a reader that drains up to
        ``READ_BATCH`` datagrams per readiness event (asyncio reads one per event
        loop iteration); SRTP/SRTCP is unprotected and handed to Parley in the same
        call, everything else (STUN, DTLS) goes to aioice as before.
        """
        if self._fast_path or self._closed:
            return self._fast_path
        dtls = self._dtls
        rx = dtls._rx_srtp
        if dtls.state != "connected" or rx is None:
            return False
        connection = ice_connection(dtls)
        unprotect = srtp_transform(rx, protect=False)
        unprotect_rtcp = rx.unprotect_rtcp
        rtp_in = self._rtp_in
        rtcp_in = self._rtcp_in
        tables = self._ingress_tables
        if tables is not None:
            self.ingress = make_ingress(rx, tables[0], tables[1], self._rtp_plain)
        receive = self.ingress.receive if self.ingress is not None else None
        loop_time = self._loop.time
        own_sockets: dict[aioice_ice.StunProtocol, socket.socket | None] = {}

        for protocol in list(connection._protocols):
            original = protocol.datagram_received

            def datagram_received(
                data: bytes | str,
                addr: tuple[Any, ...],
                _original: Callable[[bytes | str, tuple[Any, ...]], None] = original,
            ) -> None:
                if isinstance(data, bytes) and len(data) >= 12 and 127 < data[0] < 192:
                    try:
                        if 191 < data[1] < 224:  # RTCP packet types 192..223
                            rtcp_in(unprotect_rtcp(data))
                        elif receive is None:
                            rtp_in(unprotect(data))
                        else:  # C: sfu/_ingress.c (it counts what it cannot unprotect)
                            receive(data, loop_time())
                    except pylibsrtp.Error:
                        self._rx_errors += 1
                    except Exception:  # raised on the C ingress's way (a forwarder)
                        self._handler_failed("RTP")
                    return
                _original(data, addr)

            protocol.datagram_received = datagram_received  # type: ignore[method-assign]
            srtp = rx if self._native_io else None
            own_sockets[protocol] = self._batch_reads(protocol, datagram_received, srtp)

        pair = connection._nominated.get(1)
        if pair is not None:
            # asyncio's DatagramTransport.sendto only when Parley has no handle on the socket
            self.egress = make_egress(
                dtls._tx_srtp,
                pair.remote_addr,
                own_sockets.get(pair.protocol),
                pair.protocol.transport.sendto,
            )
            sock = own_sockets.get(pair.protocol)
            if self.send_batch is not None and not isinstance(self.egress, native.PyEgress):
                self.egress.batch = self.send_batch
            if self._native_io and sock is not None:
                self._rtcp_egress = make_egress(
                    dtls._tx_srtp, pair.remote_addr, sock, protect_name="srtp_protect_rtcp"
                )
        self._fast_path = True
        return True

    def _batch_reads(
        self,
        protocol: aioice_ice.StunProtocol,
        handler: Callable[[bytes | str, tuple[Any, ...]], None],
        srtp: pylibsrtp.Session | None = None,
    ) -> socket.socket | None:
        """Read ``protocol``'s socket in batches; returns Parley's handle on that socket.

        With ``srtp`` (``native_io``), the C reader unprotects RTP with it and hands the
        plain packets straight to ``_rtp_in``; the rest goes to ``handler``."""
        transport = protocol.transport
        raw = transport.get_extra_info("socket")
        if raw is None or transport.is_closing():
            return None
        # Our own handle on the same socket: asyncio refuses add_reader on a transport's fd.
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        sock.setblocking(False)
        # Room for bursts and short stalls (GC, a slow callback); capped by net.core.rmem_max.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
        self._sockets.append(sock)
        if self.ingress is not None:  # the C ingress reads the batch (sfu/_ingress.c)
            cast(asyncio.ReadTransport, transport).pause_reading()
            ready = ingress_reader(
                self.ingress, protocol, handler, sock, self.send_batch, self._handler_failed
            )
            self._loop.add_reader(sock.fileno(), ready)
            return sock
        cast(asyncio.ReadTransport, transport).pause_reading()
        if native_recv is not None and (srtp is not None or native.recvmmsg_reads()):
            reader = make_reader(sock, srtp)
            self._readers.append(reader)
            read_ready = native_reader(
                reader, protocol, handler, self._rtp_in, self._count_errors, self.send_batch
            )
        else:
            read_ready = recvfrom_reader(protocol, sock, handler)
        # asyncio's one-datagram-per-iteration reader (a selector transport has pause_reading)
        self._loop.add_reader(sock.fileno(), read_ready)
        return sock

    def _count_errors(self, n: int) -> None:
        self._rx_errors += n

    @property
    def tx_packets(self) -> int:
        """Datagrams sent (RTP and RTCP, both paths)."""
        egress = self.egress
        rtcp = self._rtcp_egress
        return (
            self._tx_packets
            + (egress.tx_packets if egress is not None else 0)
            + (rtcp.tx_packets if rtcp is not None else 0)
        )

    @property
    def tx_errors(self) -> int:
        """Packets that could not be protected or sent."""
        egress = self.egress
        rtcp = self._rtcp_egress
        return (
            self._tx_errors
            + (egress.tx_errors if egress is not None else 0)
            + (rtcp.tx_errors if rtcp is not None else 0)
        )

    def send_rtp(self, data: bytes) -> bool:
        """Protect and send one RTP packet (the per-forwarded-packet path)."""
        egress = self.egress
        if egress is None or self._closed:
            return self.send(data)
        return bool(egress.send(data))

    def send_rtp_twice(self, data: bytes) -> bool:
        """Protect one RTP packet and send it twice (redundancy against random loss:
        the receiver drops the duplicate). Once only before the fast path is up."""
        egress = self.egress
        if egress is None or self._closed:
            return self.send(data)
        return bool(egress.send_twice(data))

    def send(self, data: bytes) -> bool:
        """Protect and send one RTP or RTCP packet."""
        dtls = self._dtls
        if self._closed or dtls.state != "connected" or len(data) < 8:
            return False
        rtcp_egress = self._rtcp_egress
        if rtcp_egress is not None and 191 < data[1] < 224:
            return bool(rtcp_egress.send(data))
        pair = ice_connection(dtls)._nominated.get(1)
        if pair is None:
            return False
        try:
            if 191 < data[1] < 224:
                packet = dtls._tx_srtp.protect_rtcp(data)
            else:
                packet = dtls._tx_srtp.protect(data)
        except pylibsrtp.Error:
            self._tx_errors += 1
            return False
        pair.protocol.transport.sendto(packet, pair.remote_addr)
        self._tx_packets += 1
        return True

    @property
    def remote_address(self) -> str | None:
        """The peer's address on the nominated ICE pair, or None before there is one."""
        pair = ice_connection(self._dtls)._nominated.get(1)
        return None if pair is None else str(pair.remote_addr[0])

    def write_buffer_size(self) -> int:
        pair = ice_connection(self._dtls)._nominated.get(1)
        if pair is None:
            return 0
        return cast(asyncio.WriteTransport, pair.protocol.transport).get_write_buffer_size()

    def close(self) -> None:
        self._closed = True
        if self.egress is not None:
            self.egress.close()  # before its socket closes: no send on a reused fd
        if self._rtcp_egress is not None:
            self._rtcp_egress.close()
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        if self.ingress is not None:
            self.ingress.close()
            # the ingress holds the publisher's SSRC table (its Sources) and this port's
            # fallback: dropped at once, so a leaving publisher's Sources are freed
            self.ingress = None
        self._ingress_tables = None
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()  # only our duplicate: the transport closes the original
        self._sockets.clear()
