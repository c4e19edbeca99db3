"""cluster/pipe_auth.py: signed pipe requests and sealed SRTP keys."""

from __future__ import annotations

import base64

import pytest

from cluster.pipe_auth import MAX_AGE, seal, sign, unseal, verify

KEY = "cluster-key-1"
BODY = b'{"peer": "w1", "room": "r"}'


def test_a_signature_verifies_only_for_its_key_request_and_time() -> None:
    sig = sign(KEY, "POST", "/_parley/pipes/export", BODY, 1000.0)
    assert KEY not in sig  # the key itself never travels
    assert verify(KEY, sig, "POST", "/_parley/pipes/export", BODY, 1000.0)
    assert verify(KEY, sig, "post", "/_parley/pipes/export", BODY, 1000.0 + MAX_AGE)
    assert not verify("other", sig, "POST", "/_parley/pipes/export", BODY, 1000.0)
    assert not verify(KEY, sig, "POST", "/_parley/pipes/close", BODY, 1000.0)
    assert not verify(KEY, sig, "GET", "/_parley/pipes/export", BODY, 1000.0)
    assert not verify(KEY, sig, "POST", "/_parley/pipes/export", BODY + b" ", 1000.0)
    assert not verify(KEY, sig, "POST", "/_parley/pipes/export", BODY, 1000.0 + MAX_AGE + 1)
    assert not verify(KEY, sig, "POST", "/_parley/pipes/export", BODY, 1000.0 - MAX_AGE - 1)
    for bad in (None, "", "x", "12.", "abc.def", KEY):
        assert not verify(KEY, bad, "POST", "/_parley/pipes/export", BODY, 1000.0)


def test_a_sealed_key_opens_only_with_the_shared_key_and_unchanged() -> None:
    secret = bytes(range(30))
    sealed = seal(KEY, secret)
    assert unseal(KEY, sealed) == secret
    assert secret not in base64.b64decode(sealed)
    assert seal(KEY, secret) != sealed  # a fresh nonce each time
    with pytest.raises(ValueError):
        unseal("other", sealed)
    raw = bytearray(base64.b64decode(sealed))
    raw[-1] ^= 1
    with pytest.raises(ValueError):
        unseal(KEY, base64.b64encode(bytes(raw)).decode())
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError):
            unseal(KEY, bad)
