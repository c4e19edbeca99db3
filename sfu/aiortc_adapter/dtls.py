"""DTLS roles and handshake failures (part of the aiortc adapter: private API).

**Role.** aiortc answers an offer's ``a=setup:actpass`` with ``a=setup:active``: it
becomes the DTLS *client*, and its client offers only ECDHE-ECDSA cipher suites, so a
peer whose certificate is RSA (GStreamer's webrtcbin, for one) cannot serve it ("no
shared cipher"). Parley answers ``actpass`` with ``a=setup:passive`` instead (RFC 8842
lets the answerer pick): the peer is the DTLS client and any client that offers an
ECDHE-ECDSA suite (every WebRTC stack does) completes the handshake whatever its own
certificate. An offer that chose itself (``active`` / ``passive``) is answered as
aiortc does. Once set, the role is kept for the connection's later offers.

**Failures.** aiortc logs a failed handshake only at debug level and never sends the
alert OpenSSL wrote for the peer. ``watch_handshake`` reports the OpenSSL reason (a
local "no shared cipher", or the alert the peer sent: "tlsv1 alert ...") and flushes
the alert, so the peer learns at once why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCDtlsTransport
from OpenSSL import SSL

logger = logging.getLogger("sfu.aiortc_adapter")

#: ``RemoteMedia.setup`` of an offer that lets the answerer choose (aiortc's "auto").
ACTPASS = "actpass"

DtlsFailure = Callable[[str], None]


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


def describe_ssl_error(exc: BaseException) -> str:
    """OpenSSL's reasons of an ``SSL.Error`` (``"no shared cipher"``), else its text."""
    reasons: list[str] = []
    args = exc.args[0] if exc.args else None
    if isinstance(args, list):
        for item in args:
            if isinstance(item, tuple) and item and isinstance(item[-1], str) and item[-1]:
                reasons.append(item[-1])
    return "; ".join(reasons) or str(exc) or type(exc).__name__


def watch_handshake(dtls: RTCDtlsTransport, on_failure: DtlsFailure | None = None) -> None:
    """Report a failed DTLS handshake of ``dtls`` (log warning, then ``on_failure(reason)``)
    and send the peer the alert OpenSSL wrote for it."""
    handshake = dtls._do_handshake

    async def do_handshake() -> None:
        errors: list[BaseException] = []
        ssl = dtls._ssl
        if ssl is not None:
            real = ssl.do_handshake

            def watched() -> None:
                try:
                    real()
                except SSL.WantReadError:
                    raise
                except SSL.Error as exc:
                    errors.append(exc)
                    raise

            ssl.do_handshake = watched  # type: ignore[method-assign]
        await handshake()
        if dtls.state != "failed":
            return
        role = "server" if dtls._role == "server" else "client"
        if errors:
            reason = describe_ssl_error(errors[-1])
            try:
                await dtls._write_ssl()  # the fatal alert OpenSSL queued for the peer
            except (ConnectionError, OSError):
                pass
        else:
            reason = "the connection closed during the handshake"
        if on_failure is None:
            logger.warning("DTLS handshake failed (Parley as DTLS %s): %s", role, reason)
        else:
            on_failure(f"{reason} (Parley as DTLS {role})")

    dtls._do_handshake = do_handshake  # type: ignore[method-assign]
