"""What Parley reads of libwebrtc's real SDP (``@roamhq/wrtc`` 0.10.0, captured from
tests/interop/wrtc/client.mjs; tests/fixtures/README.md): its publish offer (video first,
VP8 among VP9/AV1/RED/ULPFEC, RTX in an FID group, transport-cc, ``a=setup:actpass``),
Parley's answer (DTLS server, VP8 + RTX and Opus only), and its answer to Parley's
subscribe offer (DTLS client, RTX and transport-cc kept). Pure parsing, no sockets."""

from __future__ import annotations

from pathlib import Path

from sfu.aiortc_adapter import describe_remote_media
from sfu.publish_side import check_offer
from sfu.sdp import answer_transport_cc, check_transport

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OFFER = (FIXTURES / "libwebrtc_wrtc_publish_offer.sdp").read_text()
PUB_ANSWER = (FIXTURES / "parley_answer_to_libwebrtc_offer.sdp").read_text()
SUB_OFFER = (FIXTURES / "parley_subscribe_offer_to_libwebrtc.sdp").read_text()
SUB_ANSWER = (FIXTURES / "libwebrtc_wrtc_subscribe_answer.sdp").read_text()
TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def test_check_offer_accepts_wrtcs_publish_offer() -> None:
    media, layers = check_offer(OFFER)
    video, audio = media
    assert [(m.mid, m.kind, m.direction, m.setup) for m in media] == [
        ("0", "video", "sendonly", "actpass"),
        ("1", "audio", "sendonly", "actpass"),
    ]
    assert layers == {} and all(m.live and m.bundled and not m.bundle_only for m in media)
    # one VP8 stream with its RTX stream (a=ssrc-group:FID), one Opus stream
    assert len(video.ssrcs) == 1 and video.ssrcs[0][1] is not None
    assert len(audio.ssrcs) == 1 and audio.ssrcs[0][1] is None
    assert video.codecs[:2] == ["video/vp8", "video/rtx"]
    assert {"video/vp9", "video/av1", "video/red", "video/ulpfec"} <= set(video.codecs)
    assert audio.codecs[:2] == ["audio/opus", "audio/red"]
    assert video.extensions[TWCC] == audio.extensions[TWCC] == 4


def test_parley_answered_wrtc_as_dtls_server_with_vp8_rtx_and_opus() -> None:
    check_transport(PUB_ANSWER)
    video, audio = describe_remote_media(PUB_ANSWER)
    assert [(m.mid, m.kind, m.direction, m.setup) for m in (video, audio)] == [
        ("0", "video", "recvonly", "passive"),
        ("1", "audio", "recvonly", "passive"),
    ]
    assert video.codecs == ["video/vp8", "video/rtx"] and audio.codecs == ["audio/opus"]
    # the ids wrtc offered are kept; transport-cc is not negotiated on the publish side
    assert video.extensions[ABS_SEND_TIME] == 2 and TWCC not in video.extensions


def test_wrtcs_subscribe_answer_keeps_rtx_and_transport_cc() -> None:
    offer, answer = describe_remote_media(SUB_OFFER), describe_remote_media(SUB_ANSWER)
    assert [(m.mid, m.kind, m.setup) for m in offer] == [
        ("0", "audio", "actpass"),
        ("1", "video", "actpass"),
    ]
    # libwebrtc takes the DTLS client role Parley's actpass leaves it, per m-line
    assert [(m.mid, m.kind, m.direction, m.setup) for m in answer] == [
        ("0", "audio", "recvonly", "active"),
        ("1", "video", "recvonly", "active"),
    ]
    check_transport(SUB_ANSWER)
    # its second m-line is bundled (port 9, no candidates of its own) and live
    assert answer[1].port == 9 and answer[1].bundled and answer[1].live
    assert answer[1].codecs == ["video/vp8", "video/rtx"] and answer[0].codecs == ["audio/opus"]
    # unlike webrtcbin, libwebrtc keeps transport-cc: Parley gets its feedback
    assert answer_transport_cc(SUB_ANSWER) == offer[1].extensions[TWCC] == 4
