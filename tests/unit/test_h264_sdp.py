"""H.264 negotiation (pure, no sockets): the real webrtcbin H.264 publish offer is
publishable (packetization-mode 1, constrained baseline); a subscriber m-line offers
the track's codec with the publisher's profile-level-id; webrtcbin's subscribe answer
without profile-level-id is read as RFC 6184 says; m-lines are reused only for the
codec they were negotiated for."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCSessionDescription,
)
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.sdp import SessionDescription

from sfu.aiortc_adapter import describe_remote_media, negotiated_codecs, restrict_codecs
from sfu.forwarder import Forwarder
from sfu.ports import NegotiationError
from sfu.publish_side import SUPPORTED_CODECS, check_offer
from sfu.source import Source, SourceParams
from sfu.subscribe_codecs import codec_preferences, complete_h264_answer, reusable, same_codec
from sfu.tracks import PublishedTrack
from tests.fakes import RecordingOwner, RecordingSink

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GST_OFFER = (FIXTURES / "gstreamer_webrtcbin_h264_publish_offer.sdp").read_bytes().decode()
PARLEY_ANSWER = (FIXTURES / "parley_answer_to_webrtcbin_h264_offer.sdp").read_bytes().decode()
SUB_OFFER = (FIXTURES / "parley_subscribe_offer_h264_to_webrtcbin.sdp").read_bytes().decode()
GST_ANSWER = (FIXTURES / "gstreamer_webrtcbin_h264_subscribe_answer.sdp").read_bytes().decode()

BASELINE = (
    ("level-asymmetry-allowed", "1"),
    ("packetization-mode", "1"),
    ("profile-level-id", "42001f"),
)
CONSTRAINED = (
    ("level-asymmetry-allowed", "1"),
    ("packetization-mode", "1"),
    ("profile-level-id", "42e01f"),
)


def params(codec: str, fmtp: tuple[tuple[str, str], ...] = ()) -> SourceParams:
    return SourceParams("t", "video", codec, 90000, 102, 1, fmtp=fmtp)


def test_webrtcbin_h264_offer_is_publishable() -> None:
    media, layers = check_offer(GST_OFFER)
    video = next(m for m in media if m.kind == "video")
    assert video.codecs == ["video/h264"] and video.live and layers == {}


def test_an_offer_of_h264_packetization_mode_0_only_is_refused_by_kind() -> None:
    # check_offer sees H.264; aiortc's codec match (pm 1 only) refuses it at answer time
    offer = GST_OFFER.replace("packetization-mode=1", "packetization-mode=0")
    check_offer(offer)
    offer = GST_OFFER.replace("H264/90000", "H265/90000")
    with pytest.raises(NegotiationError, match="no supported video codec"):
        check_offer(offer)


def test_parley_answered_one_h264_codec_with_packetization_mode_1() -> None:
    video = next(m for m in describe_remote_media(PARLEY_ANSWER) if m.kind == "video")
    assert video.codecs == ["video/h264"]
    fmtp = [line for line in PARLEY_ANSWER.splitlines() if line.startswith("a=fmtp:102")]
    assert fmtp == [
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
    ]


@pytest.mark.parametrize("fmtp", [BASELINE, CONSTRAINED])
def test_subscriber_m_lines_offer_the_publishers_profile(fmtp: tuple[tuple[str, str], ...]) -> None:
    prefs = codec_preferences("video", params("h264", fmtp))
    h264 = [c for c in prefs if c.mimeType.lower() == "video/h264"]
    assert (
        len(h264) == 1 and h264[0].parameters["profile-level-id"] == dict(fmtp)["profile-level-id"]
    )
    assert {c.mimeType.lower() for c in prefs} == {"video/h264", "video/rtx"}
    vp8 = codec_preferences("video", params("vp8"))
    assert {c.mimeType.lower() for c in vp8} == {"video/vp8", "video/rtx"}


def test_webrtcbin_answer_without_profile_level_id_gets_the_offered_one() -> None:
    assert "a=fmtp:99 packetization-mode=1;level-asymmetry-allowed=1\r\n" in GST_ANSWER
    completed = complete_h264_answer(GST_ANSWER, SUB_OFFER)
    assert (
        "a=fmtp:99 packetization-mode=1;level-asymmetry-allowed=1;profile-level-id=42001f\r\n"
        in completed
    )
    assert completed.replace(";profile-level-id=42001f", "") == GST_ANSWER  # nothing else
    assert complete_h264_answer(completed, SUB_OFFER) == completed  # idempotent


def test_aiortc_matches_the_completed_answer_only() -> None:
    """The reason for the completion: aiortc reads a missing profile-level-id as
    constrained baseline, which does not match the baseline (42001f) offered."""
    offered = next(
        c for m in SessionDescription.parse(SUB_OFFER).media for c in m.rtp.codecs
        if c.mimeType.lower() == "video/h264"
    )  # fmt: skip

    def answered(sdp: str) -> RTCRtpCodecParameters:
        media = SessionDescription.parse(sdp).media
        return next(c for m in media for c in m.rtp.codecs if c.mimeType.lower() == "video/h264")

    assert not is_codec_compatible(offered, answered(GST_ANSWER))
    assert is_codec_compatible(offered, answered(complete_h264_answer(GST_ANSWER, SUB_OFFER)))


def test_m_lines_are_reused_for_the_same_codec_only() -> None:
    assert same_codec(params("h264", BASELINE), params("h264", BASELINE))
    assert not same_codec(params("h264", BASELINE), params("h264", CONSTRAINED))
    assert not same_codec(params("vp8"), params("h264", BASELINE))

    class Transceiver:
        kind = "video"
        mid = "1"

    owner = RecordingOwner()
    vp8_source = Source(params("vp8"), owner)
    h264_source = Source(params("h264", BASELINE), owner)
    previous = Forwarder([vp8_source], RecordingSink(), "sub")
    t = Transceiver()
    last = {t: previous}
    vp8_track = PublishedTrack("a", "video", "0", (Source(params("vp8"), owner),))
    h264_track = PublishedTrack("b", "video", "0", (h264_source,))
    assert reusable(t, "video", last, vp8_track)  # type: ignore[arg-type]
    assert not reusable(t, "video", last, h264_track)  # type: ignore[arg-type]
    assert not reusable(t, "audio", last, vp8_track)  # type: ignore[arg-type]
    assert not reusable(t, "video", {}, vp8_track)  # type: ignore[arg-type]


CHROMIUM_OFFER = (FIXTURES / "chromium_h264_simulcast_publish_offer.sdp").read_bytes().decode()


async def test_chromiums_h264_simulcast_offer_is_answered_with_one_codec() -> None:
    """Chromium's offer with H.264 first (``videoCodec: "video/H264"``) lists H.264 in
    four variants (packetization-mode 0 and 1, baseline and constrained baseline) and
    Main, then VP8 and the rest: Parley keeps only the first it can forward (baseline,
    packetization-mode 1, payload type 102) and its RTX."""
    media, layers = check_offer(CHROMIUM_OFFER)
    video = next(m for m in media if m.kind == "video")
    assert layers == {video.mid: ("q", "h", "f")}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(CHROMIUM_OFFER, "offer"))
        transceiver = next(t for t in pc.getTransceivers() if t.kind == "video")
        assert restrict_codecs(transceiver, SUPPORTED_CODECS["video"], True)
        kept = [
            (c.mimeType, c.payloadType, dict(c.parameters)) for c in negotiated_codecs(transceiver)
        ]
        assert kept == [
            (
                "video/H264",
                102,
                {
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": "42001f",
                },
            ),
            ("video/rtx", 103, {"apt": 102}),
        ], kept
    finally:
        await pc.close()


def test_the_bot_offers_the_codec_asked_for_and_reads_what_was_answered() -> None:
    """``parley bot --codec``: the capabilities it offers; its summary's ``codec``."""
    from loadgen.bot.codecs import answer_codecs, video_codecs

    assert {c.mimeType.lower() for c in video_codecs("h264")} == {"video/h264", "video/rtx"}
    assert {c.mimeType.lower() for c in video_codecs("vp8")} == {"video/vp8", "video/rtx"}
    assert answer_codecs(GST_ANSWER) == {"0": "opus", "1": "h264"}
    assert answer_codecs(PARLEY_ANSWER) == {"video0": "h264", "audio1": "opus"}
