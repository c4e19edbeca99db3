"""sfu._native.SendBatch: the C Egress queues what it protects while the batch is open and
flush() sends each subscriber's queue with sendmmsg. Held to the unbatched Egress: the
same datagrams (byte for byte), in the same order per subscriber; errors and partial
sends counted per datagram as sendto counts them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pylibsrtp
import pytest

from sfu import native
from sfu.aiortc_adapter import make_egress
from tests.fakes import rtp

KEY = bytes(range(44))  # AES-256-GCM: 32-byte key, 12-byte salt
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not native.NATIVE, reason="the C module is disabled")


def tx_session() -> pylibsrtp.Session:
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE
        )
    )


def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def subscriber(sockets: list[socket.socket]) -> tuple[object, socket.socket]:
    """One subscriber transport: a C Egress from its own socket to its own receiver."""
    rx = receiver()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    tx.setblocking(False)
    sockets += [rx, tx]
    return make_egress(tx_session(), rx.getsockname(), tx), rx


def packets(ssrc: int, count: int) -> list[bytes]:
    return [
        rtp(seq=1000 + i, ts=90 * i, ssrc=ssrc, payload=bytes([i % 256]) * 200)
        for i in range(count)
    ]


def test_batched_sends_are_the_unbatched_datagrams_in_the_same_order(
    sockets: list[socket.socket],
) -> None:
    """Three subscribers, packets interleaved as a fan-out sends them: nothing leaves
    before flush(); then each receiver has exactly what an unbatched Egress sends."""
    batch = native.new_send_batch()
    assert batch is not None
    batched = [subscriber(sockets) for _ in range(3)]
    plain = [subscriber(sockets) for _ in range(3)]
    streams = [packets(0x100 + k, 20) for k in range(3)]
    for egress, _ in batched:
        egress.batch = batch  # type: ignore[attr-defined]
    batch.begin()
    for i in range(20):
        for k in range(3):
            # redundancy at one point: one protect, two datagrams
            method = "send_twice" if (i, k) == (10, 1) else "send"
            assert getattr(batched[k][0], method)(streams[k][i])
            assert getattr(plain[k][0], method)(streams[k][i])
    assert all(drain(rx) == [] for _, rx in batched)  # queued, not sent
    assert batch.pending == 3
    assert [e.queued for e, _ in batched] == [20, 21, 20]  # type: ignore[attr-defined]
    batch.flush()
    assert batch.pending == 0 and batch.depth == 0
    for k in range(3):
        got, want = drain(batched[k][1]), drain(plain[k][1])
        assert len(got) == (21 if k == 1 else 20)
        assert got == want  # same bytes (same SRTP state), same order
        egress = batched[k][0]
        assert egress.tx_packets == len(got) and egress.tx_errors == 0  # type: ignore[attr-defined]
    assert batch.syscalls == 3 and batch.datagrams == 61  # one sendmmsg per subscriber


def test_a_full_queue_is_sent_at_once_and_nesting_flushes_at_the_outermost(
    sockets: list[socket.socket],
) -> None:
    batch = native.new_send_batch()
    egress, rx = subscriber(sockets)
    egress.batch = batch  # type: ignore[attr-defined]
    stream = packets(7, 70)
    batch.begin()
    batch.begin()
    for p in stream[:40]:
        egress.send(p)  # type: ignore[attr-defined]
    assert len(drain(rx)) == 32  # the queue (32 slots) filled up and was sent
    batch.flush()  # inner: nothing more yet
    assert drain(rx) == [] and egress.queued == 8  # type: ignore[attr-defined]
    batch.flush()
    assert len(drain(rx)) == 8
    # outside a batch the Egress sends at once, as before
    egress.send(stream[40])  # type: ignore[attr-defined]
    assert len(drain(rx)) == 1
    assert egress.tx_packets == 41  # type: ignore[attr-defined]


def test_what_cannot_be_sent_is_dropped_and_counted(sockets: list[socket.socket]) -> None:
    """A subscriber whose transport closes during the batch: its queue is dropped and
    counted, the others' are sent."""
    batch = native.new_send_batch()
    (gone, gone_rx), (kept, kept_rx) = subscriber(sockets), subscriber(sockets)
    gone.batch = kept.batch = batch  # type: ignore[attr-defined]
    batch.begin()
    for p in packets(1, 5):
        gone.send(p)  # type: ignore[attr-defined]
        kept.send(p)  # type: ignore[attr-defined]
    gone.close()  # type: ignore[attr-defined]
    batch.flush()
    assert drain(gone_rx) == [] and len(drain(kept_rx)) == 5
    assert gone.tx_errors == 5 and gone.tx_packets == 0  # type: ignore[attr-defined]
    assert kept.tx_packets == 5  # type: ignore[attr-defined]


PARTIAL = textwrap.dedent(
    """
    import socket, subprocess, time, pylibsrtp
    from loadgen.netns import bring_loopback_up
    from sfu import native
    from sfu.aiortc_adapter import make_egress
    from tests.fakes import rtp
    bring_loopback_up()
    # a slow token bucket holds the datagrams: the sender's small buffer stays charged, so
    # sendmmsg sends a few and the next ones get EAGAIN
    subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "400kbit",
                    "burst", "1600", "latency", "2s"],
                   check=True)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    tx.bind(("127.0.0.1", 0))
    session = pylibsrtp.Session(pylibsrtp.Policy(key=bytes(range(44)),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM))
    egress = make_egress(session, rx.getsockname(), tx)
    batch = native.new_send_batch()
    egress.batch = batch
    plain = [rtp(seq=i, ssrc=5, payload=bytes([i]) * 1000) for i in range(30)]
    batch.begin()
    for p in plain:
        egress.send(p)
    batch.flush()
    sent, errors = egress.tx_packets, egress.tx_errors
    rx.settimeout(2.0)
    got = [rx.recv(2048) for _ in range(sent)]
    rx.setblocking(False)
    try:
        rx.recv(2048)
        extra = 1
    except BlockingIOError:
        extra = 0
    rxs = pylibsrtp.Session(pylibsrtp.Policy(key=bytes(range(44)),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM))
    order = [rxs.unprotect(d) for d in got] == plain[:sent]
    print(sent, errors, batch.syscalls, extra, order)
    """
)


@pytest.mark.skipif(
    shutil.which("unshare") is None or shutil.which("tc") is None, reason="needs unshare and tc"
)
def test_partial_sends_and_eagain_are_counted_per_datagram() -> None:
    """A real partial sendmmsg: in a namespace of its own, a slow token bucket on lo holds the datagrams, the
    sender's buffer fills, the kernel takes the first datagrams and refuses the rest
    with EAGAIN. Every datagram is tried once: sent + dropped = queued, the sent ones
    arrive in order and nothing else does."""
    result = subprocess.run(
        ["unshare", "--net", "--map-root-user", sys.executable, "-c", PARTIAL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    sent, errors, syscalls, extra, order = result.stdout.split()
    assert int(sent) >= 1 and int(errors) >= 1, result.stdout  # a partial send happened
    assert int(sent) + int(errors) == 30
    assert int(syscalls) >= 1 and extra == "0" and order == "True"


def test_the_recvmmsg_reader_opens_the_batch_for_two_datagrams_or_more(
    sockets: list[socket.socket],
) -> None:
    """What the server's batch reader does (``readers.native_reader``): a readiness with
    one datagram sends at once (sendmmsg does not pay for one), two or more are batched,
    and everything the handler sent is out when the callback returns."""
    from sfu.aiortc_adapter import make_reader
    from sfu.aiortc_adapter.readers import SEND_BATCH_MIN, native_reader

    assert SEND_BATCH_MIN == 2
    batch = native.new_send_batch()
    egress, out = subscriber(sockets)
    egress.batch = batch  # type: ignore[attr-defined]
    inbound = receiver()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets += [inbound, sender]
    seen_queued: list[int] = []
    stream = iter(packets(9, 10))

    def handler(data: bytes | str, addr: tuple[object, ...]) -> None:
        egress.send(next(stream))  # type: ignore[attr-defined]
        seen_queued.append(egress.queued)  # type: ignore[attr-defined]

    class Protocol:
        def error_received(self, exc: Exception) -> None:
            raise AssertionError(exc)

    read_ready = native_reader(
        make_reader(inbound, None),
        Protocol(),
        handler,
        lambda d: None,
        lambda n: None,
        batch,  # type: ignore[arg-type]
    )
    sender.sendto(b"\x00\x01stun-like", inbound.getsockname())
    read_ready()
    assert seen_queued == [0] and len(drain(out)) == 1  # sent at once
    for _ in range(3):
        sender.sendto(b"\x00\x01stun-like", inbound.getsockname())
    seen_queued.clear()
    read_ready()
    assert seen_queued == [1, 2, 3]  # queued during the batch
    assert len(drain(out)) == 3 and batch.pending == 0  # sent by the end of the call
    assert batch.syscalls == 1
