"""VP8 temporal layers: the bot's descriptor and encoder, the SFU measuring each TID,
a forwarder leaving frames above a temporal limit out, and the allocation's steps."""

from __future__ import annotations

import json

import av
import numpy as np

from loadgen.media.simulcast import DEFAULT_LAYERS, LayerStream, SimulcastExtensions
from loadgen.media.simulcast.vp8 import TemporalFrame, Vp8LayerEncoder, vp8_packetize
from loadgen.media.synthetic import PatternTrack
from sfu.forwarder import EgressParams, Forwarder
from sfu.layers import (
    LayerInfo,
    Level,
    allocate,
    floor_level,
    key_layer,
    levels,
    past_last_resort,
)
from sfu.rtp.extensions import MID_URI
from sfu.rtp.packet import RtpView, Vp8Descriptor
from sfu.source import Source, SourceParams
from signaling.messages import Layer, parse_server_message
from tests.fakes import RecordingOwner, RecordingSink, rtp

KEY = b"\x50\x02\x00\x9d\x01\x2a" + (320).to_bytes(2, "little") + (180).to_bytes(2, "little")
DELTA = b"\x51\x02\x00"

# ------------------------------------------------------------------ publisher


def test_descriptor_carries_picture_id_tl0picidx_tid_and_layer_sync():
    payloads = vp8_packetize(
        DELTA + b"x" * 2500, 0x1234, temporal=TemporalFrame(1, True), tl0picidx=0x1FF
    )
    assert len(payloads) == 3
    for i, payload in enumerate(payloads):
        desc = Vp8Descriptor(payload)
        assert desc.size == 6
        assert desc.start == (i == 0)
        assert (desc.picture_id, desc.picture_id_bits) == (0x1234, 15)
        assert desc.tl0picidx == 0xFF
        assert desc.tid == 1 and desc.layer_sync
    base = Vp8Descriptor(vp8_packetize(DELTA, 7, temporal=TemporalFrame(0, False))[0])
    assert base.tid == 0 and not base.layer_sync
    plain = Vp8Descriptor(vp8_packetize(DELTA, 7)[0])
    assert plain.tid == -1 and plain.tl0picidx == -1 and plain.size == 4


def test_tl0picidx_counts_tid0_frames_only():
    spec = DEFAULT_LAYERS[0]
    stream = LayerStream(spec, "0", SimulcastExtensions(0, 0, 0), ssrc=1, rtx_ssrc=2, tl0picidx=9)
    seen = []
    for n, tid in enumerate((0, 1, 0, 1, 1, 0)):
        frame = KEY if n == 0 else DELTA
        packets = stream.frame_packets(frame, n * 6000, None, TemporalFrame(tid, tid > 0))
        view = RtpView(packets[0])
        desc = Vp8Descriptor(view.data, view.payload_start, view.payload_end)
        seen.append((desc.tid, desc.tl0picidx))
    assert seen == [(0, 10), (1, 10), (0, 11), (1, 11), (1, 11), (0, 12)]
    assert stream.stats.frames_by_tid[:2] == [3, 3]


def _encode(temporal_layers: int, count: int, keyframes: set[int]) -> list[tuple[bytes, int]]:
    spec = DEFAULT_LAYERS[0]
    pattern = PatternTrack(spec.width, spec.height, 15.0, paced=False)
    encoder = Vp8LayerEncoder(
        spec.width, spec.height, spec.bitrate, 15.0, temporal_layers=temporal_layers
    )
    frames = []
    for n in range(count):
        frame = encoder.encode(pattern.render(n), n * 6000, n in keyframes)
        assert frame
        frames.append((frame, encoder.temporal.tid))
    encoder.close()
    pattern.stop()
    return frames


def _decode(frames: list[bytes]) -> list[np.ndarray]:
    decoder = av.CodecContext.create("vp8", "r")
    images = []
    for frame in frames:
        for decoded in decoder.decode(av.Packet(frame)):
            images.append(decoded.to_ndarray(format="yuv420p"))
    return images


def test_libvpx_temporal_layers_decode_without_the_upper_layers():
    # a keyframe forced at an odd position restarts the pattern (ffmpeg does)
    for layers, period in ((2, 2), (3, 4)):
        frames = _encode(layers, 24, {0, 9})
        tids = [tid for _, tid in frames]
        pattern = [0, 1] if layers == 2 else [0, 2, 1, 2]
        assert tids[:9] == [pattern[n % period] for n in range(9)]
        assert tids[9:] == [pattern[n % period] for n in range(15)]
        full = _decode([f for f, _ in frames])
        assert len(full) == 24
        for limit in range(layers - 1):
            kept = [n for n, (_, tid) in enumerate(frames) if tid <= limit]
            assert len(kept) < 24
            partial = _decode([frames[n][0] for n in kept])
            # every frame kept decodes, to exactly the picture the whole stream gives
            assert len(partial) == len(kept)
            for image, n in zip(partial, kept, strict=True):
                assert np.array_equal(image, full[n])


# ------------------------------------------------------------------ SFU side


class TemporalPublisher:
    """One VP8 layer with two temporal layers, as the bot sends them."""

    def __init__(self) -> None:
        self.owner = RecordingOwner()
        self.source = Source(
            SourceParams("cam", "video", "vp8", 90000, 96, 0x1000, mid="0", rid="q"),
            self.owner,
            keyframe_interval=0.0,
        )
        self.seq = 65530
        self.ts = 1000
        self.pid = 32760
        self.tl0 = 254
        self.frames = 0

    def frame(self, now: float, tid: int, sync: bool = True, key: bool = False) -> None:
        if tid == 0:
            self.tl0 = (self.tl0 + 1) & 0xFF
        payloads = vp8_packetize(
            (KEY if key else DELTA) + b"f%d" % self.frames * 300,
            self.pid,
            max_payload=400,
            temporal=TemporalFrame(tid, sync),
            tl0picidx=self.tl0,
        )
        for i, payload in enumerate(payloads):
            marker = int(i == len(payloads) - 1)
            data = rtp(self.seq, self.ts, ssrc=0x1000, pt=96, payload=payload, marker=marker)
            self.seq = (self.seq + 1) & 0xFFFF
            self.source.on_rtp(RtpView(data), now)
        self.ts = (self.ts + 6000) & 0xFFFFFFFF
        self.pid = (self.pid + 1) & 0x7FFF
        self.frames += 1


def _setup() -> tuple[TemporalPublisher, RecordingSink, Forwarder]:
    pub = TemporalPublisher()
    sink = RecordingSink()
    fwd = Forwarder([pub.source], sink, "sub")
    fwd.configure(EgressParams("3", 100, 0xABCD, 97, 0xBEEF, {MID_URI: 4}))
    fwd.start(0.0)
    return pub, sink, fwd


def _sent(sink: RecordingSink) -> list[tuple[RtpView, Vp8Descriptor]]:
    out = []
    for data in sink.packets:
        view = RtpView(data)
        if view.ssrc == 0xABCD and view.payload_end > view.payload_start:  # not padding
            out.append((view, Vp8Descriptor(view.data, view.payload_start, view.payload_end)))
    return out


def _frames(sent: list[tuple[RtpView, Vp8Descriptor]]) -> list[tuple[int, int, int]]:
    """(picture id, TL0PICIDX, TID) of each frame sent, checking that sequence numbers
    are contiguous and every frame is whole (starts with S, ends with the marker)."""
    frames = []
    for i, (view, desc) in enumerate(sent):
        if i:
            assert view.seq == (sent[i - 1][0].seq + 1) & 0xFFFF
            assert desc.start == bool(sent[i - 1][0].marker)
        if desc.start:
            frames.append((desc.picture_id, desc.tl0picidx, desc.tid))
    assert sent[-1][0].marker
    return frames


def test_forwarder_leaves_out_frames_above_the_limit_with_contiguous_ids():
    pub, sink, fwd = _setup()
    t = 0.0
    pub.frame(t, 0, key=True)
    pub.frame(t, 1)
    fwd.set_temporal(0)
    for n in range(2, 10):
        t += 1 / 15
        pub.frame(t, n % 2)
    frames = _frames(_sent(sink))
    # TL1 frames after the limit are gone; picture ids go on by one per frame sent
    assert [tid for _, _, tid in frames] == [0, 1, 0, 0, 0, 0]
    pids = [pid for pid, _, _ in frames]
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(pids, pids[1:], strict=False))
    tl0s = [tl0 for _, tl0, _ in frames]
    assert all((b - a) & 0xFF == 1 for a, b in zip(tl0s[1:], tl0s[2:], strict=False))
    assert fwd.temporal_layer == 0 and fwd.temporal_dropped > 0
    assert sink.layers  # the subscriber is told (the `layer` message)


def test_the_limit_goes_down_at_a_frame_boundary_only():
    pub, sink, fwd = _setup()
    pub.frame(0.0, 0, key=True)
    # the limit arrives while a TL1 frame is half sent: that frame goes out whole
    payloads = vp8_packetize(DELTA + b"y" * 900, pub.pid, 400, TemporalFrame(1, True), pub.tl0)
    assert len(payloads) == 3
    for i, payload in enumerate(payloads):
        marker = int(i == 2)
        data = rtp(pub.seq, pub.ts, ssrc=0x1000, pt=96, payload=payload, marker=marker)
        pub.seq += 1
        pub.source.on_rtp(RtpView(data), 0.05)
        if i == 0:
            fwd.set_temporal(0)
    pub.ts += 6000
    pub.pid += 1
    pub.frame(0.1, 0)
    pub.frame(0.2, 1)
    assert [tid for _, _, tid in _frames(_sent(sink))] == [0, 1, 0]


def test_the_limit_goes_up_only_at_a_layer_sync_frame_or_keyframe():
    pub, sink, fwd = _setup()
    pub.frame(0.0, 0, key=True)
    fwd.set_temporal(0)
    pub.frame(0.1, 1)
    pub.frame(0.2, 0)
    fwd.set_temporal(None)
    pub.frame(0.3, 1, sync=False)  # references an earlier TL1 frame: not decodable
    pub.frame(0.4, 0)
    pub.frame(0.5, 1, sync=True)
    pub.frame(0.6, 0)
    pub.frame(0.7, 1, sync=False)
    frames = _frames(_sent(sink))
    assert [tid for _, _, tid in frames] == [0, 0, 0, 1, 0, 1]
    assert fwd.temporal_layer is None
    # back to every layer: the C fast path may take the forwarder again
    assert fwd._tid_limit == -1
    fwd.set_temporal(0)
    pub.frame(0.8, 0)
    pub.frame(0.9, 1, sync=True)
    pub.frame(1.0, 0, key=True)
    assert [tid for _, _, tid in _frames(_sent(sink))][-2:] == [0, 0]


def test_no_retransmission_of_a_frame_left_out_and_old_ids_kept():
    pub, sink, fwd = _setup()
    pub.frame(0.0, 0, key=True)
    pub.frame(0.1, 1)
    first = _sent(sink)
    fwd.set_temporal(0)
    for n in range(2, 6):
        pub.frame(0.1 + n / 15, n % 2)
    # a TL1 packet arrives late, after the TL0 frame behind it: it is left out, a
    # padding-only packet takes the sequence number it would have had (no hole for the
    # receiver to wait on), and a NACK for that number resends nothing
    late_seq, late_pid = pub.seq, pub.pid
    pub.seq += 1
    pub.pid += 1
    pub.frame(1.0, 0)
    late = vp8_packetize(DELTA + b"late", late_pid, temporal=TemporalFrame(1, True))[0]
    pub.source.on_rtp(
        RtpView(rtp(late_seq, pub.ts, ssrc=0x1000, pt=96, payload=late, marker=1)), 1.05
    )
    sent = _sent(sink)
    last_start = max(i for i, (_, desc) in enumerate(sent) if desc.start)
    hole = (sent[last_start][0].seq - 1) & 0xFFFF
    assert all(view.seq != hole for view, _ in sent)
    pads = [RtpView(p) for p in sink.packets if RtpView(p).payload_end == RtpView(p).payload_start]
    assert [(p.seq, p.ssrc) for p in pads] == [(hole, 0xABCD)]
    # with the timestamp of the frame sent before it
    assert pads[0].timestamp == sent[last_start - 1][0].timestamp
    before = len(sink.packets)
    fwd.on_nack([hole], 1.2)
    assert sink.packets[before:] == []
    # a NACK for a packet of the TL1 frame sent before the limit: resent as it was
    before = len(sink.packets)
    old_view, old_desc = first[-1]
    assert old_desc.tid == 1
    fwd.on_nack([old_view.seq], 1.3)
    rtx = [RtpView(p) for p in sink.packets[before:]]
    assert len(rtx) == 1 and rtx[0].ssrc == 0xBEEF
    payload = rtx[0].data[rtx[0].payload_start + 2 : rtx[0].payload_end]
    assert Vp8Descriptor(payload).picture_id == old_desc.picture_id


def test_a_packet_left_out_after_an_upstream_gap_leaves_no_hole():
    pub, sink, fwd = _setup()
    pub.frame(0.0, 0, key=True)
    fwd.set_temporal(0)
    pub.frame(0.1, 0)
    # a TL1 frame of three packets whose first is lost on the publisher's uplink
    payloads = vp8_packetize(DELTA + b"z" * 900, pub.pid, 400, TemporalFrame(1, True), pub.tl0)
    views = [
        RtpView(rtp(pub.seq + i, pub.ts, ssrc=0x1000, pt=96, payload=p, marker=int(i == 2)))
        for i, p in enumerate(payloads)
    ]
    pub.seq += 3
    pub.ts += 6000
    pub.pid += 1
    for view in views[1:]:
        pub.source.on_rtp(view, 0.15)
    pub.frame(0.2, 0)
    pub.source.on_rtp(views[0], 0.25)  # repaired late (RTX from the publisher)
    pub.frame(0.3, 0)
    seqs = sorted(RtpView(p).seq for p in sink.packets if RtpView(p).ssrc == 0xABCD)
    # every output sequence number is there: media or padding, no hole
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    media = _sent(sink)
    assert [desc.tid for _, desc in media if desc.start] == [0, 0, 0, 0]
    # padding takes the lost packet's number and that of the one after the gap; the
    # third packet, in order again, closes up
    assert len(seqs) - len(media) == 2


def test_source_measures_each_temporal_layer():
    pub = TemporalPublisher()
    t = 0.0
    pub.source.tick(t)
    for n in range(30):
        t = n / 15
        pub.frame(t, n % 2, key=n == 0)
        if n % 15 == 14:
            pub.source.tick(t + 1 / 30)
    rates = pub.source.temporal
    assert len(rates) == 2
    (bits0, fps0), (bits1, fps1) = rates
    assert 6.0 <= fps0 <= 9.0 and 13.0 <= fps1 <= 17.0
    assert 0 < bits0 < bits1


# ------------------------------------------------------------------ allocation


def _info(index: int, height: int, bitrate: float) -> LayerInfo:
    return LayerInfo(index, height * 16 // 9, height, bitrate, True)


LAYERS = [_info(0, 180, 150_000), _info(1, 360, 500_000), _info(2, 720, 1_500_000)]


def test_steps_skip_temporal_levels_under_10_fps_except_the_lowest_base():
    # the bot: two temporal layers at 15 fps (7.5 fps base), TL0 60 % of the bits
    bot = [((60.0, 7.5), (100.0, 15.0))] * 3
    steps = levels(LAYERS, bot)
    assert [(s.index, s.tid) for s in steps] == [(0, 0), (0, -1), (1, -1), (2, -1)]
    assert steps[0].bitrate == 90_000
    # Chromium: three at 30 fps (7.5 / 15 / 30): the 15 fps steps are offered too
    chromium = [((40.0, 7.5), (60.0, 15.0), (100.0, 30.0))] * 3
    steps = levels(LAYERS, chromium)
    assert [(s.index, s.tid) for s in steps] == [
        (0, 0), (0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1),
    ]  # fmt: skip
    bitrates = [s.bitrate for s in steps]
    assert bitrates == sorted(bitrates)
    # no temporal layers measured: the spatial layers alone, as before
    assert [(s.index, s.tid) for s in levels(LAYERS, [(), (), ()])] == [(0, -1), (1, -1), (2, -1)]
    for step in steps:
        assert key_layer(step.key) == (step.index, None if step.tid < 0 else step.tid)


def test_a_cap_under_the_lowest_layer_but_over_its_base_steps_down_instead_of_pausing():
    steps = levels(LAYERS, [((60.0, 7.5), (100.0, 15.0))] * 3)
    demand = [s.bitrate for s in steps]
    at_top = len(steps) - 1
    assert allocate(120_000, [demand], [at_top]) == [0]  # q at 7.5 fps: not paused
    assert allocate(80_000, [demand], [at_top]) == [-1]  # even q/TL0 does not fit
    chromium = levels(LAYERS, [((40.0, 7.5), (60.0, 15.0), (100.0, 30.0))] * 3)
    demand = [s.bitrate for s in chromium]
    chosen = chromium[allocate(1_000_000, [demand], [len(chromium) - 1])[0]]
    assert (chosen.index, chosen.tid) == (2, 1)  # f at 15 fps before h
    chosen = chromium[allocate(600_000, [demand], [len(chromium) - 1])[0]]
    assert (chosen.index, chosen.tid) == (1, -1)
    assert Level(2, 1, 0.0).key != Level(2, -1, 0.0).key


def test_without_evidence_for_pausing_the_lowest_layer_is_kept_whole():
    steps = levels(LAYERS, [((60.0, 7.5), (100.0, 15.0))] * 3)
    assert steps[0].last_resort and not steps[1].last_resort
    assert floor_level(steps, 0) == 1  # q at 15 fps, not 7.5
    assert floor_level(steps, 2) == 2
    assert floor_level(steps, -1) == -1
    whole = levels(LAYERS, [(), (), ()])
    assert floor_level(whole, 0) == 0


def test_layer_message_temporal_field_is_additive():
    plain = Layer(track="v-1", rid="q", width=320, height=180, paused=False)
    assert "temporal" not in plain.to_json()
    limited = Layer(track="v-1", rid="q", width=320, height=180, paused=False, temporal=0)
    wire = limited.to_json()
    assert wire["temporal"] == 0
    assert parse_server_message(json.dumps(wire)) == limited
    assert parse_server_message(json.dumps(plain.to_json())) == plain


def test_the_lowest_layer_stays_whole_while_the_budget_is_within_5_percent_of_it():
    steps = levels(LAYERS, [((60.0, 7.5), (100.0, 15.0))] * 3)
    whole_q = steps[1].bitrate
    assert past_last_resort(steps, 0, 0.96 * whole_q, 0.0) == 1  # 15 fps, slightly over
    assert past_last_resort(steps, 0, 0.8 * whole_q, 0.0) == 0  # far under: 7.5 fps
    assert past_last_resort(steps, 0, 0.96 * whole_q, 50_000.0) == 0  # others take room
    assert past_last_resort(steps, 0, None, 0.0) == 0
    assert past_last_resort(steps, 1, 10 * whole_q, 0.0) == 1  # not a last resort
    assert past_last_resort(steps, -1, 0.9 * whole_q, 0.0) == -1
