"""Recorded Chromium transport-cc feedback (``tests/fixtures/chromium_transport_cc*.jsonl``)
as the estimator's input: each RTCP compound's transport-cc feedback parsed (a small
parser of the test's own, per draft-holmer-rmcat-transport-wide-cc-extensions-01) and
joined with the send history into ``PacketResult`` lists, with when they arrived."""

from __future__ import annotations

import json
from pathlib import Path

from sfu.gcc.packet import PacketResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def parse_feedback(data: bytes) -> list[tuple[int, float | None]]:
    """(16-bit transport seq, arrival s or None) of every packet the transport-cc
    feedback packets of an RTCP compound report."""
    out: list[tuple[int, float | None]] = []
    offset = 0
    while offset + 4 <= len(data):
        fmt, pt = data[offset] & 0x1F, data[offset + 1]
        length = (int.from_bytes(data[offset + 2 : offset + 4], "big") + 1) * 4
        if pt == 205 and fmt == 15:
            out += _transport_cc(data[offset + 12 : offset + length])
        offset += length
    return out


def _transport_cc(body: bytes) -> list[tuple[int, float | None]]:
    base = int.from_bytes(body[0:2], "big")
    count = int.from_bytes(body[2:4], "big")
    reference = int.from_bytes(body[4:7], "big", signed=True) * 0.064
    pos = 8
    statuses: list[int] = []
    while len(statuses) < count:
        chunk = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
        if chunk >> 15 == 0:  # run length
            statuses += [(chunk >> 13) & 3] * (chunk & 0x1FFF)
        elif (chunk >> 14) & 1 == 0:  # 14 one-bit symbols
            statuses += [(chunk >> (13 - i)) & 1 for i in range(14)]
        else:  # 7 two-bit symbols
            statuses += [(chunk >> (12 - 2 * i)) & 3 for i in range(7)]
    time = reference
    out: list[tuple[int, float | None]] = []
    for i, status in enumerate(statuses[:count]):
        arrival = None
        if status == 1:
            time += body[pos] * 0.00025
            pos += 1
            arrival = time
        elif status == 2:
            time += int.from_bytes(body[pos : pos + 2], "big", signed=True) * 0.00025
            pos += 2
            arrival = time
        out.append(((base + i) & 0xFFFF, arrival))
    return out


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
