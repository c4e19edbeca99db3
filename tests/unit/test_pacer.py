"""Pacing (``sfu/pacer.py``) and the forwarder's whole-frame drops when its queue is full."""

from __future__ import annotations

import pytest

from sfu.bwe import BandwidthEstimator
from sfu.forwarder import EgressParams, Forwarder
from sfu.pacer import Pacer, PacerSettings, TokenBucket
from sfu.rtp.packet import RtpView, Vp8Descriptor
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp
from tests.unit.test_forwarder_simulcast import body, setup

PACKET = bytes(1000)


def test_without_a_cap_everything_goes_at_once() -> None:
    pacer = Pacer()
    assert not pacer.active
    assert all(pacer.offer(PACKET, 0.0) for _ in range(1000))
    assert pacer.has_room() and not pacer.queue


def test_with_a_cap_video_leaves_at_the_pacing_rate() -> None:
    pacer = Pacer(PacerSettings(factor=1.0, max_delay=10.0))
    pacer.set_rate(800_000, 0.0)  # 100 kB/s
    sent_now = sum(pacer.offer(PACKET, 0.0) for _ in range(200))
    assert sent_now <= 2  # the first packets ride on the initial tokens only
    sent, t = sent_now, 0.0
    while t < 1.0:
        t += 0.005
        sent += len(pacer.due(t))
    # one second at 100 kB/s: about 100 packets of 1 kB, in order
    assert 95 <= sent <= 105, sent
    assert pacer.paced_packets == 200 - sent_now
    assert pacer.queued_bytes == len(pacer.queue) * len(PACKET)


def test_an_idle_pacer_saves_up_only_a_short_burst() -> None:
    pacer = Pacer(PacerSettings(factor=1.0, burst=0.01))
    pacer.set_rate(8_000_000, 0.0)  # 1 MB/s: 10 ms is 10 kB
    pacer.due(10.0)  # ten idle seconds
    at_once = 0
    while pacer.offer(PACKET, 10.0):
        at_once += 1
    assert 10 <= at_once <= 11


def test_a_late_tick_catches_up_a_little_not_a_whole_stall() -> None:
    pacer = Pacer(PacerSettings(factor=1.0, tick=0.005, max_delay=10.0))
    pacer.set_rate(8_000_000, 0.0)
    for _ in range(2000):
        pacer.offer(PACKET, 0.0)
    released = len(pacer.due(1.0))  # the loop was stuck for a second
    assert released <= 25  # 4 ticks (20 ms) at 1 MB/s, not 1000 packets at once


def test_the_queue_budget_is_max_delay_at_the_pacing_rate() -> None:
    pacer = Pacer(PacerSettings(factor=1.0, max_delay=0.3, min_queue_bytes=4000))
    pacer.set_rate(400_000, 0.0)  # 50 kB/s: a 15 kB budget
    assert pacer.limit() == 15_000
    while pacer.offer(PACKET, 0.0):
        pass  # the initial tokens are spent; the packet that found none is queued
    for _ in range(13):
        pacer.offer(PACKET, 0.0)
    assert pacer.has_room()
    pacer.offer(PACKET, 0.0)
    assert not pacer.has_room() and pacer.overflows == 1
    assert pacer.delay() == pytest.approx(0.3, abs=0.03)


def test_a_queue_left_when_the_cap_is_lifted_drains_then_pacing_stops() -> None:
    pacer = Pacer(PacerSettings(factor=1.0))
    pacer.set_rate(800_000, 0.0)
    for _ in range(10):
        pacer.offer(PACKET, 0.0)
    pacer.set_rate(None, 0.0)
    assert pacer.active and pacer.byte_rate is not None
    t = 0.0
    while pacer.queue:
        t += 0.005
        pacer.due(t)
    assert not pacer.active
    assert pacer.offer(PACKET, t)


def test_overflow_lowers_the_estimate_at_most_once_per_interval() -> None:
    bwe = BandwidthEstimator()
    bwe.on_sent(1_000_000, 0.0)
    assert bwe.on_overflow(1.0)
    assert bwe.estimate(1.0) == pytest.approx(850_000)
    assert not bwe.on_overflow(1.5)  # within decrease_interval
    assert bwe.congested(1.5) and bwe.may_pause(1.5)


# ------------------------------------------------------------ forwarder drops


def _descriptor(view: RtpView) -> Vp8Descriptor:
    return Vp8Descriptor(view.data, view.payload_start, view.payload_end)


def test_a_frame_without_room_is_dropped_whole_and_the_stream_waits_for_a_keyframe() -> None:
    pub, sink, fwd = setup()  # "h": two packets per frame
    fwd.set_target(pub.layers["h"], 0.0)
    t = 0.0
    pub.send("h", pub.frame("h", t, keyframe=True), t)
    pub.send("h", pub.frame("h", t), t)
    assert len(sink.packets) == 4
    first = pub.frame("h", t)
    pub.send("h", first[:1], t)  # a frame has started: it is finished whatever happens
    sink.room = False
    pub.send("h", first[1:], t)
    assert len(sink.packets) == 6
    pub.send("h", pub.frame("h", t), t)  # no room at its start: dropped whole
    assert len(sink.packets) == 6 and fwd.frames_dropped == 1 and sink.frames_dropped == [t]
    requests = len(pub.owner.keyframe_requests)
    t += 0.1
    pub.send("h", pub.frame("h", t), t)  # still no room: no keyframe asked for yet
    assert len(pub.owner.keyframe_requests) == requests and fwd.frames_dropped == 2
    sink.room = True
    t += 1.0
    pub.send("h", pub.frame("h", t), t)  # a delta frame: still broken, dropped
    assert len(sink.packets) == 6
    assert pub.owner.keyframe_requests[requests:] == [pub.layers["h"]]  # room: ask now
    pub.send("h", pub.frame("h", t, keyframe=True), t)  # the keyframe resumes
    pub.send("h", pub.frame("h", t), t)
    views = sink.views()
    assert len(views) == 10
    # sequence numbers stay continuous (the receiver NACKs nothing that was dropped)
    assert all(b.seq == (a.seq + 1) & 0xFFFF for a, b in zip(views, views[1:], strict=False))
    # whole frames only: every frame sent has both its packets
    bodies = [body(v) for v in views]
    frames = {b.split(b".")[0] for b in bodies}
    assert all(bodies.count(f + b".0") == 1 and bodies.count(f + b".1") == 1 for f in frames)
    # the picture id skips the dropped frames: the receiver can see frames are missing
    pids = [_descriptor(v).picture_id for v in views[::2]]
    assert pids[3] - pids[2] == 4


def test_audio_is_never_held_back() -> None:
    sink = RecordingSink()
    sink.room = False
    source = Source(SourceParams("mic", "audio", "opus", 48000, 111, 0x5555), RecordingOwner())
    fwd = Forwarder([source], sink, "sub")
    fwd.configure(EgressParams("1", 111, 0xA0, None, None, {}))
    fwd.set_target(source, 0.0)
    for i in range(10):
        source.on_rtp(RtpView(rtp(100 + i, 960 * i, ssrc=0x5555, pt=111)), i * 0.02)
    assert len(sink.packets) == 10


def test_token_bucket_refills_up_to_its_capacity_and_carries_debt() -> None:
    bucket = TokenBucket()
    assert bucket.refill(1000.0, 500.0, 0.1) == 100.0  # 0.1 s at 1000 B/s
    assert bucket.refill(1000.0, 500.0, 10.0) == 500.0  # capped
    bucket.spend(700.0)
    assert bucket.tokens == -200.0  # a debt the next refills pay
    assert bucket.refill(None, 500.0, 11.0) == -200.0  # no rate: nothing added
    assert bucket.refill(1000.0, 500.0, 10.5) == -200.0  # time went backwards: nothing
    assert bucket.refill(1000.0, 500.0, 10.6) == pytest.approx(-100.0)


def test_a_stream_that_switched_layer_loses_what_is_queued_of_it_and_nothing_else() -> None:
    def packet(ssrc: int, size: int = 1000) -> bytes:
        return b"\x80\x60\x00\x01" + b"\x00" * 4 + ssrc.to_bytes(4, "big") + bytes(size - 12)

    pacer = Pacer()
    pacer.set_rate(80_000, 0.0)
    queued = [packet(1), packet(2), packet(1), packet(2, 500)]
    for p in queued:
        pacer.offer(p, 0.0)
    assert len(pacer.queue) >= 3
    before = list(pacer.queue)
    assert pacer.drop_stream(1) == sum(1 for p in before if p[8:12] == b"\x00\x00\x00\x01")
    assert all(p[8:12] == b"\x00\x00\x00\x02" for p in pacer.queue)
    assert pacer.queued_bytes == sum(len(p) for p in pacer.queue)
    assert pacer.drop_stream(1) == 0


def test_hold_sends_no_video_for_that_long_then_paces_again() -> None:
    pacer = Pacer(PacerSettings(factor=1.0))
    pacer.set_rate(800_000, 0.0)  # 100 kB/s
    assert pacer.offer(b"x" * 1000, 0.05)  # tokens saved up: at once
    pacer.hold(0.15, 0.06)
    assert not pacer.offer(b"k" * 1000, 0.07)  # the new layer's keyframe waits
    assert pacer.due(0.15) == []
    assert pacer.due(0.2) == []
    assert pacer.due(0.23) == [b"k" * 1000]


def test_a_lower_rate_during_a_hold_does_not_prolong_it() -> None:
    """A cut holds video 0.3 s; the estimate halves 0.1 s later (the second decrease of
    an onset): the new layer's keyframe still leaves when the hold ends. (As a debt at
    the first rate it left 0.3 s late: 0.6 s of the second rate's refills.)"""
    pacer = Pacer(PacerSettings(factor=1.0))
    pacer.set_rate(800_000, 0.0)
    pacer.hold(0.3, 0.1)
    assert not pacer.offer(b"k" * 1000, 0.12)
    pacer.set_rate(400_000, 0.2)
    assert pacer.due(0.39) == []
    assert pacer.due(0.41) == [b"k" * 1000]


def test_what_piles_up_during_a_hold_is_not_an_overflow() -> None:
    pacer = Pacer(PacerSettings(factor=1.0, max_delay=0.05, min_queue_bytes=1000))
    pacer.set_rate(800_000, 0.0)  # 100 kB/s: a 5 kB budget
    pacer.hold(0.15, 0.05)
    for i in range(15):  # 0.15 s of frames at the pacing rate
        assert pacer.has_room(), i
        assert not pacer.offer(b"v" * 1000, 0.05 + i * 0.01)
    assert pacer.overflows == 0
    released = []
    for k in range(40):
        released += pacer.due(0.2 + k * 0.01)
    assert len(released) == 15 and not pacer.queue
    for _ in range(6):  # drained: the allowance is gone, the budget is 5 kB again
        pacer.queue.append(b"v" * 1000)
        pacer.queued_bytes += 1000
    assert not pacer.has_room()


def test_hold_does_nothing_without_a_rate() -> None:
    pacer = Pacer()
    pacer.hold(0.15, 0.0)
    assert pacer.offer(b"x" * 1000, 0.01)
