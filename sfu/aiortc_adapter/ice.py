"""ICE for Parley's peer connections: host candidates only on the configured addresses,
only the configured ICE servers, RFC 7675 consent with Parley's interval and timeout,
and aiortc's connect task awaited (part of the aiortc adapter: private API)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import Any

from aioice import ice as aioice_ice
from aioice import stun as aioice_stun
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport

from ..config import IceConfig
from ..socket_buffers import set_buffers
from .dtls import DtlsFailure, configure_ssl, watch_handshake
from .join import connect_without_idle_pacing

logger = logging.getLogger("sfu.aiortc_adapter")


def rtc_configuration(ice: IceConfig) -> RTCConfiguration:
    """An RTCConfiguration with exactly the configured ICE servers (never aiortc's default)."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in ice.servers
        ],
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        iceTransportPolicy=(
            RTCIceTransportPolicy.RELAY if ice.relay_only else RTCIceTransportPolicy.ALL
        ),
    )


def create_peer_connection(
    ice: IceConfig, on_dtls_failure: DtlsFailure | None = None, *, relay: bool = True
) -> RTCPeerConnection:
    """A peer connection that gathers only on ``ice.addresses`` and uses only ``ice.servers``.

    ``relay=False`` (the SFU's own connections): no TURN allocation. The TURN servers
    of ``ice.servers`` are for clients (``joined.ice_servers``); the server's relayed
    candidate would only ever reach a client through a second relay, and allocating one
    per connection would hold every join up for a round trip to the TURN server and
    load it. STUN servers are still asked (server-reflexive candidates).
    A failed DTLS handshake is logged with OpenSSL's reason and passed to
    ``on_dtls_failure`` (``dtls.watch_handshake``)."""
    pc = RTCPeerConnection(rtc_configuration(ice))
    create_dtls = pc._RTCPeerConnection__createDtlsTransport  # type: ignore[attr-defined]

    def create_dtls_transport() -> RTCDtlsTransport:
        dtls = create_dtls()
        connection = dtls.transport.iceGatherer._connection
        if not relay:
            connection.turn_server = None
        _restrict_gathering(connection, ice)
        _configure_consent(connection, ice.consent_interval, ice.consent_failures)
        connect_without_idle_pacing(connection)
        watch_handshake(dtls, on_dtls_failure)
        configure_ssl(dtls)
        return dtls

    pc._RTCPeerConnection__createDtlsTransport = create_dtls_transport  # type: ignore[attr-defined]
    _guard_connect(pc)
    return pc


def _restrict_gathering(connection: aioice_ice.Connection, ice: IceConfig) -> None:
    """Host candidates on ``ice.addresses`` only (none with the relay policy: then the
    TURN server's relay candidates alone), announced as ``ice.announced`` says."""
    relay_only = connection._transport_policy == aioice_ice.TransportPolicy.RELAY
    addresses = [] if relay_only else list(ice.addresses)

    async def gather_candidates() -> None:
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        for component in sorted(connection._components):
            candidates = await connection.get_component_candidates(
                component=component, addresses=addresses
            )
            for candidate in candidates:
                public = ice.announced_address(candidate.host)
                if candidate.type == "host" and public is not None:
                    # the socket stays bound where it is; peers are told the NAT's address
                    candidate.host = public
            connection._local_candidates += candidates
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


def ice_sockets(dtls: RTCDtlsTransport) -> list[socket.socket]:
    """The UDP sockets of the transport's ICE connection (one per local candidate)."""
    sockets = []
    for protocol in ice_connection(dtls)._protocols:
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            sockets.append(transport._sock)
    return sockets


def enlarge_receive_buffers(pc: RTCPeerConnection, size: int) -> list[int]:
    """Give every socket ``pc`` gathered (call after ``setLocalDescription``) a receive
    buffer of ``size`` bytes where the kernel allows it; returns each socket's buffer
    as the kernel then reports it (Linux doubles what it is asked for, for its own
    bookkeeping). A process that reads its sockets on the thread that also decodes
    (``parley bot``) otherwise loses packets whenever it falls 100 packets behind."""
    sizes = []
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is None:
            continue
        for sock in ice_sockets(dtls):
            if sock.fileno() in seen:
                continue
            seen.add(sock.fileno())
            sizes.append(set_buffers(sock, size, send=False))
    return sizes
