"""The C ingress (sfu/_ingress.c, ``sfu.native.Ingress``) against the Python path.

Two publishers are built alike: a real ``PublishSide`` with a VP8 track (RTX announced)
and an Opus track (audio level, RED), each Source with forwarders attached. One takes
its packets through ``Ingress`` (``take`` for decrypted packets; ``receive`` with real
libsrtp sessions), the other through ``PublishSide.on_rtp``, Python all the way. Fed the
same packets (loss, reordering, duplicates, wrap-around, far jumps, padding, RTX, RED,
unknown SSRCs, malformed headers, extensions and VP8 descriptors), they must forward the
same packets and end in the same state: receive statistics, NACK tracker, packet cache
(and what it answers), the Sources' counters and the side's counters.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import native
from sfu.aiortc_adapter import make_ingress
from sfu.config import SfuConfig
from sfu.forwarder import EgressParams, Forwarder
from sfu.pacer import Pacer
from sfu.publish_side import PublishSide
from sfu.rtp.extensions import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI
from sfu.rtp.malformed import MalformedLog
from sfu.source import Source, SourceParams
from sfu.tracks import PublishedTrack
from tests.fakes import FakeClock, FakePort, RecordingSink, rtp, vp8_payload
from tests.unit.test_native import KEY, PROFILE, EgressSink, Wire

VIDEO, VIDEO_RTX, AUDIO, UNKNOWN = 0x0A0A0A0A, 0x0B0B0B0B, 0x0C0C0C0C, 0x0D0D0D0D
VIDEO_PT, RTX_PT, AUDIO_PT, RED_PT = 96, 97, 111, 63
COUNTERS = ("rtp_in", "rtp_unknown", "rtp_malformed", "rtcp_in", "rtcp_malformed")
SOURCE_FIELDS = (
    "packets",
    "bytes",
    "dropped",
    "malformed",
    "last_packet_time",
    "loudness_sum",
    "loudness_packets",
    "tid_bytes",
    "tid_frames",
    "last_keyframe_time",
    "last_keyframe_seq",
    "keyframe_pending",
    "width",
    "height",
)


class Publisher:
    """One publisher as the SFU sees it, with ``forwarders`` per Source."""

    def __init__(self, through_c: bool, wires: list[Wire] | None = None) -> None:
        self.clock = FakeClock()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.side = PublishSide(
            "pub",
            SfuConfig(),
            self.clock,
            self.counters,
            MalformedLog("test", 10.0, logging.getLogger("test")),
            on_published=lambda track, now: None,
            on_unpublished=lambda track: None,
        )
        self.side.port = FakePort()  # type: ignore[assignment]
        video = SourceParams(
            "cam", "video", "vp8", 90000, VIDEO_PT, VIDEO, RTX_PT, VIDEO_RTX, mid="0"
        )
        audio = SourceParams(
            "mic", "audio", "opus", 48000, AUDIO_PT, AUDIO, audio_level_ext=1, mid="1",
            red_payload_type=RED_PT,
        )  # fmt: skip
        now = self.clock.time()
        self.sources = []
        for params in (video, audio):
            source = Source(params, self.side, cache_size=16, keyframe_interval=0.0)
            self.side.add_track(
                PublishedTrack(params.track_id, params.kind, params.mid, (source,)), now
            )
            self.sources.append(source)
        self.sinks: list[RecordingSink] = []
        self.forwarders: list[Forwarder] = []
        for i, source in enumerate(self.sources):
            exts = {MID_URI: 4, ABS_SEND_TIME_URI: 3} | ({AUDIO_LEVEL_URI: 1} if i else {})
            sink: RecordingSink = RecordingSink()
            if wires is not None:  # the forwarder sends through a real Egress (C loop)
                sink = EgressSink(wires[i].egress, Pacer())
            random.seed(11 + i)
            forwarder = Forwarder([source], sink, f"f{i}")
            forwarder.configure(EgressParams("3", 100, 0xABC0 + i, 101, 0xABD0 + i, exts))
            if wires is not None:
                forwarder.egress = wires[i].egress
                forwarder.pacer = sink.pacer  # type: ignore[attr-defined]
            forwarder.start(now)
            forwarder.set_target(source, now)
            self.sinks.append(sink)
            self.forwarders.append(forwarder)
        self.ingress = (
            native.Ingress(self.side._by_ssrc, self.counters, self.side.on_rtp)
            if through_c
            else None
        )

    def take(self, data: bytes, now: float) -> None:
        if self.ingress is not None:
            assert self.ingress.take(data, now)
        else:
            self.side.on_rtp(data, now)

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"counters": dict(self.counters)}
        out["nack_sources"] = sorted(s.track_id for s in self.side._nack_sources)
        for source in self.sources:
            key = source.track_id
            for name in SOURCE_FIELDS:
                out[f"{key}.{name}"] = getattr(source, name)
            for name in native.RECEIVE_STATS_FIELDS:
                out[f"{key}.stats.{name}"] = getattr(source.stats, name)
            out[f"{key}.report"] = source.stats.report_block(1, 1e6)
            nack = source.nack
            out[f"{key}.nack"] = (nack._newest, nack._bad_seq, nack.missing)
            out[f"{key}.nack.due"] = nack.due(self.clock.time() + 0.5)
            cache = source.cache
            out[f"{key}.cache"] = (cache._ext, cache._data, cache._newest, cache._pending)
            answers = []
            for seq in sorted({e & 0xFFFF for e in cache._ext if e > -(1 << 60)}):
                entry = cache.get(seq)
                if entry is not None:
                    pkt, vp8 = entry[1]  # type: ignore[misc]
                    answers.append(
                        (seq, entry[0], pkt.seq, pkt.audio_level, vp8 and vp8.picture_id)
                    )
            out[f"{key}.answers"] = answers
        for i, forwarder in enumerate(self.forwarders):
            out[f"f{i}"] = (forwarder.packets_sent, forwarder.bytes_sent, forwarder.send_failures)
            out[f"f{i}.rewriter"] = {
                n: getattr(forwarder.rewriter, n) for n in native.REWRITER_FIELDS
            }
        return out

    def close(self) -> None:
        for forwarder in self.forwarders:
            forwarder.close()
        if self.ingress is not None:
            self.ingress.close()


class Stream:
    """Makes the publisher's packets from ops (deterministic given the ops)."""

    def __init__(self, first_seq: int) -> None:
        self.seq = [first_seq & 0xFFFF, (first_seq + 30000) & 0xFFFF]
        self.ts = [4_294_900_000, 1000]
        self.pid = 32700
        self.rtx_seq = 100
        #: the newest video sequence number sent
        self.last_video = self.seq[0]
        self.sent: list[bytes] = []

    def video(self, arg: int) -> bytes:
        seq = self.last_video = self.seq[0]
        self.seq[0] = (seq + 1) & 0xFFFF
        start = arg % 3 == 0
        if start:
            self.ts[0] = (self.ts[0] + 3000) & 0xFFFFFFFF
            self.pid = (self.pid + 1) & 0x7FFF
        payload = vp8_payload(
            keyframe=start and arg % 4 == 0,
            start=start,
            picture_id=self.pid,
            tl0picidx=arg & 0xFF,
            tid=arg % 3 if arg % 5 else None,
            body=bytes([arg & 0xFF]) * (20 + arg % 50),
            width=320 + arg % 7,
        )
        return rtp(seq, self.ts[0], VIDEO, VIDEO_PT, payload, marker=int(arg % 3 == 2))

    def audio(self, arg: int, pt: int = AUDIO_PT, ext: bytes | None = None) -> bytes:
        seq = self.seq[1]
        self.seq[1] = (seq + 1) & 0xFFFF
        self.ts[1] = (self.ts[1] + 960) & 0xFFFFFFFF
        level = [(1, ext if ext is not None else bytes([(arg * 7) & 0xFF]))]
        exts = level if arg % 4 else [(2, b"xy")] + level
        return rtp(
            seq, self.ts[1], AUDIO, pt, bytes([arg & 0xFF]) * (5 + arg % 30), extensions=exts
        )

    def make(self, op: str, arg: int) -> list[bytes]:
        """The packets one op sends (in order)."""
        if op == "video":
            out = [self.video(arg)]
        elif op == "audio":
            out = [self.audio(arg)]
        elif op == "burst":  # several video packets in order
            out = [self.video(arg + i) for i in range(1 + arg % 24)]
        elif op == "lose":  # made but never sent
            last = self.last_video
            for _ in range(1 + arg % 5):
                self.video(arg)
            self.last_video = last
            out = []
        elif op == "swap":
            a, b = self.video(arg), self.video(arg + 1)
            out = [b, a]
        elif op == "late":  # one of the last packets again (a duplicate or a late one)
            out = [self.sent[-1 - arg % len(self.sent)]] if self.sent else []
        elif op == "jump":  # the stream jumps ahead (or far behind)
            self.seq[arg % 2] = (self.seq[arg % 2] + 500 + arg) & 0xFFFF
            out = [self.video(arg), self.video(arg + 1)] if arg % 2 == 0 else [self.audio(arg)]
        elif op == "behind":  # a packet not sent before, some way behind the newest
            seq, last = self.seq[0], self.last_video
            self.seq[0] = (last - BEHIND[arg % len(BEHIND)]) & 0xFFFF
            out = [self.video(arg)]
            self.seq[0], self.last_video = seq, last
        elif op == "pad":
            seq = self.seq[0]
            self.seq[0] = (seq + 1) & 0xFFFF
            out = [rtp(seq, self.ts[0], VIDEO, VIDEO_PT, b"", padding=1 + arg % 200)]
        elif op == "padded":  # media with padding after it
            data = self.video(arg)
            out = [bytes((data[0] | 0x20,)) + data[1:] + b"\x00\x00\x03"]
        elif op == "rtx":  # a retransmission of a video packet a little behind
            osn = (self.seq[0] - 1 - arg % 8) & 0xFFFF
            self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
            body = osn.to_bytes(2, "big") + vp8_payload(picture_id=self.pid, body=b"r")
            out = [rtp(self.rtx_seq, self.ts[0], VIDEO_RTX, RTX_PT, body)]
        elif op == "red":
            out = [self.audio(arg, pt=RED_PT)]
            out[0] = out[0][:-1] if arg % 2 else out[0]  # sometimes a bad RED block
        elif op == "bad_ext":  # an element that overruns its block
            data = self.audio(arg)
            out = [data[:16] + bytes([0x1F]) + data[17:]]
        elif op == "empty_level":  # two-byte profile, a zero-length level element
            seq = self.seq[1]
            self.seq[1] = (seq + 1) & 0xFFFF
            data = rtp(seq, self.ts[1], AUDIO, AUDIO_PT, b"opus", extensions=[(1, b"")])
            out = [data]
        elif op == "bad_vp8":  # X set, the extension byte missing
            seq = self.seq[0]
            self.seq[0] = (seq + 1) & 0xFFFF
            out = [rtp(seq, self.ts[0], VIDEO, VIDEO_PT, b"\x90")]
        elif op == "unknown":
            out = [rtp(arg & 0xFFFF, 0, UNKNOWN, VIDEO_PT, b"\x10abc")]
        elif op == "other_pt":
            seq = self.seq[0]
            self.seq[0] = (seq + 1) & 0xFFFF
            out = [rtp(seq, self.ts[0], VIDEO, 100, b"\x10abc")]
        elif op == "garbage":
            rnd = random.Random(arg)
            out = [bytes([0x80 | rnd.randrange(64)]) + rnd.randbytes(arg % 40)]
        elif op == "truncated":  # header extension longer than the packet
            data = self.video(arg)
            out = [bytes((data[0] | 0x10,)) + data[1:12] + b"\xbe\xde\x00\x40"]
        else:
            raise AssertionError(op)
        self.sent.extend(out)
        return out


#: how far behind the newest an "behind" packet is: around each limit of the three
#: (the cache's 16 slots, the 1024-packet reordering window, the 3000 of a restart)
BEHIND = (1, 2, 15, 16, 17, 63, 64, 65, 511, 512, 513, 1023, 1024, 1025, 2999, 3000, 3001, 40000)
OPS = [
    "video", "video", "video", "audio", "audio", "lose", "swap", "late", "jump", "pad",
    "behind", "behind", "burst", "burst",
    "padded", "rtx", "red", "bad_ext", "empty_level", "bad_vp8", "unknown", "other_pt",
    "garbage", "truncated",
]  # fmt: skip


def run(ops: list[tuple[str, int]], first_seq: int) -> tuple[Publisher, Publisher]:
    c, py = Publisher(True), Publisher(False)
    stream = Stream(first_seq)
    now = 100.0
    for op, arg in ops:
        for data in stream.make(op, arg):
            now += 0.003 + (arg % 5) * 0.001
            c.take(data, now)
            py.take(data, now)
    return c, py


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 3000)), max_size=80),
    first_seq=st.one_of(st.just(65530), st.integers(0, 65535)),
)
def test_c_ingress_matches_the_python_path(ops: list[tuple[str, int]], first_seq: int) -> None:
    c, py = run(ops, first_seq)
    try:
        assert [s.packets for s in c.sinks] == [s.packets for s in py.sinks]
        assert c.state() == py.state()
    finally:
        c.close()
        py.close()


def test_steady_packets_are_taken_in_c_and_the_rest_falls_back() -> None:
    ops = [("video", i) for i in range(30)] + [("audio", i) for i in range(10)]
    ops += [("lose", 1), ("video", 3), ("swap", 4), ("pad", 0), ("rtx", 5), ("unknown", 5)]
    c, py = run(ops, 65530)
    try:
        assert c.state() == py.state()
        assert c.sinks[0].packets and c.sinks[0].packets == py.sinks[0].packets
        video, audio = c.sources
        # the steady packets (and the gap, the swapped pair) went native; the padding,
        # the RTX and the unknown SSRC fell back
        assert video.native_packets == 30 + 1 + 2
        assert audio.native_packets == 10
        assert c.ingress is not None
        assert c.ingress.native_packets == 43
        assert c.ingress.rx_packets == 43 + 3
        assert py.sources[0].native_packets == 0
        assert len(video.nack.missing) == 1  # two lost, one repaired by the RTX
    finally:
        c.close()
        py.close()


def test_srtp_receive_and_the_c_loop_match_the_python_path() -> None:
    """Real SRTP in, real Egress out: the C ingress hands the C loop its fields."""
    tx = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE
        )
    )
    rx = [
        pylibsrtp.Session(
            pylibsrtp.Policy(
                key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE
            )
        )
        for _ in range(2)
    ]
    wires = [[Wire(), Wire()] for _ in range(2)]
    c, py = Publisher(True, wires[0]), Publisher(False, wires[1])
    ingress = make_ingress(rx[0], c.side._by_ssrc, c.counters, c.side.on_rtp)
    assert ingress is not None
    stream = Stream(65500)
    cipher: dict[bytes, bytes] = {}
    now = 50.0
    ops = [("video", i) for i in range(60)] + [("audio", i) for i in range(20)]
    ops[20:20] = [("lose", 2), ("swap", 1), ("pad", 3), ("late", 0)]
    try:
        for op, arg in ops:
            for data in stream.make(op, arg):
                now += 0.002
                protected = cipher.get(data) or tx.protect(data)  # "late": the same again
                cipher[data] = protected
                c_ok = ingress.receive(protected, now)
                try:
                    py.side.on_rtp(rx[1].unprotect(protected), now)
                    py_ok = True
                except pylibsrtp.Error:  # a replayed packet: libsrtp refuses it twice
                    py_ok = False
                assert c_ok == py_ok
        assert ingress.receive(b"\x80" + bytes(40), now) is False  # not SRTP
        assert ingress.rx_errors == 2  # the replay and the garbage
        for i in range(2):
            received = wires[0][i].received()
            assert received and received == wires[1][i].received()
        assert c.state() == py.state()
        assert c.forwarders[0].native_packets > 50  # the C loop served the copies
        assert ingress.native_packets > 70
    finally:
        c.close()
        py.close()
        ingress.close()
        for pair in wires:
            for wire in pair:
                wire.close()


def test_ingress_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        native.Ingress({}, {}, None)
    with pytest.raises(ValueError):
        native.Ingress({}, {}, print, srtp_context=1)
    ingress = native.Ingress({}, {}, print)
    with pytest.raises(ValueError):
        ingress.receive(b"x" * 20, 0.0)
    ingress.close()
    assert ingress.take(b"\x80" * 12, 0.0) is False


def test_the_python_stand_ins_hold_the_same_state() -> None:
    """Without the C module (or with PARLEY_NATIVE=0) the fields live in the stand-ins of
    sfu/native.py: the statistics, NACK, cache and Source tests must hold for them too,
    and PARLEY_NATIVE_INGRESS=0 leaves the C loop on with no C ingress."""
    root = Path(__file__).parents[2]
    files = ["test_receive_stats.py", "test_nack.py", "test_packet_cache.py", "test_source.py"]
    env = dict(os.environ, PARLEY_NATIVE="0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(str(root / "tests" / "unit" / f) for f in files)],
        capture_output=True, text=True, timeout=300, cwd=root, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-500:]
    check = (
        "from sfu import native; from sfu.source import Source; "
        "print(native.NATIVE, native.NATIVE_INGRESS, native.SourceCore.__module__)"
    )
    for env_var, expected in (
        ({"PARLEY_NATIVE": "0"}, "False False sfu.native"),
        ({"PARLEY_NATIVE_INGRESS": "0"}, "True False sfu._native"),
        ({}, "True True sfu._native"),
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_NATIVE")}
        out = subprocess.run(
            [sys.executable, "-c", check], capture_output=True, text=True, cwd=root,
            env=env | env_var, timeout=60,
        )  # fmt: skip
        assert out.stdout.strip() == expected, out.stderr


def test_drain_reads_a_socket_takes_media_in_and_hands_on_the_rest() -> None:
    """``Ingress.drain``, the publish socket's batch reader: SRTP media is taken in (the
    same state as the Python path given the same packets), anything else (here a
    STUN-looking datagram and an SRTCP-looking one) goes to ``other`` with its address,
    and a batch stops at ``limit``."""
    policy = {"key": KEY, "srtp_profile": PROFILE}
    tx = pylibsrtp.Session(pylibsrtp.Policy(ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, **policy))
    rx = pylibsrtp.Session(pylibsrtp.Policy(ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, **policy))
    c, py = Publisher(True), Publisher(False)
    ingress = make_ingress(rx, c.side._by_ssrc, c.counters, c.side.on_rtp)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    stream = Stream(65000)
    plain = [stream.make("video", i)[0] for i in range(20)] + [stream.make("audio", 1)[0]]
    others = [b"\x00\x01\x00\x00" + bytes(16), b"\x80\xc8" + bytes(30)]
    handed: list[tuple[bytes, tuple[str, int]]] = []
    try:
        for data in plain[:10] + others + plain[10:]:
            sender.sendto(tx.protect(data) if data in plain else data, receiver.getsockname())
        assert ingress.drain(receiver.fileno(), lambda d, a: handed.append((d, a)), 5) == 5
        assert ingress.drain(receiver.fileno(), lambda d, a: handed.append((d, a)), 64) == 18
        assert ingress.drain(receiver.fileno(), lambda d, a: handed.append((d, a)), 64) == 0
        assert handed == [(d, sender.getsockname()) for d in others]
        assert ingress.native_packets == 21
        for i, data in enumerate(plain):
            py.take(data, 100.0 + i)
        for key in ("counters", "cam.packets", "cam.bytes", "cam.nack", "cam.cache"):
            assert c.state()[key] == py.state()[key], key
        # the same packets but for abs-send-time (bytes 19-21: drain's clock is the real one)
        assert len(c.sinks[0].packets) == 20
        assert [p[:19] + p[22:] for p in c.sinks[0].packets] == [
            p[:19] + p[22:] for p in py.sinks[0].packets
        ]
    finally:
        c.close()
        py.close()
        ingress.close()
        sender.close()
        receiver.close()
