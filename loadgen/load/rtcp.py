"""Receiver feedback of ``parley load``'s lean subscribers: RFC 3550 receiver reports and
generic NACKs (RFC 4585). Pure: times are arguments, packets come back as bytes.

The SFU's congestion control (``docs/congestion.md``) learns a subscriber's link from
what the subscriber reports. :class:`ReceiverFeedback` keeps, per SSRC received, the
statistics of RFC 3550 appendix A.3 (extended highest sequence number, cumulative and
interval loss) and the last sender report's time (LSR/DLSR), and builds one compound
receiver report for all of them. Packets are counted where they arrive: a packet
repaired by RTX arrives on the RTX SSRC, so a media SSRC's loss is the link's loss
before repair, as the SFU wants it. Jitter is reported as 0.

Video gaps are NACKed at once and again every :data:`NACK_RETRY` seconds, up to
:data:`NACK_TRIES` times in all, while younger than :data:`NACK_MAX_AGE`.
"""

from __future__ import annotations

import struct

from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtcpSrPacket

from sfu.rtp.rtcp import build_nack, parse_rtcp

#: Seconds between two NACKs of the same packet.
NACK_RETRY = 0.1
#: NACKs per missing packet at most.
NACK_TRIES = 3
#: A packet missing for longer than this (s) is no longer asked for.
NACK_MAX_AGE = 1.0
#: A forward jump larger than this starts the count afresh (a new stream, not a gap).
MAX_DROPOUT = 3000
#: At most this many packets of one gap are NACKed (the newest).
MAX_NACK_GAP = 128


class SsrcStats:
    """RFC 3550 A.3 receive statistics of one SSRC (duplicates excluded by the caller)."""

    __slots__ = (
        "base",
        "max_seq",
        "cycles",
        "received",
        "expected_prior",
        "received_prior",
        "lsr",
        "sr_at",
    )

    def __init__(self, seq: int) -> None:
        self.base = seq
        self.max_seq = seq
        self.cycles = 0
        self.received = 1
        self.expected_prior = 0
        self.received_prior = 0
        #: middle 32 bits of the last SR's NTP time, and when it arrived
        self.lsr = 0
        self.sr_at: float | None = None

    def update(self, seq: int) -> int:
        """Count one packet; returns how many sequence numbers it skipped (0: none or late)."""
        delta = (seq - self.max_seq) & 0xFFFF
        self.received += 1
        if delta == 0 or delta >= 0x8000:
            return 0  # late (reordered) or a repeat
        if delta > MAX_DROPOUT:  # a restart: count from here
            self.base = seq
            self.max_seq = seq
            self.cycles = 0
            self.received = 1
            self.expected_prior = self.received_prior = 0
            return 0
        if seq < self.max_seq:
            self.cycles += 0x10000
        self.max_seq = seq
        return delta - 1

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def report(self, ssrc: int, now: float) -> RtcpReceiverInfo:
        """A report block; starts the next interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-0x800000, min(0x7FFFFF, self.lost))
        dlsr = 0
        if self.sr_at is not None:
            dlsr = min(0xFFFFFFFF, int((now - self.sr_at) * 65536))
        return RtcpReceiverInfo(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=0,
            lsr=self.lsr,
            dlsr=dlsr,
        )


class ReceiverFeedback:
    """Receive statistics and NACK state of one subscriber's receiving connection."""

    def __init__(self, own_ssrc: int, nack: bool = True) -> None:
        self.own_ssrc = own_ssrc
        self.nack = nack
        self.stats: dict[int, SsrcStats] = {}
        #: SSRCs whose gaps are NACKed (video media streams)
        self.nack_ssrcs: set[int] = set()
        #: media SSRC -> seq -> (first missed at, NACKs sent, last sent at)
        self.missing: dict[int, dict[int, tuple[float, int, float]]] = {}
        self.nacks_sent = 0
        self.nacked_packets = 0
        self.reports_sent = 0

    def on_rtp(self, ssrc: int, seq: int, now: float) -> bytes | None:
        """One packet (not a duplicate) received on ``ssrc``; returns a NACK to send now,
        if it revealed a gap in a video stream."""
        stats = self.stats.get(ssrc)
        if stats is None:
            self.stats[ssrc] = SsrcStats(seq)
            return None
        skipped = stats.update(seq)
        if not self.nack or ssrc not in self.nack_ssrcs:
            return None
        missing = self.missing.get(ssrc)
        if skipped == 0:
            if missing:
                missing.pop(seq, None)  # arrived late
            return None
        if missing is None:
            missing = self.missing[ssrc] = {}
        count = min(skipped, MAX_NACK_GAP)
        seqs = [(seq - count + i) & 0xFFFF for i in range(count)]
        for s in seqs:
            missing[s] = (now, 1, now)
        self.nacks_sent += 1
        self.nacked_packets += len(seqs)
        return build_nack(self.own_ssrc, ssrc, seqs)

    def repaired(self, media_ssrc: int, seq: int) -> None:
        """An RTX packet brought ``seq`` of ``media_ssrc``: no more NACKs for it."""
        missing = self.missing.get(media_ssrc)
        if missing:
            missing.pop(seq, None)

    def pending(self) -> bool:
        return any(self.missing.values())

    def nack_retries(self, now: float) -> list[bytes]:
        """NACKs due again at ``now``; forgets packets too old or asked for enough."""
        out: list[bytes] = []
        for ssrc, missing in self.missing.items():
            due: list[int] = []
            for seq, (first, tries, last) in list(missing.items()):
                if now - first > NACK_MAX_AGE or tries >= NACK_TRIES:
                    del missing[seq]
                elif now - last >= NACK_RETRY - 1e-9:
                    missing[seq] = (first, tries + 1, now)
                    due.append(seq)
            if due:
                self.nacks_sent += 1
                self.nacked_packets += len(due)
                out.append(build_nack(self.own_ssrc, ssrc, due))
        return out

    def on_rtcp(self, data: bytes, now: float) -> None:
        """RTCP from the server: sender reports give LSR for the next report blocks."""
        for packet in parse_rtcp(data):
            if isinstance(packet, RtcpSrPacket):
                stats = self.stats.get(packet.ssrc)
                if stats is not None:
                    stats.lsr = (packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
                    stats.sr_at = now

    def receiver_reports(self, now: float) -> list[bytes]:
        """Receiver reports for every SSRC received (31 report blocks per packet at most)."""
        blocks = [stats.report(ssrc, now) for ssrc, stats in self.stats.items()]
        out = []
        for i in range(0, len(blocks), 31):
            out.append(bytes(RtcpRrPacket(ssrc=self.own_ssrc, reports=blocks[i : i + 31])))
        self.reports_sent += len(out)
        return out


def rtp_header(data: bytes) -> tuple[int, int, int]:
    """``(payload type, sequence number, SSRC)`` of an RTP packet."""
    _, marker_pt, seq, _, ssrc = struct.unpack_from("!BBHII", data)
    return marker_pt & 0x7F, seq, ssrc


def rtx_original_seq(data: bytes) -> int | None:
    """The original sequence number (OSN) at the start of an RTX packet's payload."""
    if len(data) < 14:
        return None
    csrc = (data[0] & 0x0F) * 4
    offset = 12 + csrc
    if data[0] & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        length = struct.unpack_from("!H", data, offset + 2)[0]
        offset += 4 + 4 * length
    if len(data) < offset + 2:
        return None
    return int(struct.unpack_from("!H", data, offset)[0])
