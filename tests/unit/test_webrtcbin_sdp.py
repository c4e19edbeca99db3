"""What Parley reads of GStreamer webrtcbin's real SDP (tests/fixtures): its publish
offers' second m-line is ``m=<kind> 0 ... a=bundle-only`` inside the BUNDLE group
(RFC 8843), a live m-line; every m-line says ``a=setup:actpass``; its subscribe answer
takes the DTLS client role. Pure parsing, no sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu.aiortc_adapter import describe_remote_media
from sfu.ports import NegotiationError
from sfu.publish_side import check_offer
from sfu.sdp import answer_transport_cc, check_transport

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OFFER = (FIXTURES / "gstreamer_webrtcbin_publish_offer.sdp").read_text()


def _drop_line(sdp: str, line: str) -> str:
    return "\n".join(x for x in sdp.splitlines() if x.strip() != line) + "\n"


def test_the_bundle_only_video_m_line_is_live() -> None:
    audio, video = describe_remote_media(OFFER)
    assert (audio.kind, audio.mid, audio.port, audio.live) == ("audio", "audio0", 9, True)
    assert (video.kind, video.mid, video.port) == ("video", "video1", 0)
    assert video.bundle_only and video.bundled and video.live
    assert not audio.bundle_only
    assert (audio.setup, video.setup) == ("actpass", "actpass")
    assert video.codecs == ["video/vp8"] and video.direction == "sendonly"


def test_port_zero_without_bundle_only_is_not_live() -> None:
    _, video = describe_remote_media(_drop_line(OFFER, "a=bundle-only"))
    assert video.port == 0 and not video.bundle_only and not video.live


def test_bundle_only_outside_the_bundle_group_is_not_live() -> None:
    offer = OFFER.replace("a=group:BUNDLE audio0 video1", "a=group:BUNDLE audio0")
    _, video = describe_remote_media(offer)
    assert video.bundle_only and not video.bundled and not video.live


def test_setup_values_are_read_per_m_line() -> None:
    active = describe_remote_media(OFFER.replace("a=setup:actpass", "a=setup:active"))
    passive = describe_remote_media(OFFER.replace("a=setup:actpass", "a=setup:passive"))
    assert [m.setup for m in active] == ["active", "active"]
    assert [m.setup for m in passive] == ["passive", "passive"]


def test_check_offer_accepts_the_webrtcbin_offer_and_checks_its_video() -> None:
    media, layers = check_offer(OFFER)
    assert [m.mid for m in media] == ["audio0", "video1"] and layers == {}
    # the bundle-only video is checked as a live m-line: an unsupported codec is refused
    h263 = OFFER.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 H263/90000")
    with pytest.raises(NegotiationError, match="video1: no supported video codec"):
        check_offer(h263)
    # ... while a disabled one (no a=bundle-only) is not looked at
    check_offer(_drop_line(h263, "a=bundle-only"))


# Captured from tests/interop/webrtcbin_client.py talking to Parley (tests/fixtures/README.md)
OFFER_VIDEO_FIRST = (FIXTURES / "gstreamer_webrtcbin_publish_offer_video_first.sdp").read_text()
SUB_OFFER = (FIXTURES / "parley_subscribe_offer_to_webrtcbin.sdp").read_text()
SUB_ANSWER = (FIXTURES / "gstreamer_webrtcbin_subscribe_answer.sdp").read_text()
PUB_ANSWER = (FIXTURES / "parley_answer_to_webrtcbin_offer_passive.sdp").read_text()


def test_the_captured_publish_offer_has_a_bundle_only_audio_m_line() -> None:
    media, layers = check_offer(OFFER_VIDEO_FIRST)
    video, audio = media
    assert (video.kind, video.port, video.bundle_only) == ("video", 9, False)
    assert (audio.kind, audio.port, audio.bundle_only, audio.live) == ("audio", 0, True, True)
    assert [m.setup for m in media] == ["actpass", "actpass"] and layers == {}


def test_parley_answered_the_captured_offer_as_dtls_server_with_both_m_lines() -> None:
    answer = describe_remote_media(PUB_ANSWER)
    assert [(m.mid, m.kind, m.direction, m.setup) for m in answer] == [
        ("video0", "video", "recvonly", "passive"),
        ("audio1", "audio", "recvonly", "passive"),
    ]


def test_webrtcbins_subscribe_answer_is_a_usable_answer_to_parleys_offer() -> None:
    offer, answer = describe_remote_media(SUB_OFFER), describe_remote_media(SUB_ANSWER)
    assert [(m.mid, m.kind, m.setup) for m in offer] == [
        ("0", "audio", "actpass"),
        ("1", "video", "actpass"),
    ]
    # webrtcbin takes the DTLS client role Parley's actpass leaves it, per m-line
    assert [(m.mid, m.kind, m.direction, m.setup) for m in answer] == [
        ("0", "audio", "recvonly", "active"),
        ("1", "video", "recvonly", "active"),
    ]
    check_transport(SUB_ANSWER)
    assert answer[1].codecs == ["video/vp8"] and answer[0].codecs == ["audio/opus"]
    # webrtcbin 1.22 keeps no a=extmap in its answer (only a=rtcp-fb transport-cc):
    # Parley negotiates no transport-cc with it (docs/interop.md)
    assert answer[0].extensions == {} and answer[1].extensions == {}
    assert answer_transport_cc(SUB_ANSWER) is None
