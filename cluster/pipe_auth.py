"""Requests to the ``/_parley/pipes`` routes signed, pipe SRTP keys sealed (pure).

The routes (``cluster/worker_pipes.py``) are asked by a front of its workers over
loopback, and by the nodes of a cluster of each other over the network
(``--node-spread``). The shared key (the front's, or the cluster's drawn in Redis) never
travels: each request carries ``X-Parley-Signature: <unix seconds>.<hex>``, an
HMAC-SHA256 under that key of the time, the method, the path and the body. A route
accepts a signature at most ``MAX_AGE`` seconds off its own clock; within that window a
captured request could be replayed (it can only repeat a pipe operation the cluster
asked for).

A pipe's SRTP master key (``--pipe-srtp``, ``sfu/pipe_srtp.py``) is sealed by the SFU
that drew it (``seal``: AES-128-GCM under a key derived from the shared key, a random
96-bit nonce) and opened by its peer (``unseal``); whoever links the two only passes the
sealed text on. Without the shared key, neither the requests nor the keys can be made or
read from the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MAX_AGE", "SIGNATURE_HEADER", "seal", "sign", "unseal", "verify"]

SIGNATURE_HEADER = "X-Parley-Signature"
#: seconds a signature is good for, either side of the receiver's clock
MAX_AGE = 30.0
_SEAL_CONTEXT = b"parley pipe key"


def _mac(key: str, stamp: int, method: str, path: str, body: bytes) -> str:
    message = f"{stamp}\n{method.upper()}\n{path}\n".encode() + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(key: str, method: str, path: str, body: bytes, now: float) -> str:
    """The ``X-Parley-Signature`` value of a request (``now``: Unix time)."""
    stamp = int(now)
    return f"{stamp}.{_mac(key, stamp, method, path, body)}"


def verify(
    key: str, signature: str | None, method: str, path: str, body: bytes, now: float
) -> bool:
    """Whether ``signature`` was made with ``key`` for this request, within ``MAX_AGE``."""
    if not signature:
        return False
    stamp_text, _, mac = signature.partition(".")
    try:
        stamp = int(stamp_text)
    except ValueError:
        return False
    if abs(now - stamp) > MAX_AGE:
        return False
    return hmac.compare_digest(mac, _mac(key, stamp, method, path, body))


def _sealing_key(key: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"parley pipe key seal\x00" + key.encode()).digest()[:16])


def seal(key: str, secret: bytes) -> str:
    """``secret`` encrypted and authenticated under the shared ``key`` (base64)."""
    nonce = os.urandom(12)
    return base64.b64encode(
        nonce + _sealing_key(key).encrypt(nonce, secret, _SEAL_CONTEXT)
    ).decode()


def unseal(key: str, sealed: str) -> bytes:
    """What :func:`seal` sealed; ``ValueError`` if it is malformed or was not sealed
    under ``key`` (or was changed)."""
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (TypeError, ValueError) as exc:
        raise ValueError("a sealed key is base64") from exc
    if len(raw) < 12 + 16:
        raise ValueError("a sealed key is too short")
    try:
        return _sealing_key(key).decrypt(raw[:12], raw[12:], _SEAL_CONTEXT)
    except InvalidTag as exc:
        raise ValueError("the key was not sealed with this cluster's key") from exc
