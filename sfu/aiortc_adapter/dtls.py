"""DTLS roles, cipher suites and handshake failures (part of the aiortc adapter:
private API).

**Role.** aiortc answers an offer's ``a=setup:actpass`` with ``a=setup:active``: it
becomes the DTLS *client*, and its client offers only ECDHE-ECDSA cipher suites, so a
peer whose certificate is RSA (GStreamer's webrtcbin, for one) cannot serve it ("no
shared cipher"). Parley answers ``actpass`` with ``a=setup:passive`` instead (RFC 8842
lets the answerer pick): the peer is the DTLS client and any client that offers an
ECDHE-ECDSA suite (every WebRTC stack does) completes the handshake whatever its own
certificate. An offer that chose itself (``active`` / ``passive``) is answered as
aiortc does. Once set, the role is kept for the connection's later offers.

**Cipher suites.** Where Parley must be the DTLS client (a peer that offers
``a=setup:passive``, or answers Parley's offers ``passive``), ``configure_ssl`` adds the
ECDHE-RSA suites to aiortc's ECDHE-ECDSA ones, so a server with an RSA certificate can
pick one. As a server, Parley's own certificate is ECDSA: the RSA suites cannot be
chosen and change nothing.

**Failures.** aiortc logs a failed handshake only at debug level and never sends the
alert OpenSSL wrote for the peer. ``watch_handshake`` reports OpenSSL's reason (a local
"no shared cipher") and the alerts sent and received ("received fatal alert
handshake_failure", recorded by ``configure_ssl``'s info callback) as the handshake
fails, and flushes the alert, so the peer learns at once why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCDtlsTransport
from OpenSSL import SSL

logger = logging.getLogger("sfu.aiortc_adapter")

#: ``RemoteMedia.setup`` of an offer that lets the answerer choose (aiortc's "auto").
ACTPASS = "actpass"

DtlsFailure = Callable[[str], None]

#: aiortc 1.16's suites, then the same with RSA authentication
CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)

#: TLS alert descriptions (RFC 8446 §6, RFC 5246 §7.2)
ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
    80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
    116: "certificate_required", 120: "no_application_protocol",
}  # fmt: skip
_CB_ALERT, _CB_READ = 0x4000, 0x04  # OpenSSL's SSL_CB_ALERT, SSL_CB_READ


def answer_as_dtls_server(pc: RTCPeerConnection, actpass_mids: Iterable[str]) -> None:
    """Before ``createAnswer``: make Parley the DTLS server (``a=setup:passive``) on every
    transport of ``pc`` whose remote offer said ``a=setup:actpass`` for one of
    ``actpass_mids``. Transports whose role is already decided are left alone."""
    wanted = set(actpass_mids)
    for transceiver in pc.getTransceivers():
        if transceiver.mid not in wanted:
            continue
        dtls = transceiver.receiver.transport
        if dtls is not None and dtls._role == "auto" and dtls.state == "new":
            dtls._set_role("server")
    sctp = pc.sctp  # the data channel's m-line, when it has its own transport
    if sctp is not None and sctp.mid in wanted:
        dtls = sctp.transport
        if dtls._role == "auto" and dtls.state == "new":
            dtls._set_role("server")


def describe_alert(where: int, ret: int) -> str:
    """An OpenSSL info callback's alert (``where`` has SSL_CB_ALERT) in words."""
    direction = "received" if where & _CB_READ else "sent"
    level = "fatal" if ret >> 8 == 2 else "warning"
    return f"{direction} {level} alert {ALERTS.get(ret & 0xFF, str(ret & 0xFF))}"


def record_alert(conn: SSL.Connection, where: int, ret: int) -> None:
    """OpenSSL info callback: keep each alert in ``conn._parley_alerts``."""
    if where & _CB_ALERT:
        alerts = getattr(conn, "_parley_alerts", None)
        if alerts is None:
            alerts = []
            conn._parley_alerts = alerts  # type: ignore[attr-defined]
        alerts.append(describe_alert(where, ret))


def configure_ssl(dtls: RTCDtlsTransport) -> None:
    """Make the SSL contexts of ``dtls``'s certificate offer ``CIPHERS`` (ECDSA and RSA)
    and record the alerts sent and received (for ``watch_handshake``). The certificate
    is shared by a peer connection's transports: wrapped once."""
    certificate = dtls._RTCDtlsTransport__local_certificate  # type: ignore[attr-defined]
    if getattr(certificate, "_parley_configured", False):
        return
    create = certificate._create_ssl_context

    def create_ssl_context(srtp_profiles: Any) -> SSL.Context:
        ctx = create(srtp_profiles)
        ctx.set_cipher_list(CIPHERS)
        ctx.set_info_callback(record_alert)
        return ctx

    certificate._create_ssl_context = create_ssl_context
    certificate._parley_configured = True


def describe_ssl_error(exc: BaseException, alerts: Iterable[str] = ()) -> str:
    """OpenSSL's reasons of an ``SSL.Error`` (``"no shared cipher"``) and the alerts of
    the handshake (``"received fatal alert handshake_failure"``)."""
    reasons: list[str] = []
    args = exc.args[0] if exc.args else None
    if isinstance(args, list):
        for item in args:
            if isinstance(item, tuple) and item and isinstance(item[-1], str) and item[-1]:
                reasons.append(item[-1])
    reasons.extend(alerts)
    if reasons:
        return "; ".join(reasons)
    return f"OpenSSL gave no reason ({exc!r})"


def watch_handshake(dtls: RTCDtlsTransport, on_failure: DtlsFailure | None = None) -> None:
    """Report a failed DTLS handshake of ``dtls`` (``on_failure(reason)``, or a warning
    without it) as it fails, before aiortc marks the transport failed (so the peer
    connection's "failed" already knows why), and send the peer the alert OpenSSL wrote."""
    handshake = dtls._do_handshake

    def report(reason: str) -> None:
        role = "server" if dtls._role == "server" else "client"
        if on_failure is None:
            logger.warning("DTLS handshake failed (Parley as DTLS %s): %s", role, reason)
        else:
            on_failure(f"{reason} (Parley as DTLS {role})")

    async def do_handshake() -> None:
        failed: list[BaseException] = []
        ssl = dtls._ssl
        if ssl is not None:
            real = ssl.do_handshake

            def watched() -> None:
                try:
                    real()
                except SSL.WantReadError:
                    raise
                except SSL.Error as exc:
                    failed.append(exc)
                    report(describe_ssl_error(exc, getattr(ssl, "_parley_alerts", ())))
                    raise

            ssl.do_handshake = watched  # type: ignore[method-assign]
        await handshake()
        if dtls.state != "failed":
            return
        if failed:
            try:
                await dtls._write_ssl()  # the fatal alert OpenSSL queued for the peer
            except (ConnectionError, OSError):
                pass
        else:
            report("the connection closed during the handshake")

    dtls._do_handshake = do_handshake  # type: ignore[method-assign]
