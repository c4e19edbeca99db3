"""Real transport-cc feedback from Chromium (tests/fixtures/chromium_transport_cc*.jsonl:
Parley stamped every packet it sent a Chromium subscriber, Chromium reported them) read
by sfu/rtp/twcc.py and joined with the send history by sfu/twcc_feedback.py."""

from __future__ import annotations

import json
from pathlib import Path

from sfu.gcc.packet import PacketResult
from sfu.rtp.twcc import TransportFeedback, find_transport_feedback
from sfu.twcc_feedback import TransportFeedbackAdapter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: the C path, nothing lost; the Python path with 5 % of datagrams dropped at send
CLEAN = FIXTURES / "chromium_transport_cc.jsonl"
LOSSY = FIXTURES / "chromium_transport_cc_loss.jsonl"


class Capture:
    def __init__(self, path: Path) -> None:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        self.header = lines[0]
        compounds = [bytes.fromhex(x["rtcp"]) for x in lines[1:] if "rtcp" in x]
        self.compounds = compounds
        self.feedbacks: list[TransportFeedback] = [
            fb for c in compounds for fb in find_transport_feedback(c)
        ]
        #: seq16 -> (seq, send time s, size), as the egress's history answers
        self.history: dict[int, tuple[int, float, int]] = {}
        #: seq -> (datagrams sent, dropped) where the capture says
        self.copies: dict[int, tuple[int, int]] = {}
        for x in lines[1:]:
            if "sent" in x:
                seq, ms, size, *copies = x["sent"]
                self.history[seq & 0xFFFF] = (seq, ms / 1000, size)
                if copies:
                    self.copies[seq] = (copies[0], copies[1])

    def results(self) -> tuple[TransportFeedbackAdapter, list[PacketResult]]:
        adapter = TransportFeedbackAdapter()
        out = [r for fb in self.feedbacks for r in adapter.on_feedback(fb, self.history.get)]
        return adapter, out


def test_every_stamped_packet_is_reported_received_once() -> None:
    capture = Capture(CLEAN)
    assert len(capture.compounds) == capture.header["feedback_compounds"]
    assert len(capture.history) == capture.header["sent_packets"]
    assert {fb.sender_ssrc for fb in capture.feedbacks} == {0xFA17FA17}  # Chromium's
    counts = [fb.fb_count for fb in capture.feedbacks]
    assert counts == list(range(counts[0], counts[0] + len(counts)))
    adapter, results = capture.results()
    assert adapter.unknown == 0 and adapter.ignored == 0
    assert sorted(r.seq for r in results) == sorted(s for s, _, _ in capture.history.values())
    assert all(r.received for r in results)  # loopback: nothing lost
    assert [r.size for r in results] == [capture.history[r.seq & 0xFFFF][2] for r in results]


def test_chromium_reports_lost_exactly_what_never_left() -> None:
    """A packet is reported lost iff every datagram of it was dropped (audio sent twice
    under one number arrives when one copy does); 1-bit and 2-bit status vectors."""
    capture = Capture(LOSSY)
    kinds = set()
    for c in capture.compounds:
        pos = 0
        while pos + 4 <= len(c):
            if c[pos + 1] == 205 and c[pos] & 0x1F == 15:
                count, got, at = int.from_bytes(c[pos + 14 : pos + 16], "big"), 0, pos + 20
                while got < count:  # walk the packet chunks: 0 run, 2 one-bit, 3 two-bit
                    kind = c[at] >> 6 if c[at] & 0x80 else 0
                    kinds.add(kind)
                    got += (int.from_bytes(c[at : at + 2], "big") & 0x1FFF, 0, 14, 7)[kind]
                    at += 2
            pos += (int.from_bytes(c[pos + 2 : pos + 4], "big") + 1) * 4
    assert kinds == {0, 2, 3}
    adapter, results = capture.results()
    assert adapter.unknown == 0
    lost = {r.seq for r in results if not r.received}
    gone = {seq for seq, (sent, dropped) in capture.copies.items() if sent == dropped}
    reported = {r.seq for r in results}
    assert len(lost) >= 10
    assert lost == gone & reported
    twice = {seq for seq, (sent, _) in capture.copies.items() if sent == 2}
    assert len(twice) > 50 and len(results) == len(reported)  # one result per number


def test_arrivals_follow_send_times_on_loopback() -> None:
    """On loopback the one-way delay barely varies: arrival - send is near constant.
    (Misread deltas or reference times would spread it by 64 ms steps or more.)"""
    for path in (CLEAN, LOSSY):
        _, results = Capture(path).results()
        delays = sorted(r.arrival - r.send_time for r in results if r.arrival is not None)
        spread = [d - delays[0] for d in delays]
        assert spread[len(spread) // 2] < 0.005, path
        assert spread[-1] < 0.05, path
