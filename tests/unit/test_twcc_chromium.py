"""Real transport-cc feedback from Chromium (tests/fixtures/chromium_transport_cc.jsonl:
Parley stamped every packet it sent a Chromium subscriber, Chromium reported them) read
by sfu/rtp/twcc.py and joined with the send history by sfu/twcc_feedback.py."""

from __future__ import annotations

import json
from pathlib import Path

from sfu.rtp.twcc import find_transport_feedback
from sfu.twcc_feedback import TransportFeedbackAdapter

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "chromium_transport_cc.jsonl"


def load() -> tuple[dict[str, object], list[bytes], dict[int, tuple[int, float, int]]]:
    lines = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    header = lines[0]
    compounds = [bytes.fromhex(x["rtcp"]) for x in lines[1:] if "rtcp" in x]
    sent = {}
    for x in lines[1:]:
        if "sent" in x:
            seq, ms, size = x["sent"]
            sent[seq & 0xFFFF] = (seq, ms / 1000, size)
    return header, compounds, sent


def test_every_stamped_packet_is_reported_received_once() -> None:
    header, compounds, sent = load()
    assert len(compounds) == header["feedback_compounds"] and len(sent) == header["sent_packets"]
    feedbacks = [fb for c in compounds for fb in find_transport_feedback(c)]
    assert len(feedbacks) >= len(compounds)
    assert {fb.sender_ssrc for fb in feedbacks} == {0xFA17FA17}  # Chromium's feedback SSRC
    counts = [fb.fb_count for fb in feedbacks]
    assert counts == list(range(counts[0], counts[0] + len(counts)))
    adapter = TransportFeedbackAdapter()
    results = [r for fb in feedbacks for r in adapter.on_feedback(fb, sent.get)]
    assert adapter.unknown == 0 and adapter.ignored == 0
    assert sorted(r.seq for r in results) == sorted(seq for seq, _, _ in sent.values())
    assert all(r.received for r in results)  # loopback: nothing lost
    assert [r.size for r in results] == [sent[r.seq & 0xFFFF][2] for r in results]


def test_arrivals_follow_send_times_on_loopback() -> None:
    """On loopback the one-way delay barely varies: arrival - send is near constant.
    (Misread deltas or reference times would spread it by 64 ms steps or more.)"""
    _, compounds, sent = load()
    adapter = TransportFeedbackAdapter()
    results = [
        r
        for c in compounds
        for fb in find_transport_feedback(c)
        for r in adapter.on_feedback(fb, sent.get)
    ]
    delays = sorted(r.arrival - r.send_time for r in results if r.arrival is not None)
    spread = [d - delays[0] for d in delays]
    assert spread[len(spread) // 2] < 0.005
    assert spread[-1] < 0.05
