"""The subscriber's own link loss: what its receiver reports lost, less the sequence
numbers the SFU never sent because they were lost before it (``Forwarder.link_loss``)."""

from __future__ import annotations

from sfu.forwarder import EgressParams, Forwarder
from sfu.rtp.packet import RtpView
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, RecordingSink, rtp


def _audio() -> tuple[Source, Forwarder, RecordingSink]:
    sink = RecordingSink()
    source = Source(SourceParams("mic", "audio", "opus", 48000, 111, 0x5555), RecordingOwner())
    fwd = Forwarder([source], sink, "sub")
    fwd.configure(EgressParams("1", 111, 0xA0, None, None, {}))
    fwd.set_target(source, 0.0)
    return source, fwd, sink


def test_gaps_from_upstream_are_counted_and_late_fills_taken_back() -> None:
    source, fwd, sink = _audio()
    for seq in (100, 101, 104, 105):  # 102 and 103 lost upstream
        source.on_rtp(RtpView(rtp(seq, 960 * seq, ssrc=0x5555, pt=111)), 0.0)
    assert fwd.rewriter.skipped == 2
    source.on_rtp(RtpView(rtp(103, 960 * 103, ssrc=0x5555, pt=111)), 0.0)  # late
    assert fwd.rewriter.skipped == 1
    assert len(sink.packets) == 5


def test_link_loss_excludes_what_was_lost_upstream() -> None:
    source, fwd, sink = _audio()
    seq = 1000
    for _ in range(50):
        source.on_rtp(RtpView(rtp(seq, 960 * seq, ssrc=0x5555, pt=111)), 0.0)
        seq += 1
    first = RtpView(sink.packets[0]).seq
    last = RtpView(sink.packets[-1]).seq
    assert fwd.link_loss(last, 0) is None  # the first report only sets the mark
    # 100 more input packets, 10 of them lost upstream
    for i in range(100):
        if i % 10 != 3:
            source.on_rtp(RtpView(rtp(seq, 960 * seq, ssrc=0x5555, pt=111)), 0.0)
        seq += 1
    last2 = RtpView(sink.packets[-1]).seq
    assert (last2 - first) & 0xFFFF == 149
    # the receiver lost 5 more on its own link: it reports 15 lost in 100 expected
    assert fwd.link_loss(last + 100, 15) == 0.05
    # a report that says nothing new, and one whose counter went back (duplicates)
    assert fwd.link_loss(last + 100, 15) is None
    assert fwd.link_loss(last + 110, 10) == 0.0
