"""Malformed RTP/RTCP is dropped where it is parsed, counted by reason, logged rarely.

Pure logic: the counting and rate-limited log (``sfu/rtp/malformed.py``), a Source and
the ingress router meeting header-extension elements that overrun their block, and
the RTCP parser's reasons. The same packets inside a real SRTP session to a real
server: ``tests/integration/test_media_fuzz.py``.
"""

from __future__ import annotations

import logging

import pytest

from sfu.routing import IngressRouter
from sfu.rtp.malformed import MAX_REASONS, OTHER, MalformedLog
from sfu.rtp.packet import RtpError, RtpView
from sfu.rtp.rtcp import parse_rtcp_checked
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, rtp

SSRC = 0x5555
MID_EXT, RID_EXT, LEVEL_EXT = 9, 10, 12


def overrunning(seq: int, ssrc: int = SSRC, pt: int = 111, ext_id: int = LEVEL_EXT) -> bytes:
    """An RTP packet whose one-byte extension element claims 16 bytes of a 4-byte block:
    the block itself fits the packet (libsrtp accepts it), the element does not."""
    header = bytes([0x90, pt]) + seq.to_bytes(2, "big") + (960 * seq).to_bytes(4, "big")
    block = b"\xbe\xde\x00\x01" + bytes([(ext_id << 4) | 0x0F, 0x11, 0x22, 0x33])
    return header + ssrc.to_bytes(4, "big") + block + b"\x01opus"


def audio_source(malformed: list[tuple[str, float]]) -> Source:
    params = SourceParams("mic", "audio", "opus", 48000, 111, SSRC, audio_level_ext=LEVEL_EXT)
    return Source(
        params, RecordingOwner(), on_malformed=lambda reason, now: malformed.append((reason, now))
    )


def test_the_overrunning_element_is_what_the_issue_describes() -> None:
    view = RtpView(overrunning(1))  # the header parses: the block fits the packet
    with pytest.raises(RtpError, match="truncated one-byte extension element"):
        view.extension(LEVEL_EXT)


def test_a_source_drops_an_overrunning_extension_before_touching_any_state() -> None:
    seen: list[tuple[str, float]] = []
    source = audio_source(seen)
    source.on_rtp(RtpView(rtp(1, 960, ssrc=SSRC, pt=111, extensions=[(LEVEL_EXT, b"\x85")])), 0.0)
    for seq in range(2, 12):
        source.on_rtp(RtpView(overrunning(seq)), seq * 0.02)  # must not raise
    assert seen == [("truncated one-byte extension element", seq * 0.02) for seq in range(2, 12)]
    assert source.malformed == 10 and source.dropped == 10
    # nothing of the dropped packets reached the statistics, loss detection or cache
    assert source.packets == 1 and source.loudness_packets == 1
    assert source.cache.get(5) is None and source.nack.missing == []
    source.on_rtp(RtpView(rtp(12, 960 * 12, ssrc=SSRC, pt=111)), 0.3)
    assert source.packets == 2
    assert sorted(source.nack.missing) == list(range(2, 12))  # a gap, as any loss


def test_a_source_reports_a_bad_vp8_descriptor() -> None:
    seen: list[tuple[str, float]] = []
    params = SourceParams("cam", "video", "vp8", 90000, 96, SSRC)
    source = Source(params, RecordingOwner(), on_malformed=lambda r, t: seen.append((r, t)))
    source.on_rtp(RtpView(rtp(1, 0, ssrc=SSRC, pt=96, payload=b"\x90\x80")), 1.0)
    assert seen == [("truncated VP8 picture id", 1.0)] and source.cache.get(1) is None


def test_the_router_refuses_to_learn_from_an_overrunning_mid_and_binds_nothing() -> None:
    router = IngressRouter()
    router.set_extension_ids(MID_EXT, RID_EXT, 0)
    params = SourceParams("cam", "video", "vp8", 90000, 96, None, mid="0", rid="q")
    router.add(Source(params, RecordingOwner()))
    with pytest.raises(RtpError):
        router.learn(RtpView(overrunning(1, ssrc=77, pt=96, ext_id=MID_EXT)))
    assert router.by_ssrc == {} and router.by_rtx_ssrc == {}


def test_counts_by_reason_and_one_log_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.malformed")
    log = MalformedLog("participant p1 ('ann')", 10.0, logger)
    caplog.set_level(logging.INFO, logger="test.malformed")
    # 3000 packets/s for 25 s, as a flood would come
    for i in range(75_000):
        now = i / 3000
        log.add("rtp", "truncated one-byte extension element", now)
        if i % 3000 == 0:
            log.flush(now)  # the participant's once-a-second tick
    log.add("rtcp", "RTCP packet is truncated", 25.0)
    assert log.totals == {"rtp": 75_000, "rtcp": 1}
    assert log.by_reason == {
        ("rtp", "truncated one-byte extension element"): 75_000,
        ("rtcp", "RTCP packet is truncated"): 1,
    }
    records = [r for r in caplog.records if r.name == "test.malformed"]
    assert len(records) == 3 == log.lines  # at 0, 10 and 20 s
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in records)
    first, second, _ = (r.getMessage() for r in records)
    assert "participant p1 ('ann')" in first and "dropped 1 malformed RTP" in first
    assert "truncated one-byte extension element" in first
    assert "dropped 30000 malformed RTP" in second and "in the last 10 s" in second
    assert sum(len(r.getMessage()) for r in records) < 1000  # not 1 KB per packet
    log.flush(30.0)  # what came since the last line: the rest of the flood and the RTCP
    (last,) = [r.getMessage() for r in caplog.records[3:]]
    assert "dropped 14999 malformed RTP and 1 malformed RTCP" in last
    assert "last: RTCP RTCP packet is truncated" in last
    log.flush(45.0)
    assert log.lines == 4  # nothing pending: nothing logged


def test_a_forced_flush_logs_what_is_pending_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.malformed")
    log = MalformedLog("p", 10.0, logging.getLogger("test.malformed"))
    log.add("rtp", "bad padding length", 0.0)
    log.add("rtp", "bad padding length", 1.0)
    log.flush(2.0)
    assert log.lines == 1
    log.flush(2.0, force=True)  # the participant leaves
    assert log.lines == 2 and "dropped 1 malformed RTP" in caplog.records[-1].getMessage()


def test_reasons_are_bounded() -> None:
    log = MalformedLog("p", 10.0, logging.getLogger("test.malformed"))
    for i in range(MAX_REASONS + 50):
        log.add("rtcp", f"reason {i}", 0.0)
    assert len(log.by_reason) == MAX_REASONS + 1
    assert log.by_reason[("rtcp", OTHER)] == 50
    assert log.to_json()["rtcp"] == MAX_REASONS + 50


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\xc8\x00", "RTCP packet length is less than 4 bytes"),
        (b"\x40\xc8\x00\x00", "RTCP packet has invalid version"),
        (b"\x80\xc8\x00\x06" + bytes(8), "RTCP packet is truncated"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "RTCP packet padding length is invalid"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "RTCP receiver report length is invalid"),
    ],
)
def test_rtcp_reasons(data: bytes, reason: str) -> None:
    assert parse_rtcp_checked(data) == ([], reason)


def test_a_good_rtcp_compound_has_no_reason() -> None:
    rr = b"\x80\xc9\x00\x01\x00\x00\x00\x01"
    packets, reason = parse_rtcp_checked(rr + rr)
    assert reason is None and len(packets) == 2
