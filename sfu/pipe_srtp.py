"""SRTP on a pipe (``sfu/pipe.py``, ``PipeTransport.open(..., srtp=True)``): for a pipe
between nodes over a network that is not trusted.

Each side draws its own master key (``KEY_BYTES``: AES-128 counter mode, HMAC-SHA1-80,
libsrtp through ``pylibsrtp``, as aiortc's DTLS-SRTP uses) and protects what it sends
with it; the peer's key (given to ``connect``, exchanged by whoever links the pipes over
its own authenticated channel: ``cluster/spread.py``) unprotects what it receives. RTP
and RTCP are SRTP and SRTCP (encrypted and authenticated, replays refused by libsrtp's
window); the JSON control datagrams stay readable but carry an HMAC-SHA256 tag (16
bytes) under a key derived from the sender's master key, so a datagram nobody with the
key made is dropped. A datagram that fails is dropped and counted (``srtp_failed``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from .pipe_wire import CONTROL, RTCP, RTP, classify

__all__ = ["KEY_BYTES", "PipeCrypto", "new_key"]

#: master key and salt of AES_CM_128_HMAC_SHA1_80 (16 + 14 bytes)
KEY_BYTES = 30
#: bytes of HMAC-SHA256 kept on a control datagram
TAG_BYTES = 16
#: packets libsrtp accepts out of order (the pipe reorders little; RTX comes later)
REPLAY_WINDOW = 1024


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _control_key(key: bytes) -> bytes:
    return hashlib.sha256(b"parley pipe control\x00" + key).digest()


def _session(key: bytes, ssrc_type: int) -> Session:
    policy = Policy(key=key, ssrc_type=ssrc_type)
    policy.window_size = REPLAY_WINDOW
    policy.allow_repeat_tx = True  # a packet sent twice is refused by the peer, not here
    return Session(policy=policy)


class PipeCrypto:
    """Protects what one side of a pipe sends (``key``) and checks what it receives
    (``peer_key``)."""

    def __init__(self, key: bytes, peer_key: bytes) -> None:
        if len(key) != KEY_BYTES or len(peer_key) != KEY_BYTES:
            raise ValueError(f"a pipe's SRTP key is {KEY_BYTES} bytes")
        self._tx = _session(key, Policy.SSRC_ANY_OUTBOUND)
        self._rx = _session(peer_key, Policy.SSRC_ANY_INBOUND)
        self._tx_tag = _control_key(key)
        self._rx_tag = _control_key(peer_key)

    def protect(self, data: bytes) -> bytes:
        kind = classify(data)
        if kind == RTP:
            return bytes(self._tx.protect(data))
        if kind == RTCP:
            return bytes(self._tx.protect_rtcp(data))
        return data + hmac.new(self._tx_tag, data, hashlib.sha256).digest()[:TAG_BYTES]

    def unprotect(self, data: bytes) -> bytes | None:
        """The datagram as sent, or None when it was not made with the peer's key (or
        is a replay)."""
        kind = classify(data)
        try:
            if kind == RTP:
                return bytes(self._rx.unprotect(data))
            if kind == RTCP:
                return bytes(self._rx.unprotect_rtcp(data))
        except SrtpError:
            return None
        if kind != CONTROL or len(data) <= TAG_BYTES:
            return None
        body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        good = hmac.new(self._rx_tag, body, hashlib.sha256).digest()[:TAG_BYTES]
        return body if hmac.compare_digest(tag, good) else None
