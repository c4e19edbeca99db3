"""sfu/subscribe_refusals.py on libwebrtc's real answer (tests/fixtures): @roamhq/wrtc
0.10 has no H.264 and rejects the H.264 m-line of Parley's subscribe offer (``m=video
0 ... 0``, out of BUNDLE). aiortc cannot apply that answer; the one it is given accepts
the m-line inactive, and later offers mark it rejected. Pure text, no sockets."""

from __future__ import annotations

from pathlib import Path

from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.sdp import SessionDescription

from sfu.source import Source, SourceParams
from sfu.subscribe_refusals import CodecRefusals
from sfu.tracks import PublishedTrack
from tests.fakes import RecordingOwner

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OFFER = (FIXTURES / "parley_subscribe_offer_h264_to_libwebrtc.sdp").read_bytes().decode()
ANSWER = (FIXTURES / "libwebrtc_wrtc_rejects_h264_answer.sdp").read_bytes().decode()
GST_ANSWER = (FIXTURES / "gstreamer_webrtcbin_h264_subscribe_answer.sdp").read_bytes().decode()
GST_OFFER = (FIXTURES / "parley_subscribe_offer_h264_to_webrtcbin.sdp").read_bytes().decode()


def track(codec: str) -> PublishedTrack:
    params = SourceParams("t", "video", codec, 90000, 99, 1)
    return PublishedTrack("t", "video", "1", (Source(params, RecordingOwner()),))


def test_the_fixture_is_a_rejection() -> None:
    assert "m=video 0 UDP/TLS/RTP/SAVPF 0\r\n" in ANSWER and "a=group:BUNDLE 0\r\n" in ANSWER
    assert "a=rtpmap:99 H264/90000" in OFFER


def test_a_rejected_m_line_is_accepted_inactive_for_aiortc() -> None:
    refusals = CodecRefusals()
    text, refused = refusals.answer(ANSWER, OFFER)
    assert refused == {"1"} and refusals.dead == {"1"}
    assert refusals.codecs == {("video", "h264")}
    assert refusals.refuses(track("h264")) and not refusals.refuses(track("vp8"))
    parsed = SessionDescription.parse(text)
    assert "a=group:BUNDLE 0 1\r\n" in text
    video = parsed.media[1]
    assert (video.kind, video.port, video.direction, video.rtp.muxId) == (
        "video",
        9,
        "inactive",
        "1",
    )
    offered = SessionDescription.parse(OFFER).media[1].rtp.codecs
    assert any(is_codec_compatible(a, b) for a in video.rtp.codecs for b in offered)
    # the transport is the bundle's: the audio section's ICE and DTLS attributes
    audio = text.split("m=video")[0]
    for prefix in ("a=ice-ufrag:", "a=fingerprint:", "a=setup:"):
        line = next(x for x in audio.splitlines() if x.startswith(prefix))
        assert line in text.split("m=video")[1], prefix
    # the audio section is untouched; a second answer refuses nothing new
    assert text.split("m=video")[0] == ANSWER.split("m=video")[0].replace(
        "a=group:BUNDLE 0\r\n", "a=group:BUNDLE 0 1\r\n"
    )
    assert refusals.answer(ANSWER, OFFER)[1] == set()


def test_later_offers_mark_the_dead_m_line_rejected() -> None:
    refusals = CodecRefusals()
    assert refusals.offer(OFFER) == OFFER  # nothing dead yet
    refusals.answer(ANSWER, OFFER)
    sent = refusals.offer(OFFER)
    assert "a=group:BUNDLE 0\r\n" in sent
    assert "\r\nm=video 0 UDP/TLS/RTP/SAVPF 99 100\r\n" in sent
    video = sent.split("m=video")[1]
    assert "a=inactive" in video and "a=sendonly" not in video
    assert sent.split("m=video")[0].replace("a=group:BUNDLE 0\r\n", "") == OFFER.split("m=video")[
        0
    ].replace("a=group:BUNDLE 0 1\r\n", "")


def test_an_answer_that_accepts_everything_is_unchanged() -> None:
    refusals = CodecRefusals()
    text, refused = refusals.answer(GST_ANSWER, GST_OFFER)
    assert refused == set() and not refusals.dead and not refusals.codecs
    assert "profile-level-id=42001f" in text  # only the H.264 fmtp completion


def test_a_subscriber_that_said_what_it_decodes_refuses_the_rest() -> None:
    """``join``'s ``codecs`` (lower case): tracks of other codecs are never offered."""
    refusals = CodecRefusals()
    assert not refusals.refuses(track("H264"))  # nothing said: it answers for itself
    refusals.decodes = frozenset({"opus", "vp8"})
    assert refusals.refuses(track("H264")) and not refusals.refuses(track("VP8"))
