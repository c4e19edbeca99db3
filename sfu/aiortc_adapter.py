"""The one module that touches aiortc's and aioice's private API.

Parley uses aiortc as its control plane (SDP, ICE, DTLS, SRTP keys) and forwards
media itself. Everything below reaches into aiortc 1.16 / aioice 0.13 internals;
``HOOKED_ATTRIBUTES`` lists each attribute relied upon and ``check_hooks()`` fails
loudly when one has disappeared (``tests/unit/test_aiortc_adapter.py`` runs it).

Hooks, all installed per instance (nothing is patched globally):

* ICE gathering: host candidates only on the configured addresses (aioice skips
  loopback and otherwise uses every interface address).
* Ingress: ``RTCDtlsTransport._handle_rtp_data`` / ``_handle_rtcp_data`` are
  replaced so decrypted packets go to Parley, not to aiortc's router, jitter buffer
  and decoder. Once DTLS is up, a synchronous fast path is installed in each of the
  connection's ``StunProtocol.datagram_received``: SRTP is unprotected and handed
  to Parley in the same call, skipping aioice's queue and the DTLS receive task.
* Receivers: ``RTCRtpReceiver.receive`` is replaced so no decoder thread and no
  RTCP task start; Parley learns the negotiated parameters instead.
* Observing receivers (bots that decode): ``RTCRtpReceiver._handle_rtp_packet`` is
  wrapped so the bot sees each packet before aiortc's jitter buffer.
* Senders: ``RTCRtpSender.send`` is replaced so the track-less sender never starts
  its 50 Hz polling RTP loop nor its empty sender reports; it keeps its SDP role
  (SSRC, RTX SSRC, msid) and Parley learns the negotiated parameters.
* Egress: packets are protected with the transport's SRTP session and written with
  ``sendto`` on the nominated pair's socket, synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pylibsrtp
from aioice import ice as aioice_ice
from aioice import stun as aioice_stun
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import RtpPacket
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from . import native
from .config import IceConfig

logger = logging.getLogger(__name__)

#: (class, attribute) pairs this module relies on. Checked by ``check_hooks``.
HOOKED_ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (RTCPeerConnection, "_RTCPeerConnection__createDtlsTransport"),
    (RTCPeerConnection, "_RTCPeerConnection__connect"),
    (RTCDtlsTransport, "_handle_rtp_data"),
    (RTCDtlsTransport, "_handle_rtcp_data"),
    (RTCDtlsTransport, "_send_rtp"),
    (RTCDtlsTransport, "_rx_srtp"),
    (RTCDtlsTransport, "_tx_srtp"),
    (RTCRtpReceiver, "receive"),
    (RTCRtpReceiver, "_handle_rtp_packet"),
    (RTCRtpSender, "send"),
    (RTCRtpSender, "_ssrc"),
    (RTCRtpSender, "_rtx_ssrc"),
    (RTCRtpSender, "_stream_id"),
    (RTCRtpSender, "_track_id"),
    (RTCRtpTransceiver, "_codecs"),
    (RTCRtpTransceiver, "_headerExtensions"),
    (aioice_ice.Connection, "gather_candidates"),
    (aioice_ice.Connection, "get_component_candidates"),
    (aioice_ice.Connection, "_local_candidates"),
    (aioice_ice.Connection, "_local_candidates_start"),
    (aioice_ice.Connection, "_local_candidates_end"),
    (aioice_ice.Connection, "_components"),
    (aioice_ice.Connection, "_nominated"),
    (aioice_ice.Connection, "_protocols"),
    (aioice_ice.Connection, "query_consent"),
    (aioice_ice.Connection, "_query_consent_task"),
    (aioice_ice.Connection, "build_request"),
    (aioice_ice.Connection, "remote_password"),
    (aioice_ice.StunProtocol, "datagram_received"),
    (pylibsrtp.Session, "_srtp"),
    # benchmark clients only (bench/forwarding.py), below
    (RTCDtlsTransport, "_srtp_profiles"),
    (RTCDtlsTransport, "_ssl"),
    (asyncio.selector_events._SelectorTransport, "_sock"),  # type: ignore[attr-defined]
    (asyncio.selector_events.BaseSelectorEventLoop, "_add_reader"),
)


#: libsrtp 2's srtp_protect/srtp_unprotect, as cffi prints it; sfu/_native.c relies on it
SRTP_SIGNATURE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"


class AdapterError(RuntimeError):
    """aiortc/aioice no longer look the way this adapter expects."""


def check_hooks() -> None:
    """Raise :class:`AdapterError` naming every hooked attribute that is missing.

    Instance attributes are checked on real instances: an unconnected peer
    connection with one transceiver of each kind.
    """
    missing: list[str] = []

    async def probe() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            transceiver = pc.addTransceiver("video", direction="sendonly")
            dtls = transceiver.sender.transport
            connection = dtls.transport.iceGatherer._connection
            instances: dict[type, object] = {
                RTCPeerConnection: pc,
                RTCDtlsTransport: dtls,
                RTCRtpReceiver: transceiver.receiver,
                RTCRtpSender: transceiver.sender,
                RTCRtpTransceiver: transceiver,
                aioice_ice.Connection: connection,
                aioice_ice.StunProtocol: aioice_ice.StunProtocol(connection),
                pylibsrtp.Session: pylibsrtp.Session(),
            }
            for cls, name in HOOKED_ATTRIBUTES:
                obj = instances.get(cls, cls)
                if not hasattr(obj, name) and not hasattr(cls, name):
                    missing.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
        finally:
            await pc.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(probe())
    else:  # pragma: no cover - called from sync code only
        raise RuntimeError("check_hooks() must be called outside an event loop")
    for name in ("srtp_protect", "srtp_unprotect"):
        if not hasattr(srtp_lib, name):
            missing.append(f"pylibsrtp._binding.lib.{name}")
        elif SRTP_SIGNATURE not in str(srtp_ffi.typeof(getattr(srtp_lib, name))):
            # sfu/_native.c calls srtp_protect through this exact (libsrtp 2) signature
            missing.append(f"pylibsrtp._binding.lib.{name} with signature {SRTP_SIGNATURE}")
    if missing:
        raise AdapterError(
            "aiortc/aioice attributes Parley hooks are missing: " + ", ".join(missing)
        )


# --------------------------------------------------------------------------- ICE


def rtc_configuration(ice: IceConfig) -> RTCConfiguration:
    """An RTCConfiguration with exactly the configured ICE servers (never aiortc's default)."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in ice.servers
        ],
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


def create_peer_connection(ice: IceConfig) -> RTCPeerConnection:
    """A peer connection that gathers only on ``ice.addresses`` and uses only ``ice.servers``."""
    pc = RTCPeerConnection(rtc_configuration(ice))
    addresses = list(ice.addresses)
    create_dtls = pc._RTCPeerConnection__createDtlsTransport  # type: ignore[attr-defined]

    def create_dtls_transport() -> RTCDtlsTransport:
        dtls = create_dtls()
        connection = dtls.transport.iceGatherer._connection
        _restrict_gathering(connection, addresses)
        _configure_consent(connection, ice.consent_interval, ice.consent_failures)
        return dtls

    pc._RTCPeerConnection__createDtlsTransport = create_dtls_transport  # type: ignore[attr-defined]
    _guard_connect(pc)
    return pc


def _restrict_gathering(connection: aioice_ice.Connection, addresses: list[str]) -> None:
    async def gather_candidates() -> None:
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        for component in sorted(connection._components):
            connection._local_candidates += await connection.get_component_candidates(
                component=component, addresses=addresses
            )
        connection._local_candidates_end = True

    connection.gather_candidates = gather_candidates  # type: ignore[method-assign]


#: Retransmissions of one consent check (at 0.5 s and 1.5 s): a check stays open for
#: 3.5 s, so a peer that stalls for a few seconds and then answers the requests queued
#: meanwhile still proves it is alive.
CONSENT_RETRANSMISSIONS = 2
#: A consent loop that wakes up this much later than it asked (s) was itself stalled
#: (a busy server): the silence it measured says nothing about the peer.
CONSENT_STALL = 1.0


def _configure_consent(
    connection: aioice_ice.Connection, interval: float, failures_allowed: int
) -> None:
    """RFC 7675 consent freshness with Parley's interval and timeout.

    aioice checks every 5 s and gives up after 6 failures (30 s of silence). Here a
    check goes out every ``interval`` seconds (0.8-1.2x, randomised) without waiting for
    the previous one, and consent expires when none has been answered for ``interval x
    failures_allowed`` seconds; the connection is then closed, which closes its peer
    connection and so its participant. Every check task is awaited before this returns.
    """
    timeout = interval * failures_allowed

    async def check(pair: Any, answered: list[float]) -> None:
        request = connection.build_request(pair, nominate=False)
        try:
            await pair.protocol.request(
                request,
                pair.remote_addr,
                integrity_key=(connection.remote_password or "").encode("utf8"),
                retransmissions=CONSENT_RETRANSMISSIONS,
            )
        except (aioice_stun.TransactionError, ConnectionError, OSError):
            return  # unanswered (or the socket is gone): no consent from this check
        answered[0] = asyncio.get_running_loop().time()

    async def query_consent() -> None:
        loop = asyncio.get_running_loop()
        answered = [loop.time()]
        checks: set[asyncio.Task[None]] = set()
        try:
            while True:
                delay = interval * (0.8 + 0.4 * random.random())
                woke_due = loop.time() + delay
                await asyncio.sleep(delay)
                now = loop.time()
                if now - woke_due > CONSENT_STALL:
                    answered[0] = now  # our own stall: give the peer a fresh chance
                if now - answered[0] >= timeout:
                    logger.info("ICE consent expired: no check answered for %.1f s", timeout)
                    connection._query_consent_task = None
                    await connection.close()
                    return
                for pair in list(connection._nominated.values()):
                    task = asyncio.ensure_future(check(pair, answered))
                    checks.add(task)
                    task.add_done_callback(checks.discard)
        finally:
            for task in list(checks):
                task.cancel()
            if checks:
                await asyncio.gather(*checks, return_exceptions=True)

    connection.query_consent = query_consent  # type: ignore[method-assign]


def _guard_connect(pc: RTCPeerConnection) -> None:
    """Retrieve the exception of every ICE/DTLS connect task aiortc spawns.

    ``setLocalDescription`` and ``setRemoteDescription`` start ``__connect`` with a bare
    ``ensure_future`` nobody awaits. When the connection is closed while that task is
    between two steps it raises (``InvalidStateError: RTCIceTransport is closed``), and
    an offer aiortc cannot use makes it raise too; unretrieved, asyncio logs "Task
    exception was never retrieved". Here it is awaited: after a close the exception is
    expected (debug), otherwise the connection can never carry media and is closed.
    """
    connect = pc._RTCPeerConnection__connect  # type: ignore[attr-defined]

    async def guarded_connect() -> None:
        try:
            await connect()
        except Exception as exc:
            if pc.signalingState == "closed":
                logger.debug("peer connection closed while connecting: %r", exc)
                return
            logger.warning("peer connection setup failed, closing it: %r", exc)
            try:
                await pc.close()
            except Exception:
                logger.exception("closing a failed peer connection failed")

    pc._RTCPeerConnection__connect = guarded_connect  # type: ignore[attr-defined]


def ice_connection(dtls: RTCDtlsTransport) -> aioice_ice.Connection:
    return dtls.transport._connection


# ------------------------------------------------------------- negotiated params


@dataclass(slots=True)
class NegotiatedRtp:
    """What one m-line negotiated, as Parley needs it for forwarding."""

    mid: str
    kind: str
    codecs: list[RTCRtpCodecParameters]
    #: extension URI -> id
    extensions: dict[str, int]
    #: SSRCs announced by the remote (receive side) with their RTX SSRC, if any.
    ssrcs: list[tuple[int, int | None]]
    cname: str | None = None

    @property
    def primary_codec(self) -> RTCRtpCodecParameters:
        return self.codecs[0]

    def rtx_payload_type(self, apt: int) -> int | None:
        for codec in self.codecs:
            if codec.mimeType.lower().endswith("/rtx") and codec.parameters.get("apt") == apt:
                return codec.payloadType
        return None


def _negotiated(
    kind: str, parameters: RTCRtpParameters, ssrcs: list[tuple[int, int | None]]
) -> NegotiatedRtp:
    return NegotiatedRtp(
        mid=parameters.muxId,
        kind=kind,
        codecs=list(parameters.codecs),
        extensions={ext.uri: ext.id for ext in parameters.headerExtensions},
        ssrcs=ssrcs,
        cname=getattr(getattr(parameters, "rtcp", None), "cname", None),
    )


def hook_receiver(receiver: RTCRtpReceiver, on_parameters: Callable[[NegotiatedRtp], None]) -> None:
    """Keep ``receiver`` from starting its decoder thread and RTCP task.

    ``on_parameters`` is called with what was negotiated each time aiortc would have
    started (or restarted) the receiver.
    """
    kind = receiver.track.kind if receiver.track is not None else "audio"

    async def receive(parameters: Any) -> None:
        ssrcs = [
            (e.ssrc, e.rtx.ssrc if e.rtx is not None else None)
            for e in parameters.encodings
            if e.ssrc is not None
        ]
        on_parameters(_negotiated(kind, parameters, ssrcs))

    receiver.receive = receive  # type: ignore[method-assign]


def observe_received_rtp(receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket], None]) -> None:
    """Call ``on_packet`` with every RTP packet ``receiver`` is handed, before aiortc's
    jitter buffer (a receiving peer that decodes: the bot). Duplicates and
    retransmissions (still RTX-wrapped) are seen as they arrive."""
    handle = receiver._handle_rtp_packet

    async def observed(packet: RtpPacket, arrival_time_ms: int) -> None:
        on_packet(packet)
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = observed  # type: ignore[method-assign]


def hook_sender(sender: RTCRtpSender, on_parameters: Callable[[NegotiatedRtp], None]) -> None:
    """Keep a track-less ``sender`` from starting its RTP and RTCP loops."""

    async def send(parameters: Any) -> None:
        on_parameters(_negotiated(sender.kind, parameters, [(sender._ssrc, sender._rtx_ssrc)]))

    sender.send = send  # type: ignore[method-assign]


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    return sender._ssrc, sender._rtx_ssrc


def set_sender_msid(sender: RTCRtpSender, stream_id: str, track_id: str) -> None:
    """Choose the ``a=msid`` a track-less sender announces."""
    sender._stream_id = stream_id
    sender._track_id = track_id


def restrict_codecs(transceiver: RTCRtpTransceiver, allowed: set[str]) -> bool:
    """Keep only codecs whose mime type is in ``allowed`` (and their RTX).

    Call after ``setRemoteDescription`` of an offer and before ``createAnswer``.
    Returns False when nothing acceptable is left.
    """
    kept_pts: set[int] = set()
    kept: list[RTCRtpCodecParameters] = []
    for codec in transceiver._codecs:
        if codec.mimeType.lower() in allowed:
            kept.append(codec)
            if codec.payloadType is not None:
                kept_pts.add(codec.payloadType)
    for codec in transceiver._codecs:
        if codec.mimeType.lower().endswith("/rtx") and codec.parameters.get("apt") in kept_pts:
            kept.append(codec)
    if not kept:
        return False
    transceiver._codecs = kept
    return True


def add_header_extensions(transceiver: RTCRtpTransceiver, extensions: dict[str, int]) -> None:
    """Negotiate header extensions aiortc does not know (``uri -> id`` from the offer).

    aiortc answers only the extensions in its global ``codecs.HEADER_EXTENSIONS``;
    simulcast needs rtp-stream-id and repaired-rtp-stream-id too. Call after
    ``setRemoteDescription`` of the offer and before ``createAnswer``; affects only
    this transceiver. Ids already used by another extension are skipped.
    """
    current = transceiver._headerExtensions
    used_ids = {ext.id for ext in current}
    used_uris = {ext.uri for ext in current}
    for uri, ext_id in extensions.items():
        if uri in used_uris or ext_id in used_ids:
            continue
        current.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))
        used_ids.add(ext_id)
        used_uris.add(uri)


# ----------------------------------------------------------- ingress / egress


#: Datagrams read per readiness event on the fast path, and the largest datagram.
READ_BATCH = 64
RECV_SIZE = 2048
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
) -> Any:
    """Protect + send to ``remote`` with ``tx``: ``sfu.native.Egress`` (libsrtp's
    ``srtp_protect`` and the session's context handed to C by address; the Egress keeps
    ``tx`` and ``sock`` alive) when the C module is built and there is a socket, else
    ``sfu.native.PyEgress`` over ``sock.sendto`` (or ``fallback_sendto``). Neither
    blocks: a packet a full socket buffer refuses is dropped and counted, as the
    network would drop it."""
    if native.NATIVE and sock is not None:
        context = int(srtp_ffi.cast("uintptr_t", tx._srtp[0]))
        protect_fn = int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, "srtp_protect")))
        return native.Egress(sock, tuple(remote), context, protect_fn, tx)
    sendto = sock.sendto if sock is not None else fallback_sendto
    if sendto is None:
        raise ValueError("make_egress needs a socket or a fallback sendto")
    protect = srtp_transform(tx, protect=True)

    def send(packet: bytes, _sendto: Callable[[bytes, tuple[Any, ...]], object] = sendto) -> None:
        _sendto(packet, remote)

    return native.PyEgress(protect, send, (pylibsrtp.Error, OSError))


class MediaPort:
    """Raw decrypted RTP/RTCP in and out of one DTLS transport.

    ``on_rtp(data, now)`` and ``on_rtcp(data, now)`` receive decrypted packets
    (``now`` in seconds of the event loop's clock). ``send(data)`` protects and sends
    one RTP or RTCP packet synchronously; it returns False when the transport is not
    ready or the packet could not be protected.
    """

    def __init__(self, dtls: RTCDtlsTransport, on_rtp: RtpHandler, on_rtcp: RtcpHandler) -> None:
        self._dtls = dtls
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._loop = asyncio.get_running_loop()
        self._fast_path = False
        self._closed = False
        self.rx_packets = 0
        #: packets that could not be unprotected, or whose handler raised
        self.rx_errors = 0
        self._error_logged_at: float | None = None
        self._unlogged_errors = 0
        self._tx_packets = 0
        self._tx_errors = 0
        #: protect + sendto on the nominated pair once the fast path is up: the C
        #: ``sfu.native.Egress`` (forwarders use it directly), else ``PyEgress``
        self.egress: Any = None
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

    def _rtp_in(self, data: bytes) -> None:
        self.rx_packets += 1
        try:
            self._on_rtp(data, self._loop.time())
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
        self.rx_errors += 1
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
                        else:
                            rtp_in(unprotect(data))
                    except pylibsrtp.Error:
                        self.rx_errors += 1
                    return
                _original(data, addr)

            protocol.datagram_received = datagram_received  # type: ignore[method-assign]
            own_sockets[protocol] = self._batch_reads(protocol, datagram_received)

        pair = connection._nominated.get(1)
        if pair is not None:
            # asyncio's DatagramTransport.sendto only when Parley has no handle on the socket
            self.egress = make_egress(
                dtls._tx_srtp,
                pair.remote_addr,
                own_sockets.get(pair.protocol),
                pair.protocol.transport.sendto,
            )
        self._fast_path = True
        return True

    def _batch_reads(
        self,
        protocol: aioice_ice.StunProtocol,
        handler: Callable[[bytes | str, tuple[Any, ...]], None],
    ) -> socket.socket | None:
        """Read ``protocol``'s socket in batches; returns Parley's handle on that socket."""
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

        # asyncio's one-datagram-per-iteration reader (a selector transport has pause_reading)
        cast(asyncio.ReadTransport, transport).pause_reading()
        self._loop.add_reader(sock.fileno(), read_ready)
        return sock

    @property
    def tx_packets(self) -> int:
        """Datagrams sent (RTP and RTCP, both paths)."""
        egress = self.egress
        return self._tx_packets + (egress.tx_packets if egress is not None else 0)

    @property
    def tx_errors(self) -> int:
        """Packets that could not be protected or sent."""
        egress = self.egress
        return self._tx_errors + (egress.tx_errors if egress is not None else 0)

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
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()  # only our duplicate: the transport closes the original
        self._sockets.clear()


# ------------------------------------------------------------------ SDP facts


@dataclass(slots=True)
class RemoteMedia:
    """One m-line of a remote description, as far as routing needs it."""

    index: int
    mid: str
    kind: str
    direction: str
    port: int
    #: media SSRCs with their RTX SSRC (from ``a=ssrc`` and ``a=ssrc-group:FID``)
    ssrcs: list[tuple[int, int | None]]
    #: the track id of ``a=msid`` (or None)
    msid_track: str | None
    #: extension URI -> id
    extensions: dict[str, int]
    #: offered codec mime types, lower case ("video/vp8", "video/rtx", ...)
    codecs: list[str] = field(default_factory=list)


#: Longest description whose offending line is looked for (a bisection of re-parses).
_LOCATE_MAX_LINES = 1000


def _parse_failure(exc: Exception, sdp_text: str) -> str:
    """Why aiortc's SDP parser failed, and on which line: many of its errors are bare
    asserts with no text. The line is the last of the shortest failing prefix (bisection)."""
    from aiortc import sdp as aiortc_sdp

    why = str(exc) or ("malformed" if isinstance(exc, AssertionError) else type(exc).__name__)
    lines = sdp_text.splitlines()
    if not lines or len(lines) > _LOCATE_MAX_LINES:
        return why

    def fails(count: int) -> bool:
        try:
            aiortc_sdp.SessionDescription.parse("\r\n".join(lines[:count]) + "\r\n")
        except Exception:
            return True
        return False

    ok, bad = 0, len(lines)  # a prefix of `ok` lines parses, the whole text does not
    while bad - ok > 1:
        middle = (ok + bad) // 2
        if fails(middle):
            bad = middle
        else:
            ok = middle
    line = lines[bad - 1].strip()
    shown = line if len(line) <= 100 else line[:100] + "..."
    return (
        f"line {bad} ({shown!r}) is malformed"
        if why == "malformed"
        else f"line {bad} ({shown!r}): {why}"
    )


def describe_remote_media(sdp_text: str) -> list[RemoteMedia]:
    """Parse a remote description with aiortc's SDP parser (raises ValueError on junk)."""
    from aiortc import sdp as aiortc_sdp

    try:
        description = aiortc_sdp.SessionDescription.parse(sdp_text)
    except Exception as exc:  # aiortc raises assorted errors on malformed SDP
        raise ValueError(f"unparseable SDP: {_parse_failure(exc, sdp_text)}") from exc
    out: list[RemoteMedia] = []
    for index, media in enumerate(description.media):
        rtx_of: dict[int, int] = {}
        for group in media.ssrc_group:
            if group.semantic == "FID" and len(group.items) == 2:
                rtx_of[int(group.items[0])] = int(group.items[1])
        rtx_ssrcs = set(rtx_of.values())
        ssrcs: list[tuple[int, int | None]] = []
        for info in media.ssrc:
            if info.ssrc in rtx_ssrcs or any(s == info.ssrc for s, _ in ssrcs):
                continue
            ssrcs.append((info.ssrc, rtx_of.get(info.ssrc)))
        msid_track = None
        if media.msid:
            parts = media.msid.split()
            if len(parts) == 2:
                msid_track = parts[1]
        out.append(
            RemoteMedia(
                index=index,
                mid=media.rtp.muxId or str(index),
                kind=media.kind,
                direction=media.direction or "sendrecv",
                port=media.port,
                ssrcs=ssrcs,
                msid_track=msid_track,
                extensions={ext.uri: ext.id for ext in media.rtp.headerExtensions},
                codecs=[c.mimeType.lower() for c in media.rtp.codecs],
            )
        )
    return out


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiated for ``transceiver`` (after setRemoteDescription)."""
    return list(transceiver._codecs)


# ------------------------------------------- benchmark clients (bench/forwarding.py)


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


def ice_sockets(dtls: RTCDtlsTransport) -> list[socket.socket]:
    """The UDP sockets of the transport's ICE connection (one per local candidate)."""
    sockets = []
    for protocol in ice_connection(dtls)._protocols:
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            sockets.append(transport._sock)
    return sockets


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
