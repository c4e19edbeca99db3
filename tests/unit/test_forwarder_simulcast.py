"""A Forwarder switching between simulcast layers: keyframe gate, continuity, no flapping."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.forwarder import EgressParams, Forwarder
from sfu.rtp.extensions import MID_URI
from sfu.rtp.packet import RtpView, Vp8Descriptor
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp, vp8_payload

SSRCS = {"q": 0x1000, "h": 0x2000, "f": 0x3000}
SIZES = {"q": (320, 180), "h": (640, 360), "f": (1280, 720)}
PER_FRAME = {"q": 1, "h": 2, "f": 3}


class Publisher:
    """Three layers of one simulcast track, each with its own seq/ts/picture id."""

    def __init__(self) -> None:
        self.owner = RecordingOwner()
        self.layers = {
            rid: Source(
                SourceParams("cam", "video", "vp8", 90000, 96, ssrc, mid="0", rid=rid),
                self.owner,
                keyframe_interval=0.0,
            )
            for rid, ssrc in SSRCS.items()
        }
        # independent random-looking bases per layer, as browsers use
        self.seq = {"q": 65000, "h": 100, "f": 30000}
        self.ts = {"q": 4_294_000_000, "h": 1000, "f": 2_000_000_000}
        self.pid = {"q": 32700, "h": 5, "f": 20000}
        self.tl0 = {"q": 250, "h": 3, "f": 100}

    def frame(self, rid: str, now: float, keyframe: bool = False) -> list[RtpView]:
        """Send one frame of ``rid``; returns its packets."""
        n = PER_FRAME[rid]
        w, h = SIZES[rid]
        packets = []
        for i in range(n):
            payload = vp8_payload(
                keyframe=keyframe and i == 0,
                start=i == 0,
                picture_id=self.pid[rid],
                tl0picidx=self.tl0[rid],
                tid=0,
                body=f"{rid}{self.pid[rid]}.{i}".encode(),
                width=w,
                height=h,
            )
            data = rtp(
                self.seq[rid],
                self.ts[rid],
                ssrc=SSRCS[rid],
                pt=96,
                payload=payload,
                marker=int(i == n - 1),
            )
            self.seq[rid] = (self.seq[rid] + 1) & 0xFFFF
            packets.append(RtpView(data))
        self.ts[rid] = (self.ts[rid] + 3000) & 0xFFFFFFFF
        self.pid[rid] = (self.pid[rid] + 1) & 0x7FFF
        self.tl0[rid] = (self.tl0[rid] + 1) & 0xFF
        return packets

    def send(self, rid: str, packets: list[RtpView], now: float) -> None:
        for pkt in packets:
            self.layers[rid].on_rtp(pkt, now)


def setup() -> tuple[Publisher, RecordingSink, Forwarder]:
    pub = Publisher()
    sink = RecordingSink()
    fwd = Forwarder(list(pub.layers.values()), sink, "sub")
    fwd.configure(EgressParams("3", 100, 0xABCD, None, None, {MID_URI: 4}))
    return pub, sink, fwd


def body(view: RtpView) -> bytes:
    """The test body of a packet: layer letter, picture id, packet index (``f12.0``)."""
    found = re.search(rb"[qhf]\d+\.\d$", view.data[view.payload_start : view.payload_end])
    assert found is not None
    return found.group()


def check_continuous(views: list[RtpView]) -> None:
    """One outgoing stream: seq +1 each packet, timestamps never go back, picture id and
    TL0PICIDX step by one per frame."""
    for a, b in zip(views, views[1:], strict=False):
        assert b.seq == (a.seq + 1) & 0xFFFF
        assert b.ssrc == a.ssrc == 0xABCD
        assert 0 <= (b.timestamp - a.timestamp) & 0xFFFFFFFF < 0x80000000
        da = Vp8Descriptor(a.data, a.payload_start, a.payload_end)
        db = Vp8Descriptor(b.data, b.payload_start, b.payload_end)
        if b.timestamp != a.timestamp:
            assert db.picture_id == (da.picture_id + 1) & 0x7FFF
            assert db.tl0picidx == (da.tl0picidx + 1) & 0xFF
        else:
            assert db.picture_id == da.picture_id


def test_a_layer_nobody_wants_gets_no_forwarder():
    pub, sink, fwd = setup()
    fwd.set_target(pub.layers["h"], 0.0)
    assert fwd in pub.layers["h"].forwarders
    assert fwd not in pub.layers["q"].forwarders and fwd not in pub.layers["f"].forwarders
    assert pub.owner.keyframe_requests == [pub.layers["h"]]


def test_switch_waits_for_the_target_keyframe_and_keeps_the_stream_continuous():
    pub, sink, fwd = setup()
    fwd.set_target(pub.layers["q"], 0.0)
    t = 0.0
    for i in range(5):
        for rid in "qhf":
            pub.send(rid, pub.frame(rid, t, keyframe=i == 0), t)
        t += 1 / 30
    assert {body(v)[:1] for v in sink.views()} == {b"q"}
    assert fwd.current is pub.layers["q"] and len(sink.packets) == 5
    fwd.set_target(pub.layers["f"], t)
    assert pub.owner.keyframe_requests[-1] is pub.layers["f"]
    for _ in range(3):  # f sends delta frames: q keeps flowing
        for rid in "qhf":
            pub.send(rid, pub.frame(rid, t), t)
        t += 1 / 30
    assert fwd.current is pub.layers["q"] and len(sink.packets) == 8
    pub.send("q", pub.frame("q", t), t)
    pub.send("f", pub.frame("f", t, keyframe=True), t)
    t += 1 / 30
    pub.send("q", pub.frame("q", t), t)  # not forwarded any more
    pub.send("f", pub.frame("f", t), t)
    assert fwd.current is pub.layers["f"] and fwd.layer_switches == 1
    assert fwd not in pub.layers["q"].forwarders
    views = sink.views()
    assert len(views) == 9 + 3 + 3
    assert all(body(v).startswith(b"f") for v in views[9:])
    check_continuous(views)
    assert sink.layers == [(pub.layers["q"], pub.layers["q"]), (pub.layers["f"], pub.layers["f"])]


def test_switch_lets_the_old_layer_finish_its_frame():
    """Chromium's pacer interleaves layers: a keyframe of the new layer may arrive while a
    frame of the old one is half sent. The old frame ends first, then the switch."""
    pub, sink, fwd = setup()
    fwd.set_target(pub.layers["f"], 0.0)
    pub.send("f", pub.frame("f", 0.0, keyframe=True), 0.0)
    fwd.set_target(pub.layers["h"], 0.03)
    f_frame = pub.frame("f", 0.03)
    h_key = pub.frame("h", 0.03, keyframe=True)
    pub.send("f", f_frame[:1], 0.03)
    pub.send("h", h_key, 0.031)  # arrives mid-frame of f
    assert fwd.current is pub.layers["f"]
    pub.send("f", f_frame[1:], 0.032)
    assert fwd.current is pub.layers["h"]
    views = sink.views()
    assert [body(v)[:1] for v in views] == [b"f"] * 6 + [b"h"] * 2
    check_continuous(views)


def test_switch_happens_anyway_when_the_old_frame_never_ends():
    pub, sink, fwd = setup()
    fwd.set_target(pub.layers["f"], 0.0)
    pub.send("f", pub.frame("f", 0.0, keyframe=True), 0.0)
    fwd.set_target(pub.layers["q"], 0.03)
    pub.send("f", pub.frame("f", 0.03)[:1], 0.03)  # the rest is lost
    pub.send("q", pub.frame("q", 0.03, keyframe=True), 0.031)
    assert fwd.current is pub.layers["f"]
    pub.send("q", pub.frame("q", 0.2), 0.2)  # held too long: switch, flush in order
    assert fwd.current is pub.layers["q"]
    views = sink.views()
    assert [body(v)[:1] for v in views] == [b"f"] * 4 + [b"q"] * 2
    assert views[4].seq == (views[3].seq + 1) & 0xFFFF


def test_a_cut_switch_down_stops_the_old_layer_at_its_next_frame():
    """A switch down under congestion (``cut``): the old layer no longer fits the link,
    so its frames stop at once (from the next frame: the one in flight ends) instead of
    flowing until the target's keyframe; the stream stays continuous."""
    pub, sink, fwd = setup()
    fwd.set_target(pub.layers["f"], 0.0)
    pub.send("f", pub.frame("f", 0.0, keyframe=True), 0.0)
    f_frame = pub.frame("f", 0.03)
    pub.send("f", f_frame[:1], 0.03)
    fwd.set_target(pub.layers["q"], 0.031, cut=True)
    pub.send("f", f_frame[1:], 0.032)  # the frame in flight ends
    for i in range(3):  # f's next frames are not sent while q's keyframe is awaited
        pub.send("f", pub.frame("f", 0.06 + i / 30), 0.06 + i / 30)
    assert [body(v)[:1] for v in sink.views()] == [b"f"] * 6
    assert fwd.current is pub.layers["f"]
    pub.send("q", pub.frame("q", 0.2, keyframe=True), 0.2)
    pub.send("f", pub.frame("f", 0.2), 0.2)
    pub.send("q", pub.frame("q", 0.23), 0.23)
    assert fwd.current is pub.layers["q"]
    views = sink.views()
    assert [body(v)[:1] for v in views] == [b"f"] * 6 + [b"q"] * 2
    check_continuous(views)


def test_without_cut_the_old_layer_flows_until_the_target_keyframe():
    pub, sink, fwd = setup()
    fwd.set_target(pub.layers["f"], 0.0)
    pub.send("f", pub.frame("f", 0.0, keyframe=True), 0.0)
    fwd.set_target(pub.layers["q"], 0.03)
    for i in range(3):
        pub.send("f", pub.frame("f", 0.03 + i / 30), 0.03 + i / 30)
    assert [body(v)[:1] for v in sink.views()] == [b"f"] * 12


def test_pause_detaches_and_resume_continues_without_gap():
    pub, sink, fwd = setup()
    fwd.set_target(pub.layers["h"], 0.0)
    pub.send("h", pub.frame("h", 0.0, keyframe=True), 0.0)
    fwd.set_target(None, 0.1)
    assert all(fwd not in s.forwarders for s in pub.layers.values())
    assert fwd.current is None and sink.layers[-1] == (None, None)
    for i in range(10):
        pub.send("h", pub.frame("h", 0.1 + i / 30), 0.1 + i / 30)
    assert len(sink.packets) == 2
    fwd.set_target(pub.layers["q"], 1.0)
    pub.send("q", pub.frame("q", 1.0, keyframe=True), 1.0)
    views = sink.views()
    assert len(views) == 3
    check_continuous(views)


def test_nack_after_a_switch_repairs_only_the_current_layer():
    pub, sink, fwd = setup()
    fwd.set_target(pub.layers["q"], 0.0)
    pub.send("q", pub.frame("q", 0.0, keyframe=True), 0.0)
    fwd.set_target(pub.layers["h"], 0.1)
    pub.send("h", pub.frame("h", 0.1, keyframe=True), 0.1)
    old, new = sink.views()[0].seq, sink.views()[1].seq
    assert fwd.on_nack([old], 0.2)[0] == 0  # timestamps of the old layer no longer map
    assert fwd.on_nack([new], 0.2)[0] == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("qhf"), st.integers(0, 2)), min_size=1, max_size=25))
def test_random_switches_keep_one_continuous_stream(plan):
    """Whatever the sequence of targets, the subscriber sees one continuous stream."""
    pub, sink, fwd = setup()
    t = 0.0
    for n, (rid, wait) in enumerate(plan):
        fwd.set_target(pub.layers[rid], t)
        for k in range(wait + 2):
            for layer in "qhf":
                # a keyframe on the target layer after a while, as a PLI would bring
                key = n == 0 or (layer == rid and k == wait)
                pub.send(layer, pub.frame(layer, t, keyframe=key), t)
            t += 1 / 30
    views = sink.views()
    assert views
    check_continuous(views)
    assert fwd.current is pub.layers[plan[-1][0]]


def test_a_cut_layer_is_not_retransmitted_while_the_target_keyframe_is_awaited():
    """After a cut (the link no longer carries the old layer) the subscriber NACKs what
    the full bottleneck dropped of it; resending that would only queue ahead of the new
    layer's keyframe: nothing is resent until the switch, then the new layer's packets
    are."""
    pub, sink, fwd = setup()
    fwd.configure(EgressParams("3", 100, 0xABCD, 101, 0xABCE, {MID_URI: 4}))
    fwd.set_target(pub.layers["f"], 0.0)
    pub.send("f", pub.frame("f", 0.0, keyframe=True), 0.0)
    sent = [v.seq for v in sink.views()]
    assert fwd.on_nack(sent[:1], 0.01)[0] == 1  # (before the cut: resent)
    fwd.set_target(pub.layers["q"], 0.031, cut=True)
    assert fwd.on_nack(sent, 0.04) == (0, 0)
    pub.send("f", pub.frame("f", 0.06), 0.06)  # the next frame starts: broken until q's key
    assert fwd.on_nack(sent, 0.07) == (0, 0)
    pub.send("q", pub.frame("q", 0.1, keyframe=True), 0.1)
    assert fwd.current is pub.layers["q"]
    q_seq = sink.views()[-1].seq
    assert fwd.on_nack([q_seq], 0.12)[0] == 1
