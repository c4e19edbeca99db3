"""sfu.rtp.packet: RTP view, header extensions, VP8 descriptor, on synthetic and real packets."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.packet import (
    ONE_BYTE_PROFILE,
    RtpError,
    RtpView,
    Vp8Descriptor,
    abs_send_time,
    build_extension_block,
    build_rtp_header,
    build_vp8_descriptor,
    is_rtcp,
    parse_extensions,
    parse_rtp,
)
from tests.fakes import load_capture, rtp, vp8_payload

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PUBLISH_CAPTURE = FIXTURES / "chromium_publish_rtp.jsonl"

MID, ABS_SEND_TIME, RID, RRID, AUDIO_LEVEL = 9, 2, 10, 11, 12


@pytest.fixture(scope="module")
def capture():
    assert PUBLISH_CAPTURE.exists(), (
        f"fixture missing: {PUBLISH_CAPTURE} (tests/fixtures/ is part of the repository)"
    )
    header, records = load_capture(PUBLISH_CAPTURE)
    rtp_records = [r for r in records if r["kind"] == "rtp"]
    for r in rtp_records:
        r["view"] = RtpView(r["data"])
    return header, records, rtp_records


def _layer_of(header):
    by_ssrc = {v["ssrc"]: rid for rid, v in header["rids"].items()}
    by_rtx = {v["rtx_ssrc"]: rid for rid, v in header["rids"].items()}
    return by_ssrc, by_rtx


# ------------------------------------------------------------------ real capture


def test_capture_every_rtp_packet_parses_and_rtcp_is_told_apart(capture):
    header, records, rtp_records = capture
    assert len(rtp_records) == 500
    assert sum(1 for r in records if r["kind"] == "rtcp") == 38
    by_ssrc, by_rtx = _layer_of(header)
    audio_ssrc = header["audio"]["ssrc"]
    counts = defaultdict(int)
    for r in records:
        data = r["data"]
        if r["kind"] == "rtcp":
            assert is_rtcp(data)
            continue
        assert not is_rtcp(data)
        v = r["view"]
        assert v.payload_start <= v.payload_end <= len(data)
        assert str(v.payload_type) in header["payload_types"]
        if v.ssrc in by_ssrc:
            assert v.payload_type == 96
            counts[by_ssrc[v.ssrc]] += 1
        elif v.ssrc in by_rtx:
            assert v.payload_type == 97
            counts["rtx-" + by_rtx[v.ssrc]] += 1
        else:
            assert v.ssrc == audio_ssrc and v.payload_type == 111
            counts["audio"] += 1
    assert counts == {
        "q": 120,
        "h": 120,
        "f": 120,
        "rtx-q": 26,
        "rtx-h": 10,
        "rtx-f": 4,
        "audio": 100,
    }


def test_capture_vp8_keyframes_times_and_sizes(capture):
    header, _, rtp_records = capture
    by_ssrc, _ = _layer_of(header)
    found = defaultdict(list)
    for r in rtp_records:
        v = r["view"]
        if v.payload_type != 96:
            continue
        desc = Vp8Descriptor(v.data, v.payload_start, v.payload_end)
        if desc.keyframe:
            found[by_ssrc[v.ssrc]].append(
                (round(r["t_ms"]), v.seq, v.timestamp, desc.width, desc.height)
            )
    # the times the fixture README lists
    assert [t for t, *_ in found["q"]] == [173, 327, 372]
    assert [t for t, *_ in found["h"]] == [168, 327, 372]
    assert [t for t, *_ in found["f"]] == [326, 371]
    sizes = {"q": (320, 180), "h": (640, 360), "f": (1280, 720)}
    for rid, frames in found.items():
        assert {(w, h) for *_, w, h in frames} == {sizes[rid]}
        expected = [(k["seq"], k["rtp_ts"]) for k in header["rids"][rid]["keyframes_in_file"]]
        assert [(seq, ts) for _, seq, ts, _, _ in frames] == expected


def test_capture_vp8_descriptors_parse_and_rebuild(capture):
    _, _, rtp_records = capture
    pids = set()
    for r in rtp_records:
        v = r["view"]
        if v.payload_type != 96:
            continue
        desc = Vp8Descriptor(v.data, v.payload_start, v.payload_end)
        assert desc.picture_id_bits == 15  # Chromium sends 15-bit picture ids
        assert 0 <= desc.tl0picidx <= 255
        pids.add(desc.picture_id)
        rebuilt = build_vp8_descriptor(desc, desc.picture_id, desc.tl0picidx)
        # same picture id and TL0PICIDX: the descriptor comes out byte-identical
        assert rebuilt == v.data[v.payload_start : v.payload_start + desc.size]
    assert len(pids) > 50


def test_capture_mid_and_rid_on_first_packets(capture):
    header, _, rtp_records = capture
    by_ssrc, _ = _layer_of(header)
    per_layer = defaultdict(list)
    for r in rtp_records:
        v = r["view"]
        if v.ssrc in by_ssrc:
            per_layer[by_ssrc[v.ssrc]].append(v.extensions())
    tagged = {"q": 12, "h": 16, "f": 26}  # README: mid/rid only on the first 12/16/26 packets
    for rid, exts in per_layer.items():
        assert exts[0][MID] == b"0"
        assert exts[0][RID] == rid.encode()
        n = tagged[rid]
        assert all(e.get(RID) == rid.encode() and e.get(MID) == b"0" for e in exts[:n])
        assert not any(RID in e or MID in e for e in exts[n:])
        # abs-send-time on every video packet
        assert all(len(e[ABS_SEND_TIME]) == 3 for e in exts)


def test_capture_audio_level_and_mid_on_audio(capture):
    header, _, rtp_records = capture
    audio = [r["view"] for r in rtp_records if r["view"].ssrc == header["audio"]["ssrc"]]
    assert len(audio) == 100
    exts = [v.extensions() for v in audio]
    assert all(len(e[AUDIO_LEVEL]) == 1 for e in exts)
    assert all(v.extension(AUDIO_LEVEL) == e[AUDIO_LEVEL] for v, e in zip(audio, exts, strict=True))
    assert [MID in e for e in exts] == [True] * 37 + [False] * 63
    assert exts[0][MID] == header["audio"]["mid"].encode()
    assert not any(RID in e or ABS_SEND_TIME in e for e in exts)


def test_capture_rtx_packets(capture):
    header, _, rtp_records = capture
    _, by_rtx = _layer_of(header)
    rtx = [(r, r["view"]) for r in rtp_records if r["view"].ssrc in by_rtx]
    assert len(rtx) == 40
    for _, v in rtx:
        e = v.extensions()
        assert e[MID] == b"0"
        assert e[RRID] == by_rtx[v.ssrc].encode()
        assert RID not in e
    probes = [(r, v) for r, v in rtx if v.payload_size == 0]
    assert len(probes) == 6
    for _, v in probes:
        assert v.padding == 255 and v.data[0] & 0x20
        assert v.payload() == b""
    first_probe, v = probes[0]
    assert by_rtx[v.ssrc] == "f" and round(first_probe["t_ms"]) == 165
    f_ssrc = header["rids"]["f"]["ssrc"]
    first_f_media = next(r for r in rtp_records if r["view"].ssrc == f_ssrc)
    assert first_probe["t_ms"] < first_f_media["t_ms"]
    # the retransmissions answering our NACKs carry the NACKed seq as OSN
    osns = {
        (v.ssrc, v.seq): int.from_bytes(v.payload()[:2], "big") for _, v in rtx if v.payload_size
    }
    for answer in header["nack_retransmissions_in_file"]:
        rtx_ssrc = header["rids"][answer["rid"]]["rtx_ssrc"]
        assert osns[(rtx_ssrc, answer["rtx_seq"])] == answer["seq"]


def test_capture_round_trip_through_builders(capture):
    _, _, rtp_records = capture
    for r in rtp_records:
        v = r["view"]
        elements = list(parse_extensions(v.data, v.ext_profile, v.ext_start, v.ext_end).items())
        data = (
            build_rtp_header(
                v.marker,
                v.payload_type,
                v.seq,
                v.timestamp,
                v.ssrc,
                build_extension_block(elements),
            )
            + v.payload()
        )
        w = parse_rtp(data)
        assert (w.marker, w.payload_type, w.seq, w.timestamp, w.ssrc) == (
            v.marker,
            v.payload_type,
            v.seq,
            v.timestamp,
            v.ssrc,
        )
        assert w.extensions() == v.extensions()
        assert w.payload() == v.payload()
        assert w.padding == 0
        if v.ext_profile == ONE_BYTE_PROFILE:
            # Chromium's one-byte blocks are already minimal: identical header bytes
            # (but for the P bit: the rebuilt packet has no padding)
            assert data[0] == v.data[0] & ~0x20
            assert data[1 : w.payload_start] == v.data[1 : v.payload_start]


# ------------------------------------------------------------------ RtpView


def test_view_fields():
    data = rtp(0xFFFF, ts=0xFFFFFFFF, ssrc=0xDEADBEEF, pt=111, payload=b"abc", marker=1)
    v = RtpView(data)
    assert (v.seq, v.timestamp, v.ssrc, v.payload_type, v.marker) == (
        0xFFFF,
        0xFFFFFFFF,
        0xDEADBEEF,
        111,
        1,
    )
    assert v.payload() == b"abc" and v.payload_size == 3
    assert v.ext_profile == 0 and v.extensions() == {} and v.extension(1) is None
    assert v.padding == 0


def test_view_csrcs_extension_and_padding():
    ext = build_extension_block([(1, b"x"), (3, b"abcd")])
    header = bytearray(build_rtp_header(0, 96, 7, 8, 9, ext))
    header[0] |= 2  # CC = 2
    csrcs = (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
    data = bytes(header[:12]) + csrcs + bytes(header[12:]) + b"payload" + b"\x00\x00\x03"
    data = bytes((data[0] | 0x20,)) + data[1:]
    v = RtpView(data)
    assert v.csrc_end == 20
    assert v.ext_start == 24 and v.ext_end == 24 + len(ext) - 4
    assert v.extensions() == {1: b"x", 3: b"abcd"}
    assert v.payload() == b"payload"
    assert v.padding == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x60" + b"\x00" * 9, "shorter"),
        (b"\x40\x60" + b"\x00" * 14, "version"),
        (b"\x00\x60" + b"\x00" * 14, "version"),
        # X bit with no room for the extension header
        (b"\x90\x60" + b"\x00" * 10 + b"\xbe\xde", "extension"),
        # extension header announcing more words than there are
        (b"\x90\x60" + b"\x00" * 10 + b"\xbe\xde\x00\x02" + b"\x00" * 4, "extension"),
        # padding length 0, and longer than the packet
        (b"\xa0\x60" + b"\x00" * 10 + b"ab\x00", "padding"),
        (b"\xa0\x60" + b"\x00" * 10 + b"ab\x09", "padding"),
        # CSRC count larger than the packet
        (b"\x8f\x60" + b"\x00" * 10 + b"payload", "CSRC"),
        (b"\x81\x60" + b"\x00" * 10 + b"\x00\x00\x00", "CSRC"),
    ],
)
def test_view_rejects_malformed(data, message):
    with pytest.raises(RtpError, match=message):
        RtpView(data)


def test_view_accepts_padding_only_and_exact_csrc_list():
    v = RtpView(b"\xa0\x60" + b"\x00" * 10 + b"\x00\x00\x00\x04")
    assert v.payload_size == 0 and v.padding == 4
    v = RtpView(b"\x81\x60" + b"\x00" * 10 + b"\x00\x00\x00\x05")
    assert v.csrc_end == 16 and v.payload_size == 0


@given(st.binary(max_size=80))
def test_view_never_has_a_negative_payload(data):
    try:
        v = RtpView(data)
    except RtpError:
        return
    assert 12 <= v.payload_start <= v.payload_end <= len(data)
    if v.ext_profile:
        try:
            v.extensions()
        except RtpError:
            pass


# ------------------------------------------------------------------ extensions


def test_parse_one_byte_extensions_with_padding_and_stop_id():
    body = b"\x10A" + b"\x00\x00" + b"\x32xyz" + b"\xf0" + b"\x40Q"
    assert parse_extensions(body, ONE_BYTE_PROFILE, 0, len(body)) == {1: b"A", 3: b"xyz"}


def test_parse_two_byte_extensions():
    body = b"\x01\x00" + b"\x00" + b"\x10\x02ab" + b"\xff\x11" + bytes(range(17))
    assert parse_extensions(body, 0x1000, 0, len(body)) == {
        1: b"",
        16: b"ab",
        255: bytes(range(17)),
    }
    # appbits in the low nibble of the profile
    assert parse_extensions(body, 0x100F, 0, len(body))[16] == b"ab"


def test_parse_unknown_profile_gives_nothing():
    assert parse_extensions(b"\x10A\x00\x00", 0x1234, 0, 4) == {}


@pytest.mark.parametrize(
    ("body", "profile"), [(b"\x13ab", ONE_BYTE_PROFILE), (b"\x05\x04abc", 0x1000)]
)
def test_parse_truncated_extension_element(body, profile):
    with pytest.raises(RtpError):
        parse_extensions(body, profile, 0, len(body))


def test_build_extension_block_one_byte_layout():
    block = build_extension_block([(9, b"0"), (2, b"\x01\x02\x03")])
    assert block == b"\xbe\xde\x00\x02" + b"\x90" + b"0" + b"\x22\x01\x02\x03" + b"\x00\x00"
    assert build_extension_block([]) == b""
    # exactly a multiple of 4: no padding
    assert build_extension_block([(1, b"abc")]) == b"\xbe\xde\x00\x01\x12abc"


@pytest.mark.parametrize(
    "elements",
    [[(15, b"a")], [(1, b"x" * 17)], [(1, b"")], [(3, b"a"), (200, b"long-id")]],
)
def test_build_extension_block_two_byte_when_needed(elements):
    block = build_extension_block(elements)
    assert block[:2] == b"\x10\x00"
    assert len(block) % 4 == 0
    words = int.from_bytes(block[2:4], "big")
    assert len(block) == 4 + 4 * words
    assert parse_extensions(block, 0x1000, 4, len(block)) == dict(elements)


@given(
    st.dictionaries(st.integers(1, 255), st.binary(min_size=0, max_size=40), min_size=1, max_size=8)
)
def test_extension_block_round_trip(elements):
    block = build_extension_block(list(elements.items()))
    data = build_rtp_header(0, 96, 1, 2, 3, block) + b"pay"
    v = RtpView(data)
    assert v.extensions() == elements
    assert v.payload() == b"pay"
    for ext_id, value in elements.items():
        assert v.extension(ext_id) == value


def test_build_rtp_header():
    assert build_rtp_header(1, 111, 0x1234, 0x56789ABC, 0xCAFEBABE, b"") == bytes.fromhex(
        "80ef123456789abccafebabe"
    )
    ext = build_extension_block([(1, b"a")])
    header = build_rtp_header(0, 96, 1, 2, 3, ext)
    assert header[0] == 0x90 and header[1] == 96 and header[12:] == ext


# ------------------------------------------------------------------ misc


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, 0),
        (1.0, 1 << 18),
        (0.5, 1 << 17),
        (63.999999, 0xFFFFFF),
        (64.0, 0),  # 6 bits of seconds: wraps every 64 s
        (65.25, (1 << 18) + (1 << 16)),
    ],
)
def test_abs_send_time(seconds, expected):
    assert abs_send_time(seconds) == expected.to_bytes(3, "big")


@pytest.mark.parametrize(
    ("second_byte", "expected"),
    [(200, True), (201, True), (202, True), (205, True), (206, True), (207, True), (192, True)],
)
def test_is_rtcp_for_rtcp_types(second_byte, expected):
    assert is_rtcp(bytes((0x80, second_byte, 0, 1))) is expected


@pytest.mark.parametrize("pt_byte", [96, 111, 0x80 | 96, 0x80 | 111, 0, 0x80, 97, 0x80 | 97])
def test_is_rtcp_false_for_rtp(pt_byte):
    assert not is_rtcp(bytes((0x80, pt_byte)) + b"\x00" * 10)


def test_is_rtcp_short():
    assert not is_rtcp(b"") and not is_rtcp(b"\x80")


# ------------------------------------------------------------------ VP8


def test_vp8_descriptor_minimal():
    d = Vp8Descriptor(b"\x10\x51\x02\x00rest")
    assert (d.start, d.partition_id, d.picture_id, d.tl0picidx, d.tid_byte) == (1, 0, -1, -1, -1)
    assert d.size == 1 and not d.keyframe
    assert build_vp8_descriptor(d, 5, 6) == b"\x10"


def test_vp8_descriptor_7_bit_picture_id_tl0_and_tid():
    payload = vp8_payload(picture_id=0x55, pid_bits=7, tl0picidx=200, tid=2)
    d = Vp8Descriptor(payload)
    assert (d.picture_id, d.picture_id_bits, d.tl0picidx) == (0x55, 7, 200)
    assert d.tid_byte == 0x80 and d.tk_flags == 0x20
    assert d.size == 5


def test_vp8_descriptor_15_bit_picture_id_with_offset_and_end():
    payload = b"HEADER" + vp8_payload(picture_id=0x7ABC) + b"TRAILER"
    d = Vp8Descriptor(payload, 6, len(payload) - 7)
    assert (d.picture_id, d.picture_id_bits, d.tl0picidx, d.size) == (0x7ABC, 15, -1, 4)


def test_vp8_keyframe_and_size():
    d = Vp8Descriptor(vp8_payload(keyframe=True, picture_id=3, width=1280, height=720))
    assert d.keyframe and (d.width, d.height) == (1280, 720)
    # the two scale bits above the 14-bit sizes are not part of them
    payload = bytearray(vp8_payload(keyframe=True, width=320, height=180))
    payload[8] |= 0xC0
    payload[10] |= 0x40
    d = Vp8Descriptor(bytes(payload))
    assert d.keyframe and (d.width, d.height) == (320, 180)


def test_vp8_not_keyframe():
    assert not Vp8Descriptor(vp8_payload(keyframe=False)).keyframe
    # continuation packet of a keyframe (S bit clear)
    assert not Vp8Descriptor(vp8_payload(keyframe=True, start=False)).keyframe
    # start of another partition
    payload = bytearray(vp8_payload(keyframe=True))
    payload[0] |= 0x01
    d = Vp8Descriptor(bytes(payload))
    assert d.partition_id == 1 and not d.keyframe
    # nothing after the descriptor
    assert not Vp8Descriptor(b"\x10").keyframe


def test_vp8_reserved_bit_is_ignored():
    payload = bytearray(vp8_payload(keyframe=True, picture_id=1, width=640, height=360))
    payload[0] |= 0x08  # R bit between S and PID (RFC 7741: receivers MUST ignore it)
    d = Vp8Descriptor(bytes(payload))
    assert d.partition_id == 0
    assert d.keyframe and (d.width, d.height) == (640, 360)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x90", b"\x90\x80", b"\x90\x80\x81", b"\x90\x40", b"\x90\x20", b"\x90\x10"],
)
def test_vp8_truncated(payload):
    with pytest.raises(RtpError):
        Vp8Descriptor(payload)


def test_vp8_empty_range():
    with pytest.raises(RtpError):
        Vp8Descriptor(b"\x10\x00\x00", 3)


@given(
    pid=st.one_of(st.none(), st.integers(0, 0x7FFF)),
    pid_bits=st.sampled_from([7, 15]),
    tl0=st.one_of(st.none(), st.integers(0, 255)),
    tid=st.one_of(st.none(), st.integers(0, 3)),
    start=st.booleans(),
    non_reference=st.booleans(),
    new_pid=st.integers(0, 0xFFFF),
    new_tl0=st.integers(0, 0x1FF),
)
def test_build_vp8_descriptor_round_trip(
    pid, pid_bits, tl0, tid, start, non_reference, new_pid, new_tl0
):
    if pid is not None and pid_bits == 7:
        pid &= 0x7F
    payload = bytearray(
        vp8_payload(start=start, picture_id=pid, pid_bits=pid_bits, tl0picidx=tl0, tid=tid)
    )
    if non_reference:
        payload[0] |= 0x20
    d = Vp8Descriptor(bytes(payload))
    built = build_vp8_descriptor(d, new_pid, new_tl0)
    rest = bytes(payload[d.size :])
    e = Vp8Descriptor(built + rest)
    assert e.size == len(built)
    assert (e.start, e.non_reference, e.partition_id) == (start, non_reference, 0)
    assert e.picture_id == (-1 if pid is None else new_pid & 0x7FFF)
    assert e.picture_id_bits == (0 if pid is None else 15)
    assert e.tl0picidx == (-1 if tl0 is None else new_tl0 & 0xFF)
    assert e.tid_byte == d.tid_byte and e.tk_flags == d.tk_flags
    assert e.keyframe == d.keyframe
