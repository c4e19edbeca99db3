"""sfu._recv.Reader (sfu/_recv.c): batched reads with SRTP unprotect of RTP, held to what
the Python batch reader does with the same datagrams (recvfrom + pylibsrtp unprotect)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pylibsrtp
import pytest

from sfu.aiortc_adapter import make_egress, make_reader
from tests.fakes import rtp

KEY = bytes(range(44))  # AES-256-GCM: 32-byte key, 12-byte salt
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM


def session(direction: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=direction, srtp_profile=PROFILE))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.connect(receiver.getsockname())
    yield receiver, sender
    sender.close()
    receiver.close()


def test_the_c_reader_is_built() -> None:
    """`make .venv/.installed` builds sfu/_recv.c (the load subscribers use it)."""
    from sfu import _recv

    assert _recv.BATCH_MAX == 64


def test_rtp_is_unprotected_and_the_rest_comes_with_its_address(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    tx = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    plain = [rtp(seq=100 + i, ssrc=0x1234, payload=bytes([i]) * (50 + i)) for i in range(10)]
    rtcp_plain = bytes([0x81, 201, 0, 1]) + (0x1234).to_bytes(4, "big")
    stun = b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + os.urandom(12)
    wire = [tx.protect(p) for p in plain[:5]]
    wire.append(tx.protect_rtcp(rtcp_plain))
    wire.append(stun)
    wire += [tx.protect(p) for p in plain[5:]]
    for datagram in wire:
        sender.send(datagram)
    reader = make_reader(receiver, session(pylibsrtp.Policy.SSRC_ANY_INBOUND))
    items = reader.read()
    address = sender.getsockname()
    # arrival order kept; RTP decrypted; RTCP (still protected) and STUN raw, with address
    assert items[:5] == plain[:5]
    assert items[5] == (wire[5], address)
    assert items[6] == (stun, address)
    assert items[7:] == plain[5:]
    assert reader.rx_errors == 0 and reader.rx_datagrams == 12 and reader.reads == 1
    assert reader.read() == []  # nothing queued: no exception, no datagram
    reader.close()
    with pytest.raises(ValueError):
        reader.read()


def test_what_fails_to_unprotect_is_dropped_and_counted(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = pair
    tx = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    good = rtp(seq=1, ssrc=7, payload=b"x" * 40)
    forged = bytearray(tx.protect(rtp(seq=2, ssrc=7, payload=b"y" * 40)))
    forged[-1] ^= 0xFF  # authentication tag broken
    protected = tx.protect(good)
    sender.send(bytes(forged))
    sender.send(protected)
    sender.send(protected)  # a replay: libsrtp refuses it too
    reader = make_reader(receiver, session(pylibsrtp.Policy.SSRC_ANY_INBOUND))
    assert reader.read() == [good]
    assert reader.rx_errors == 2


def test_reads_are_batched_and_nothing_is_lost(pair: tuple[socket.socket, socket.socket]) -> None:
    receiver, sender = pair
    tx = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    plain = [rtp(seq=i, ssrc=9, payload=i.to_bytes(2, "big") * 100) for i in range(150)]
    for p in plain:
        sender.send(tx.protect(p))
    reader = make_reader(receiver, session(pylibsrtp.Policy.SSRC_ANY_INBOUND), batch=64)
    got: list[bytes] = []
    sizes = []
    while batch := reader.read():
        sizes.append(len(batch))
        got.extend(batch)
    assert got == plain
    assert sizes == [64, 64, 22]


def test_without_a_session_every_datagram_comes_with_its_address(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The server's batch reader: recvmmsg only, SRTP left to the Python handler."""
    receiver, sender = pair
    datagrams = [rtp(seq=i, ssrc=3, payload=b"z" * 30) for i in range(5)]
    for d in datagrams:
        sender.send(d)
    reader = make_reader(receiver, None)
    assert reader.read() == [(d, sender.getsockname()) for d in datagrams]


def test_a_socket_error_is_raised_as_oserror() -> None:
    """ICMP port unreachable on a connected socket: OSError, as recvfrom raises it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    target = closed.getsockname()
    closed.close()
    sock.connect(target)
    sock.setblocking(False)
    sock.send(b"hello")
    reader = make_reader(sock, None)
    with pytest.raises(ConnectionRefusedError):
        for _ in range(100):
            reader.read()
    sock.close()


def test_an_rtcp_egress_protects_with_srtcp(pair: tuple[socket.socket, socket.socket]) -> None:
    """``make_egress(..., protect_name="srtp_protect_rtcp")``: what the load subscribers
    send their feedback through; the peer's SRTCP unprotect gives the packet back."""
    receiver, sender = pair
    tx = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    rx = session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    # a generic NACK (RTPFB 205 FMT 1) and a receiver report
    nack = (
        bytes([0x81, 205, 0, 3]) + (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\0\x07\0\0"
    )
    report = bytes([0x80, 201, 0, 1]) + (1).to_bytes(4, "big")
    egress = make_egress(tx, receiver.getsockname(), sender, protect_name="srtp_protect_rtcp")
    assert egress.send(nack) and egress.send(report)
    got = [rx.unprotect_rtcp(receiver.recv(2048)) for _ in range(2)]
    assert got == [nack, report]
    assert egress.tx_packets == 2 and egress.tx_errors == 0
    egress.close()
