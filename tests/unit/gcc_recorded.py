"""Recorded Chromium transport-cc feedback (``tests/fixtures/chromium_transport_cc*.jsonl``)
as the estimator's input: each RTCP compound's transport-cc feedback parsed (``sfu/rtp/twcc.py``) and
joined with the send history into ``PacketResult`` lists, with when they arrived."""

from __future__ import annotations

import json
from pathlib import Path

from sfu.gcc.packet import PacketResult
from sfu.rtp.twcc import find_transport_feedback

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def parse_feedback(data: bytes) -> list[tuple[int, float | None]]:
    """(16-bit transport seq, arrival s or None) of every packet the transport-cc
    feedback packets of an RTCP compound report (``sfu.rtp.twcc``)."""
    return [
        ((feedback.base_seq + i) & 0xFFFF, arrival)
        for feedback in find_transport_feedback(data)
        for i, arrival in enumerate(feedback.arrivals)
    ]


def recorded(name: str) -> list[tuple[float, list[PacketResult]]]:
    """(when the feedback arrived, s; what it reports) of a fixture, in arrival order."""
    lines = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]
    sent = {s["sent"][0]: s["sent"] for s in lines if "sent" in s}
    feedback = []
    for line in lines:
        if "rtcp" not in line:
            continue
        results = []
        for seq, arrival in parse_feedback(bytes.fromhex(line["rtcp"])):
            if seq in sent:
                _, send_ms, size = sent[seq][:3]
                results.append(PacketResult(seq, send_ms / 1000, size, arrival))
        feedback.append((line["t_ms"] / 1000, sorted(results, key=lambda r: r.seq)))
    return feedback


def through_bottleneck(
    feedback: list[tuple[float, list[PacketResult]]], rate: float, burst: int = 15_000
) -> list[tuple[float, list[PacketResult]]]:
    """The recorded packets re-timed through a token bucket of ``rate`` bit/s (``burst``
    bytes, 150 ms of queue): what the receiver would have reported had the path been
    that narrow. Each feedback is delivered once its newest packet could have arrived."""
    offset = min(p.arrival - p.send_time for _, r in feedback for p in r if p.arrival is not None)
    tokens, clock, last = float(burst), 0.0, 0.0
    out = []
    for now, results in feedback:
        timed = []
        for p in results:
            start = max(p.send_time, last)
            tokens = min(burst, tokens + (start - clock) * rate / 8)
            depart = start if tokens >= p.size else start + (p.size - tokens) * 8 / rate
            if p.arrival is None or depart - p.send_time > 0.15:
                timed.append(PacketResult(p.seq, p.send_time, p.size, None))
                continue
            tokens, clock, last = max(0.0, tokens - p.size), depart, depart
            timed.append(PacketResult(p.seq, p.send_time, p.size, depart + offset))
        arrivals = [p.arrival - offset for p in timed if p.arrival is not None]
        out.append((max([now, *(a + 0.02 for a in arrivals)]), timed))
    return out
