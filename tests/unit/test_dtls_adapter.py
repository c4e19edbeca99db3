"""sfu.aiortc_adapter.dtls with real OpenSSL over memory BIOs (no sockets): aiortc's own
DTLS client cannot reach a server whose certificate is RSA (GStreamer's webrtcbin) and
the failure is described with OpenSSL's reason and the alerts; with Parley's cipher list
it connects. ``configure_ssl`` is checked on a real aiortc transport."""

from __future__ import annotations

import datetime

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import SRTP_PROFILES, RTCCertificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from sfu.aiortc_adapter.dtls import (
    CIPHERS,
    configure_ssl,
    describe_alert,
    describe_ssl_error,
    record_alert,
)


def _rsa_server() -> SSL.Connection:
    """A DTLS server as webrtcbin's: RSA certificate, asks for the client's certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webrtcbin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *_args: True)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    ctx.set_info_callback(record_alert)
    conn = SSL.Connection(ctx, None)
    conn.set_accept_state()
    return conn


def _aiortc_client(ciphers: bytes | None) -> SSL.Connection:
    """aiortc's own DTLS client context (ECDSA certificate), with ``ciphers`` if given."""
    ctx = RTCCertificate.generateCertificate()._create_ssl_context(srtp_profiles=SRTP_PROFILES)
    if ciphers is not None:
        ctx.set_cipher_list(ciphers)
    ctx.set_info_callback(record_alert)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    return conn


def _handshake(client: SSL.Connection, server: SSL.Connection) -> dict[str, SSL.Error]:
    """Pump datagrams between the two until both are done; the errors by side."""
    errors: dict[str, SSL.Error] = {}
    done = {"client": False, "server": False}
    for _ in range(50):
        for side, conn, peer in (("client", client, server), ("server", server, client)):
            if done[side] or side in errors:
                continue
            try:
                conn.do_handshake()
                done[side] = True
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                errors[side] = exc
            while True:
                try:
                    data = conn.bio_read(65536)
                except SSL.WantReadError:
                    break
                if not data:
                    break
                peer.bio_write(data)
        if all(done.values()) or errors.keys() == {"client", "server"}:
            break
    return errors


def test_aiortcs_own_client_fails_against_an_rsa_server_and_says_why() -> None:
    client, server = _aiortc_client(None), _rsa_server()
    errors = _handshake(client, server)
    assert set(errors) == {"client", "server"}
    server_why = describe_ssl_error(errors["server"], server._parley_alerts)
    client_why = describe_ssl_error(errors["client"], client._parley_alerts)
    assert "no shared cipher" in server_why, server_why
    assert "sent fatal alert handshake_failure" in server_why, server_why
    assert "received fatal alert handshake_failure" in client_why, client_why


def test_parleys_cipher_list_reaches_an_rsa_server() -> None:
    client, server = _aiortc_client(CIPHERS), _rsa_server()
    assert _handshake(client, server) == {}
    assert client.get_cipher_name() is not None
    assert client.get_cipher_name().startswith("ECDHE-RSA-")


def test_alerts_in_words() -> None:
    assert describe_alert(0x4004, 0x0228) == "received fatal alert handshake_failure"
    assert describe_alert(0x4008, 0x0100) == "sent warning alert close_notify"
    assert describe_alert(0x4008, 0x02FE) == "sent fatal alert 254"
    assert describe_ssl_error(SSL.Error([])) == "OpenSSL gave no reason (Error([]))"


@pytest.mark.parametrize("times", [1, 2])
async def test_configure_ssl_sets_the_cipher_list_of_a_real_transport(times: int) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        dtls = pc.addTransceiver("video", direction="sendonly").sender.transport
        for _ in range(times):  # wrapping twice must not wrap the wrapper
            configure_ssl(dtls)
        certificate = dtls._RTCDtlsTransport__local_certificate
        conn = SSL.Connection(certificate._create_ssl_context(srtp_profiles=SRTP_PROFILES))
        ciphers = conn.get_cipher_list()
        assert "ECDHE-RSA-AES128-GCM-SHA256" in ciphers
        assert "ECDHE-ECDSA-AES128-GCM-SHA256" in ciphers
        assert not any("-RSA-" not in c and "-ECDSA-" not in c for c in ciphers if "ECDHE" in c)
    finally:
        await pc.close()
