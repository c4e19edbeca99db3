"""SRTP on a pipe (sfu/pipe_srtp.py), with the real libsrtp: what one side protects the
other reads back; a datagram made without the key, altered, or replayed is refused."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtcpPsfbPacket

from sfu.pipe_srtp import KEY_BYTES, PipeCrypto, new_key
from sfu.pipe_wire import encode_control


def _rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\x10" * 100) -> bytes:
    header = bytes([0x80, 96]) + seq.to_bytes(2, "big") + (1000).to_bytes(4, "big")
    return header + ssrc.to_bytes(4, "big") + payload


def _pair() -> tuple[PipeCrypto, PipeCrypto]:
    key_a, key_b = new_key(), new_key()
    return PipeCrypto(key_a, key_b), PipeCrypto(key_b, key_a)


def test_rtp_rtcp_and_control_cross_and_media_is_encrypted() -> None:
    a, b = _pair()
    packet = _rtp(1)
    protected = a.protect(packet)
    assert protected[:12] == packet[:12] and protected[12:112] != packet[12:]  # header clear
    assert len(protected) == len(packet) + 10  # the 80-bit tag
    assert b.unprotect(protected) == packet
    pli = bytes(RtcpPsfbPacket(fmt=1, ssrc=7, media_ssrc=0x1234))
    assert b.unprotect(a.protect(pli)) == pli
    control = encode_control({"t": "ping", "s": "abc"})
    tagged = a.protect(control)
    assert tagged.startswith(control) and b.unprotect(tagged) == control
    # both ways, each with its own key
    assert a.unprotect(b.protect(_rtp(5, ssrc=99))) == _rtp(5, ssrc=99)


def test_what_the_key_did_not_make_is_refused() -> None:
    a, b = _pair()
    stranger, _ = _pair()
    assert b.unprotect(_rtp(1)) is None  # plain RTP
    assert b.unprotect(stranger.protect(_rtp(2))) is None  # another key
    control = encode_control({"t": "bye", "s": "abc", "n": 3})
    assert b.unprotect(control) is None  # no tag
    forged = a.protect(control).replace(b'"bye"', b'"bey"')
    assert b.unprotect(forged) is None  # altered
    protected = a.protect(_rtp(10))
    tampered = protected[:20] + bytes([protected[20] ^ 1]) + protected[21:]
    assert b.unprotect(tampered) is None
    assert b.unprotect(protected) == _rtp(10)
    assert b.unprotect(protected) is None  # a replay


def test_keys_have_one_length() -> None:
    assert len(new_key()) == KEY_BYTES and new_key() != new_key()
    with pytest.raises(ValueError):
        PipeCrypto(b"short", new_key())
