"""Transport-wide sequence numbers on the wire: the forwarder puts the transport-cc
placeholder first in every packet's extension block (media, RTX, padding probes,
audio), the subscriber's egress (C ``Egress`` or ``PyEgress``) stamps it before SRTP
protect and keeps send time and size per sequence number. The native loop and the
Python path send the same bytes. Also: ``_tid_limit`` keeps a forwarder off the
native path.

Run with the C module and, through a subprocess, with ``PARLEY_NATIVE=0``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sfu import native
from sfu.forwarder import EgressParams
from sfu.rtp.extensions import ABS_SEND_TIME_URI, AUDIO_LEVEL_URI, MID_URI, TRANSPORT_CC_URI
from sfu.rtp.packet import RtpView
from tests.fakes import rtp
from tests.unit.test_native import Twins, Wire

TWCC_ID = 5


def twcc_twins(kind: str = "video", layers: int = 1, twcc_on_egress: bool = True) -> Twins:
    """test_native's twins, negotiated with transport-cc (id 5)."""
    t = Twins(kind=kind, layers=layers)
    video = kind == "video"
    extensions = {MID_URI: 4, ABS_SEND_TIME_URI: 3, TRANSPORT_CC_URI: TWCC_ID}
    if not video:
        extensions[AUDIO_LEVEL_URI] = 1
    params = EgressParams("3", 100, 0xABCD, 101, 0xABCE, extensions)
    for f in (t.fast, t.slow):
        f.configure(params)
    if twcc_on_egress:
        t.wire.egress.twcc_id = TWCC_ID
        t.slow_wire.egress.twcc_id = TWCC_ID
    return t


def first_element(packet: bytes) -> tuple[int, int, int] | None:
    """(id, length, value) of the first one-byte-header extension element, or None."""
    if not packet[0] & 0x10 or packet[0] & 0x0F or packet[12:14] != b"\xbe\xde":
        return None
    head = packet[16]
    size = (head & 0x0F) + 1
    return head >> 4, size, int.from_bytes(packet[17 : 17 + size], "big")


def transport_seqs(packets: list[bytes]) -> list[int]:
    out = []
    for p in packets:
        element = first_element(p)
        assert element is not None and element[:2] == (TWCC_ID, 2), p[:24].hex()
        out.append(element[2])
    return out


def test_every_video_packet_is_stamped_in_order_with_its_send_time() -> None:
    t = twcc_twins()
    try:
        t.start(0.0)
        before = time.monotonic()
        now = 0.0
        for frame in range(30):
            now += 0.033
            t.feed(0, t.packets(0, 3, keyframe=frame == 0, now=now), now)
        after = time.monotonic()
        fast = t.wire.received()
        assert fast == t.slow_wire.received()  # same bytes, stamp included
        assert t.fast.native_packets == (89 if native.NATIVE else 0)
        assert transport_seqs(fast) == list(range(90))
        egress = t.wire.egress
        assert egress.twcc_next == 90
        sent_times = []
        for seq, packet in enumerate(fast):
            entry = egress.history(seq)
            assert entry is not None
            assert entry[0] == seq and entry[2] == len(packet)
            assert before <= entry[1] <= after
            sent_times.append(entry[1])
        assert sent_times == sorted(sent_times)
        assert egress.history(90) is None and egress.history(65535) is None
        t.check()
    finally:
        t.close()


def test_audio_redundant_copies_share_one_sequence_number() -> None:
    t = twcc_twins(kind="audio")
    try:
        t.start(0.0)
        now = 0.0
        for step in range(12):
            now += 0.02
            t.redundant(4 <= step < 8)
            t.feed(0, t.packets(0, 1, keyframe=False, now=now), now)
        fast = t.wire.received()
        assert fast == t.slow_wire.received()
        # 4 plain, 4 sent twice (identical copies), 4 plain: 16 datagrams, 12 numbers
        assert transport_seqs(fast) == [0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11]
        assert t.wire.egress.twcc_next == 12
        assert t.wire.egress.tx_packets == 16
        assert t.fast.native_packets == (11 if native.NATIVE else 0)
        # MID ("3", id 4) then the audio level (id 1) follow the placeholder
        assert fast[0][19:22] == bytes((0x40, ord("3"), 0x10))
    finally:
        t.close()


def test_rtx_and_padding_probes_are_stamped() -> None:
    t = twcc_twins()
    try:
        t.start(0.0)
        t.feed(0, t.packets(0, 3, keyframe=True, now=0.0), 0.0)
        media = t.wire.received()
        lost = int.from_bytes(media[1][2:4], "big")
        assert t.fast.on_nack([lost], 0.05) == (1, len(media[1]) + 2)
        probe = t.fast.padding(200, 0.06)
        assert probe is not None and first_element(probe) == (TWCC_ID, 2, 0)
        assert t.wire.egress.send(probe)
        rtx, pad = t.wire.received()
        assert rtx[1] & 0x7F == 101 and pad[1] & 0x7F == 101
        assert pad[0] & 0x20  # the probe is padding
        assert transport_seqs([*media, rtx, pad]) == [0, 1, 2, 3, 4]
        assert t.wire.egress.history(4)[2] == len(probe)  # type: ignore[index]
    finally:
        t.close()


def test_nothing_is_stamped_while_twcc_id_is_zero() -> None:
    t = twcc_twins(twcc_on_egress=False)
    try:
        t.start(0.0)
        t.feed(0, t.packets(0, 3, keyframe=True, now=0.0), 0.0)
        t.feed(0, t.packets(0, 3, keyframe=False, now=0.03), 0.03)
        fast = t.wire.received()
        assert len(fast) == 6
        assert all(first_element(p) == (TWCC_ID, 2, 0) for p in fast)  # placeholder left
        assert t.wire.egress.twcc_id == 0 and t.wire.egress.twcc_next == 0
        assert t.wire.egress.history(0) is None
    finally:
        t.close()


def packet(seq: int, first: bytes = bytes((TWCC_ID << 4 | 1, 0, 0, 0))) -> bytes:
    """An RTP packet whose one-word extension block starts with ``first``."""
    data = bytearray(rtp(seq, 1000, ssrc=0x1234, pt=96, payload=b"p" * 30))
    data[0] |= 0x10
    return bytes(data[:12]) + b"\xbe\xde\x00\x01" + first + bytes(data[12:])


def test_only_the_placeholder_first_is_stamped() -> None:
    wire = Wire()
    try:
        egress = wire.egress
        egress.twcc_id = TWCC_ID
        other = bytes((3 << 4 | 1, 0, 0, 0))  # another extension with 2 bytes first
        plain = rtp(7, 1000, ssrc=0x1234, pt=96, payload=b"x" * 30)  # no extension
        with_csrc = bytearray(packet(8))
        with_csrc[0] |= 0x01  # CC = 1: the block is not at byte 12
        for data in (packet(1, other), plain, bytes(with_csrc)):
            assert egress.send(data)
        assert egress.twcc_next == 0
        assert egress.send(packet(9))
        got = wire.received()
        assert got[:2] == [packet(1, other), plain]
        assert first_element(got[3]) == (TWCC_ID, 2, 0) and egress.twcc_next == 1
        with pytest.raises(ValueError):
            egress.twcc_id = 15
        with pytest.raises(ValueError):
            egress.history(70000)
    finally:
        wire.close()


def test_history_wraps_16_bits_and_keeps_at_least_8192() -> None:
    wire = Wire()
    try:
        egress = wire.egress
        egress.twcc_id = TWCC_ID
        egress.twcc_next = 65530
        for i in range(12):
            assert egress.send(packet(i))
            wire.received()
        assert egress.twcc_next == 65542
        entry = egress.history(3)
        assert entry is not None and entry[0] == 65539
        assert egress.history(65531) is not None and egress.history(65531)[0] == 65531  # type: ignore[index]
        for i in range(17000):
            egress.send(packet(i))
            if i % 500 == 0:
                wire.received()
        last = egress.twcc_next - 1
        assert egress.history(last & 0xFFFF)[0] == last  # type: ignore[index]
        oldest_kept = last - (native.TWCC_HISTORY - 1)
        assert native.TWCC_HISTORY >= 8192
        assert egress.history(oldest_kept & 0xFFFF)[0] == oldest_kept  # type: ignore[index]
        assert egress.history((oldest_kept - 1) & 0xFFFF) is None
        assert egress.history(65530) is None  # 17000 numbers ago
    finally:
        wire.close()


def test_tid_limit_keeps_the_forwarder_on_the_python_path() -> None:
    t = twcc_twins()
    try:
        assert t.fast._tid_limit == -1 and t.slow._tid_limit == -1
        assert native.ForwarderCore()._tid_limit == -1  # type: ignore[attr-defined]
        t.start(0.0)
        t.feed(0, t.packets(0, 3, keyframe=True, now=0.0), 0.0)
        before = t.fast.native_packets
        t.fast._tid_limit = t.slow._tid_limit = 1
        t.feed(0, t.packets(0, 3, keyframe=False, now=0.03), 0.03)
        assert t.fast.native_packets == before  # the C path left it to forward()
        assert t.fast.packets_sent == 6
        t.fast._tid_limit = t.slow._tid_limit = -1
        t.feed(0, t.packets(0, 3, keyframe=False, now=0.06), 0.06)
        assert t.fast.native_packets == before + (3 if native.NATIVE else 0)
        t.check()
    finally:
        t.close()


def test_the_python_stand_ins_pass_these_tests_too() -> None:
    if os.environ.get("PARLEY_NATIVE") == "0":
        assert isinstance(Wire().egress, native.PyEgress)
        return
    assert native.NATIVE, native.NATIVE_ERROR
    env = dict(os.environ, PARLEY_NATIVE="0")
    root = Path(__file__).parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        capture_output=True, text=True, timeout=300, cwd=root, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-500:]


def test_rtp_view_reads_past_the_placeholder() -> None:
    """The subscriber-side parser (and a browser) see MID after the stamp."""
    t = twcc_twins()
    try:
        t.start(0.0)
        t.feed(0, t.packets(0, 1, keyframe=True, now=0.0), 0.0)
        (sent,) = t.wire.received()
        view = RtpView(sent)
        assert view.extension(4) == b"3"  # the MID
        assert view.extension(TWCC_ID) == b"\x00\x00"
    finally:
        t.close()
