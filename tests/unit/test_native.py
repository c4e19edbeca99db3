"""The native forwarding loop (sfu/_native.c) against the Python path.

Two forwarders of the same layers are built alike (same random start values). The
first gets a real ``Egress`` (real libsrtp session, real UDP socket on loopback), so
``sfu.native.fanout`` serves its steady state in C; the second has none, so every
packet takes ``Forwarder.forward``. Both are fed the same packets, with layer
switches, pauses, loss, reordering, duplicates and padding in between; what the first
sent (decrypted) must equal what the second sent, byte for byte, and their state
must match afterwards.
"""

from __future__ import annotations

import gc
import os
import random
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import native
from sfu.aiortc_adapter import make_egress
from sfu.forwarder import EgressParams, Forwarder
from sfu.pacer import Pacer
from sfu.rtp.extensions import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI
from sfu.rtp.packet import RtpView
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp, vp8_payload

KEY = bytes(range(44))  # AES-256-GCM: 32-byte key, 12-byte salt
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
REWRITER_FIELDS = (*native.REWRITER_FIELDS, "history")
FORWARDER_FIELDS = (
    "packets_sent",
    "bytes_sent",
    "send_failures",
    "_mid_frame",
    "_dropping",
    "_broken",
    "layer_switches",
    "frames_dropped",
)


def test_the_native_module_is_in_use() -> None:
    """`make test` builds sfu/_native.c: the fast path must be there unless disabled."""
    if os.environ.get("PARLEY_NATIVE") == "0":
        assert not native.NATIVE and native.NATIVE_ERROR == "disabled by PARLEY_NATIVE=0"
    else:
        assert native.NATIVE, native.NATIVE_ERROR
        assert native.fanout.__module__ == "sfu._native"
        # the stand-in's slots name the C type's members
        assert set(native.REWRITER_FIELDS) <= set(dir(native.RewriterCore))


class Wire:
    """A libsrtp session pair and a UDP socket pair on loopback."""

    def __init__(self) -> None:
        self.tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE
            )
        )
        self.rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE
            )
        )
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.setblocking(False)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.bind(("127.0.0.1", 0))
        self.sender.setblocking(False)
        self.egress = make_egress(self.tx, self.receiver.getsockname(), self.sender)

    def received(self) -> list[bytes]:
        """Everything that arrived, decrypted (duplicates kept: a redundant send is two)."""
        out = []
        while True:
            try:
                data = self.receiver.recv(4096)
            except BlockingIOError:
                return out
            try:
                out.append(self.rx.unprotect(data))
            except pylibsrtp.Error:  # the second copy of a redundant packet: a replay
                out.append(out[-1])

    def close(self) -> None:
        self.egress.close()
        self.sender.close()
        self.receiver.close()


class EgressSink(RecordingSink):
    """The subscriber side as Participant wires it: sends through the egress."""

    def __init__(self, egress: object, pacer: Pacer) -> None:
        super().__init__()
        self.egress = egress
        self.pacer = pacer

    def send_rtp(self, data: bytes) -> bool:
        return bool(self.egress.send(data))  # type: ignore[attr-defined]

    def send_rtp_twice(self, data: bytes) -> bool:
        return bool(self.egress.send_twice(data))  # type: ignore[attr-defined]

    def send_video(self, data: bytes, now: float) -> bool:
        return self.send_rtp(data)

    def room_for_frame(self) -> bool:
        return self.pacer.has_room()


class Twins:
    """The same track forwarded twice: natively (``fast``) and in Python (``slow``)."""

    def __init__(self, kind: str = "video", layers: int = 3, seed: int = 7) -> None:
        self.owner = RecordingOwner()
        video = kind == "video"
        self.layers = [
            Source(
                SourceParams(
                    "t",
                    kind,
                    "vp8" if video else "opus",
                    90000 if video else 48000,
                    96 if video else 111,
                    0x1000 * (i + 1),
                    audio_level_ext=0 if video else 1,
                    rid=("q", "h", "f")[i] if layers > 1 else None,
                ),
                self.owner,
                keyframe_interval=0.0,
            )
            for i in range(layers)
        ]
        self.wire = Wire()
        self.slow_wire = Wire()  # the same as real: libsrtp refuses an index twice
        self.pacer = Pacer()
        params = EgressParams(
            "3",
            100,
            0xABCD,
            101,
            0xABCE,
            {MID_URI: 4, ABS_SEND_TIME_URI: 3} | ({} if video else {AUDIO_LEVEL_URI: 1}),
        )
        random.seed(seed)
        self.fast = Forwarder(self.layers, EgressSink(self.wire.egress, self.pacer), "fast")
        random.seed(seed)
        self.slow = Forwarder(self.layers, EgressSink(self.slow_wire.egress, Pacer()), "slow")
        for f in (self.fast, self.slow):
            f.configure(params)
        self.fast.egress = self.wire.egress
        self.fast.pacer = self.pacer
        self.seq = [(1000 + 20000 * i) & 0xFFFF for i in range(layers)]
        self.seq[0] = 65530  # wraps early
        self.ts = [4_294_960_000 - 100_000 * i for i in range(layers)]
        self.pid = [32760, 120, 5000][:layers]  # layer 1 uses 7-bit picture ids
        self.tl0 = [254, 3, 100][:layers]
        self.held: list[tuple[int, RtpView]] = []

    def start(self, now: float) -> None:
        for f in (self.fast, self.slow):
            f.start(now)

    def target(self, index: int | None, now: float) -> None:
        for f in (self.fast, self.slow):
            f.set_target(None if index is None else self.layers[index], now)

    def redundant(self, on: bool) -> None:
        self.fast.redundant = self.slow.redundant = on

    def packets(self, layer: int, count: int, keyframe: bool, now: float) -> list[RtpView]:
        """One frame (video) or ``count`` packets (audio) of ``layer``."""
        out = []
        video = self.layers[layer].is_video
        for i in range(count):
            if video:
                bits7 = layer == 1
                payload = vp8_payload(
                    keyframe=keyframe and i == 0,
                    start=i == 0,
                    picture_id=self.pid[layer] & (0x7F if bits7 else 0x7FFF),
                    pid_bits=7 if bits7 else 15,
                    tl0picidx=self.tl0[layer],
                    tid=0,
                    body=bytes([layer, i]) * (40 + 37 * i),
                    width=320 << layer,
                    height=180 << layer,
                )
                data = rtp(
                    self.seq[layer],
                    self.ts[layer],
                    ssrc=self.layers[layer].ssrc or 0,
                    pt=96,
                    payload=payload,
                    marker=int(i == count - 1),
                )
            else:
                data = rtp(
                    self.seq[layer],
                    self.ts[layer],
                    ssrc=self.layers[layer].ssrc or 0,
                    pt=111,
                    payload=bytes([i]) * (20 + i),
                    extensions=[(1, bytes([0x80 | (i * 7) % 127]))],
                )
                self.ts[layer] = (self.ts[layer] + 960) & 0xFFFFFFFF
            self.seq[layer] = (self.seq[layer] + 1) & 0xFFFF
            out.append(RtpView(data))
        if video:
            self.ts[layer] = (self.ts[layer] + 3000) & 0xFFFFFFFF
            self.pid[layer] = (self.pid[layer] + 1) & (0x7F if layer == 1 else 0x7FFF)
            self.tl0[layer] = (self.tl0[layer] + 1) & 0xFF
        return out

    def feed(self, layer: int, packets: list[RtpView], now: float) -> None:
        for pkt in packets:
            self.layers[layer].on_rtp(pkt, now)

    def check(self) -> None:
        """Both sent the same packets; their state is the same."""
        assert self.wire.received() == self.slow_wire.received()
        assert self.wire.egress.tx_packets == self.slow_wire.egress.tx_packets
        assert self.wire.egress.tx_errors == self.slow_wire.egress.tx_errors
        for name in FORWARDER_FIELDS:
            assert getattr(self.fast, name) == getattr(self.slow, name), name
        for name in REWRITER_FIELDS:
            assert getattr(self.fast.rewriter, name) == getattr(self.slow.rewriter, name), name
        assert (self.fast.current is None) == (self.slow.current is None)

    def close(self) -> None:
        self.fast.close()
        self.slow.close()
        self.wire.close()
        self.slow_wire.close()


@pytest.fixture
def twins():
    made: list[Twins] = []

    def make(**kwargs: object) -> Twins:
        t = Twins(**kwargs)  # type: ignore[arg-type]
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def test_steady_video_goes_native_and_matches(twins) -> None:
    t = twins(layers=1)
    t.start(0.0)
    now = 0.0
    for frame in range(40):
        now += 0.033
        t.feed(0, t.packets(0, 3, keyframe=frame == 0, now=now), now)
    t.check()
    assert t.slow.packets_sent == 120
    # only the keyframe that starts the stream takes the Python path
    assert t.fast.native_packets == (119 if native.NATIVE else 0), t.fast.native_packets
    assert t.wire.egress.tx_packets == 120
    assert t.wire.egress.tx_errors == 0


def test_audio_with_level_and_redundancy_matches(twins) -> None:
    t = twins(kind="audio", layers=1)
    t.start(0.0)
    now = 0.0
    for step in range(30):
        now += 0.02
        if step == 10:
            t.redundant(True)
        if step == 20:
            t.redundant(False)
        t.feed(0, t.packets(0, 1, keyframe=False, now=now), now)
    t.check()
    assert t.fast.native_packets == (29 if native.NATIVE else 0)
    assert t.wire.egress.tx_packets == 40  # 10 of the 30 went out twice


def test_a_busy_pacer_keeps_video_on_the_python_path(twins) -> None:
    t = twins(layers=1)
    t.start(0.0)
    t.feed(0, t.packets(0, 3, keyframe=True, now=0.0), 0.0)
    before = t.fast.native_packets
    t.pacer.set_rate(10_000_000, 0.1)  # a cap: video now goes through the pacer
    assert not t.pacer.idle
    t.feed(0, t.packets(0, 3, keyframe=False, now=0.1), 0.1)
    assert t.fast.native_packets == before
    t.pacer.set_rate(None, 0.2)
    assert t.pacer.idle
    t.feed(0, t.packets(0, 3, keyframe=False, now=0.2), 0.2)
    assert t.fast.native_packets == before + (3 if native.NATIVE else 0)
    t.check()


def test_a_closed_egress_counts_failures_and_sends_nothing(twins) -> None:
    t = twins(layers=1)
    t.start(0.0)
    t.feed(0, t.packets(0, 2, keyframe=True, now=0.0), 0.0)
    t.wire.received()
    t.wire.egress.close()
    t.feed(0, t.packets(0, 2, keyframe=False, now=0.1), 0.1)
    assert t.wire.received() == []
    assert t.fast.packets_sent == 2
    assert t.fast.send_failures == 2
    assert t.wire.egress.tx_errors == 2


def test_an_oversized_packet_is_refused_like_the_python_path(twins) -> None:
    t = twins(kind="audio", layers=1)
    t.start(0.0)
    t.feed(0, t.packets(0, 1, keyframe=False, now=0.0), 0.0)
    big = RtpView(rtp(t.seq[0], t.ts[0], ssrc=t.layers[0].ssrc or 0, pt=111, payload=b"x" * 1400))
    t.layers[0].on_rtp(big, 0.02)
    assert t.fast.send_failures == 1
    assert t.wire.egress.tx_errors == 1
    assert len(t.wire.received()) == 1


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("lose"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("reorder"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("duplicate"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("padding"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("target"), st.integers(-1, 2), st.just(0)),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_simulcast_native_and_python_paths_agree(ops: list[tuple[str, int, object]]) -> None:
    """Random switches, pauses, loss, reordering, duplicates and padding: same output."""
    t = Twins(layers=3)
    try:
        now = 0.0
        t.target(2, now)
        t.start(now)
        for op, layer, arg in ops:
            now += 0.01
            if op == "target":
                t.target(None if layer < 0 else layer, now)
                continue
            if op == "padding":
                pkt = RtpView(
                    rtp(
                        t.seq[layer],
                        t.ts[layer],
                        ssrc=t.layers[layer].ssrc or 0,
                        pt=96,
                        payload=b"",
                        padding=8,
                    )
                )
                t.seq[layer] = (t.seq[layer] + 1) & 0xFFFF
                t.feed(layer, [pkt], now)
                continue
            packets = t.packets(layer, 3, keyframe=bool(arg) if op == "frame" else False, now=now)
            if op == "lose":
                del packets[int(arg)]  # type: ignore[call-overload]
            elif op == "reorder":
                packets[0], packets[2] = packets[2], packets[0]
            elif op == "duplicate":
                packets.insert(2, packets[1])
            t.feed(layer, packets, now)
        # a steady tail: every layer keyframes, then keeps sending
        for frame in range(4):
            now += 0.033
            for layer in range(3):
                t.feed(layer, t.packets(layer, 3, keyframe=frame == 0, now=now), now)
        t.check()
        if native.NATIVE:  # the C path did serve the steady tail (unless paused)
            assert t.fast.current is None or t.fast.native_packets >= 6
    finally:
        t.close()


def test_forwarders_with_native_state_are_collected() -> None:
    """ForwarderCore takes part in garbage collection: a forwarder <-> source cycle goes."""
    t = Twins(layers=1)
    t.start(0.0)
    t.feed(0, t.packets(0, 3, keyframe=True, now=0.0), 0.0)
    ref = weakref.ref(t.fast)
    t.wire.close()
    t.slow_wire.close()
    del t
    gc.collect()
    assert ref() is None


def test_egress_rejects_bad_arguments() -> None:
    wire = Wire()
    try:
        if not native.NATIVE:  # PARLEY_NATIVE=0: the Python stand-in instead
            assert isinstance(wire.egress, native.PyEgress)
            return
        with pytest.raises(ValueError, match="not an IP address"):
            native.Egress(wire.sender, ("nowhere", 9), 1, 1)
        with pytest.raises(ValueError, match="non-null"):
            native.Egress(wire.sender, ("127.0.0.1", 9), 0, 1)
        with pytest.raises(ValueError, match="tuple"):
            native.Egress(wire.sender, "127.0.0.1:9", 1, 1)
    finally:
        wire.close()


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=12),
    markers=st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_arbitrary_vp8_payloads_match_and_never_crash(
    payloads: list[bytes], markers: list[bool]
) -> None:
    """Whatever descriptor bytes a publisher sends (after a real keyframe), the C loop
    sends what the Python path sends, or declines: no crash, no read past the packet."""
    t = Twins(layers=1)
    try:
        t.start(0.0)
        t.feed(0, t.packets(0, 1, keyframe=True, now=0.0), 0.0)
        now = 0.0
        for payload, marker in zip(payloads, markers, strict=False):
            now += 0.005
            data = rtp(t.seq[0], t.ts[0], ssrc=t.layers[0].ssrc or 0, pt=96, payload=payload,
                       marker=int(marker))  # fmt: skip
            t.seq[0] = (t.seq[0] + 1) & 0xFFFF
            t.feed(0, [RtpView(data)], now)
        t.check()
    finally:
        t.close()


def test_the_python_stand_ins_pass_these_tests_too() -> None:
    """Without the C module (no compiler at install time, or PARLEY_NATIVE=0), Parley runs
    on the stand-ins in sfu/native.py: this file's tests must hold for them as well."""
    if os.environ.get("PARLEY_NATIVE") == "0":
        return  # this is that run
    env = dict(os.environ, PARLEY_NATIVE="0")
    root = Path(__file__).parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        capture_output=True, text=True, timeout=300, cwd=root, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-500:]
