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
  RTCP task start; Parley learns the negotiated parameters instead. Idle receivers
  (these, and send-only transceivers') drop aiortc's REMB estimator and NACK generator
  (``release_receiver_state``).
* Observing receivers (bots that decode): ``RTCRtpReceiver._handle_rtp_packet`` is
  wrapped so the bot sees each packet before aiortc's jitter buffer.
* Frames released on their marker (bots that decode, ``join``): the video receiver's
  jitter buffer is replaced by a subclass that hands a complete frame to the decoder
  at its marker packet instead of at the next frame's first packet.
* Receive tap (bots that decode and send transport-cc feedback): the DTLS transport's
  ``_handle_rtp_data`` is wrapped so the raw decrypted packet is seen first, then
  handed to aiortc unchanged; RTCP is sent with ``_send_rtp`` (``receive_tap``).
* Senders: ``RTCRtpSender.send`` is replaced so the track-less sender never starts
  its 50 Hz polling RTP loop nor its empty sender reports; it keeps its SDP role
  (SSRC, RTX SSRC, msid) and Parley learns the negotiated parameters.
* DTLS (``dtls``): offers that say ``a=setup:actpass`` are answered ``passive`` (Parley
  is the DTLS server, so peers with RSA certificates connect), and a failed handshake
  is logged with OpenSSL's reason and its alert sent to the peer; as a DTLS client
  Parley also offers ECDHE-RSA suites (servers with RSA certificates).
* Egress: packets are protected with the transport's SRTP session and written with
  ``sendto`` on the nominated pair's socket, synchronously.
* Import (``deferred_av``): when this package is what first imports aiortc (``parley
  serve`` imports it first), aiortc is imported with stand-ins for PyAV, which loads
  only when a frame is first encoded or decoded: a forwarding server never loads it
  (about 21 MB of resident memory).

The package's modules: ``ice`` (peer connections, gathering, consent), ``rtp_params``
(negotiated parameters, idle receivers and senders), ``media_port`` (ingress fast path
and egress), ``receive_tap`` (raw RTP beside aiortc's own receive path), ``arrival_stamps`` (the kernel's receive time of each RTP packet, SIOCGSTAMP), ``remote_sdp`` (what routing reads of a remote description), ``dtls`` (DTLS role, cipher suites, handshake failures), ``deferred_av`` (aiortc without PyAV). Nothing
outside this package touches aiortc's, aioice's or pylibsrtp's private API.
"""

from __future__ import annotations

import asyncio

from . import deferred_av  # noqa: F401 (first: aiortc imported without PyAV)

# isort: split

import pylibsrtp
from aioice import ice as aioice_ice
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from .bench_hooks import (
    drain_datagrams_per_wakeup,
    restrict_srtp_profiles,
    selected_srtp_profile,
)
from .dtls import (
    ACTPASS,
    DtlsFailure,
    answer_as_dtls_server,
    configure_ssl,
    describe_ssl_error,
    watch_handshake,
)
from .ice import (
    CONSENT_RETRANSMISSIONS,
    CONSENT_STALL,
    create_peer_connection,
    enlarge_receive_buffers,
    ice_connection,
    ice_sockets,
    rtc_configuration,
)
from .join import MarkerJitterBuffer, release_frames_on_marker
from .media_port import (
    HANDLER_ERROR_LOG_INTERVAL,
    RECV_BUFFER_BYTES,
    MediaPort,
    RtcpHandler,
    RtpHandler,
    make_egress,
    srtp_transform,
)
from .readers import READ_BATCH, RECV_SIZE, make_ingress, make_reader
from .receive_tap import ReceiveTap
from .remote_sdp import RemoteMedia, describe_remote_media
from .rtp_params import (
    NegotiatedRtp,
    add_header_extensions,
    hook_receiver,
    hook_sender,
    negotiated_codecs,
    observe_received_rtp,
    release_receiver_state,
    restrict_codecs,
    sender_ssrcs,
    set_opus_bitrate,
    set_sender_msid,
)

__all__ = [
    "ACTPASS",
    "DtlsFailure",
    "answer_as_dtls_server",
    "describe_ssl_error",
    "configure_ssl",
    "watch_handshake",
    "CONSENT_RETRANSMISSIONS",
    "CONSENT_STALL",
    "HANDLER_ERROR_LOG_INTERVAL",
    "HOOKED_ATTRIBUTES",
    "READ_BATCH",
    "RECV_BUFFER_BYTES",
    "RECV_SIZE",
    "SRTP_SIGNATURE",
    "AdapterError",
    "MarkerJitterBuffer",
    "MediaPort",
    "NegotiatedRtp",
    "ReceiveTap",
    "RemoteMedia",
    "RtcpHandler",
    "RtpHandler",
    "add_header_extensions",
    "check_hooks",
    "create_peer_connection",
    "describe_remote_media",
    "drain_datagrams_per_wakeup",
    "ice_sockets",
    "hook_receiver",
    "hook_sender",
    "enlarge_receive_buffers",
    "ice_connection",
    "make_egress",
    "make_reader",
    "make_ingress",
    "negotiated_codecs",
    "observe_received_rtp",
    "release_receiver_state",
    "release_frames_on_marker",
    "restrict_codecs",
    "restrict_srtp_profiles",
    "rtc_configuration",
    "selected_srtp_profile",
    "sender_ssrcs",
    "set_opus_bitrate",
    "set_sender_msid",
    "srtp_transform",
]

#: (class, attribute) pairs this module relies on. Checked by ``check_hooks``.
HOOKED_ATTRIBUTES: tuple[tuple[type, str], ...] = (
    (RTCPeerConnection, "_RTCPeerConnection__createDtlsTransport"),
    (RTCPeerConnection, "_RTCPeerConnection__connect"),
    (RTCDtlsTransport, "_handle_rtp_data"),
    (RTCDtlsTransport, "_handle_rtcp_data"),
    (RTCDtlsTransport, "_send_rtp"),  # ReceiveTap.send_rtcp
    (RTCDtlsTransport, "_rx_srtp"),
    (RTCDtlsTransport, "_tx_srtp"),
    (RTCDtlsTransport, "_role"),  # dtls.answer_as_dtls_server
    (RTCDtlsTransport, "_set_role"),
    (RTCDtlsTransport, "_do_handshake"),  # dtls.watch_handshake
    (RTCDtlsTransport, "_write_ssl"),
    (RTCDtlsTransport, "_RTCDtlsTransport__local_certificate"),  # dtls.configure_ssl
    (RTCCertificate, "_create_ssl_context"),
    (RTCRtpReceiver, "receive"),
    (RTCRtpReceiver, "_handle_rtp_packet"),
    (RTCRtpReceiver, "_RTCRtpReceiver__remote_bitrate_estimator"),  # release_receiver_state
    (RTCRtpReceiver, "_RTCRtpReceiver__nack_generator"),
    (RTCRtpReceiver, "_RTCRtpReceiver__jitter_buffer"),  # join.release_frames_on_marker
    (RTCRtpSender, "send"),
    (RTCRtpSender, "_ssrc"),
    (RTCRtpSender, "_rtx_ssrc"),
    (RTCRtpSender, "_stream_id"),
    (RTCRtpSender, "_track_id"),
    (RTCRtpSender, "_RTCRtpSender__encoder"),
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
    # benchmark clients only (bench/forwarding.py, through bench_hooks.py)
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
