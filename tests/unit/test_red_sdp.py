"""Opus RED and DTX in SDP (sfu/red_sdp.py) on the real descriptions of
tests/fixtures: libwebrtc's (``@roamhq/wrtc``, as Chromium) publish offer offers
``red/48000/2`` with ``a=fmtp:63 111/111``; Parley's real aiortc answer to it drops RED;
Parley's real subscribe offer has none. Pure text, no sockets."""

from __future__ import annotations

from pathlib import Path

from aiortc.sdp import SessionDescription

from sfu.aiortc_adapter import describe_remote_media
from sfu.red_sdp import (
    RedOffer,
    answer_extras,
    answer_red,
    answer_red_pts,
    offer_red,
    offered_red,
    subscribe_offer,
)
from sfu.sdp import check_transport

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OFFER = (FIXTURES / "libwebrtc_wrtc_publish_offer.sdp").read_bytes().decode()  # CRLF kept
PUB_ANSWER = (FIXTURES / "parley_answer_to_libwebrtc_offer.sdp").read_bytes().decode()  # CRLF kept
SUB_OFFER = (
    (FIXTURES / "parley_subscribe_offer_to_libwebrtc.sdp").read_bytes().decode()
)  # CRLF kept
SUB_ANSWER = (FIXTURES / "libwebrtc_wrtc_subscribe_answer.sdp").read_bytes().decode()  # CRLF kept
GST_OFFER = (FIXTURES / "gstreamer_webrtcbin_publish_offer.sdp").read_bytes().decode()  # CRLF kept


def section(sdp: str, kind: str) -> list[str]:
    lines = sdp.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"m={kind}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("m=")), len(lines))
    return lines[start:end]


def test_the_libwebrtc_offer_offers_red_for_its_opus():
    assert offered_red(OFFER) == {"1": RedOffer(red_pt=63, opus_pt=111, usedtx=False)}
    # webrtcbin offers Opus alone
    assert offered_red(GST_OFFER) == {"audio0": RedOffer(None, None, False)}
    # a RED whose fmtp names another codec, or none, is not usable
    assert offered_red(OFFER.replace("a=fmtp:63 111/111", "a=fmtp:63 111/0"))["1"].red_pt is None
    assert offered_red(OFFER.replace("a=fmtp:63 111/111\r\n", ""))["1"].red_pt is None
    dtx = OFFER.replace("a=fmtp:111 minptime=10;useinbandfec=1", "a=fmtp:111 usedtx=1")
    assert offered_red(dtx)["1"] == RedOffer(63, 111, True)


def test_the_publish_answer_accepts_red_first_and_stays_valid():
    assert "red/48000" not in PUB_ANSWER  # aiortc's own answer drops it
    answer, accepted = answer_red(PUB_ANSWER, offered_red(OFFER))
    assert accepted == {"1": 63}
    audio = section(answer, "audio")
    assert audio[0].split(" ")[3:] == ["63", "111"]  # RED preferred: libwebrtc then sends it
    assert "a=rtpmap:63 red/48000/2" in audio and "a=fmtp:63 111/111" in audio
    assert section(answer, "video") == section(PUB_ANSWER, "video")
    assert answer.count("\r\n") == PUB_ANSWER.count("\r\n") + 2
    assert answer_red(answer, offered_red(OFFER)) == (answer, accepted)  # idempotent
    check_transport(answer)
    SessionDescription.parse(answer)  # aiortc's parser still reads it
    media = {m.mid: m for m in describe_remote_media(answer)}
    assert sorted(media["1"].codecs) == ["audio/opus", "audio/red"]
    # no RED offered (webrtcbin's offer), or one for another codec: the answer is unchanged
    assert answer_red(PUB_ANSWER, {"1": RedOffer(None, None, False)}) == (PUB_ANSWER, {})
    assert answer_red(PUB_ANSWER, {"1": RedOffer(63, 112, False)}) == (PUB_ANSWER, {})


def test_dtx_is_echoed_in_the_answer_only_when_the_publisher_asked_for_it():
    answer, _ = answer_red(PUB_ANSWER, offered_red(OFFER))
    assert not any("usedtx" in line for line in answer.splitlines())
    dtx_offer = OFFER.replace("useinbandfec=1\r\n", "useinbandfec=1;usedtx=1\r\n")
    answer, accepted = answer_red(PUB_ANSWER, offered_red(dtx_offer))
    opus_fmtp = [line for line in section(answer, "audio") if line.startswith("a=fmtp:111 ")]
    # (aiortc's answer has no Opus fmtp of its own: one is added)
    assert opus_fmtp == ["a=fmtp:111 usedtx=1"]
    assert accepted == {"1": 63}
    assert answer_red(answer, offered_red(dtx_offer))[0] == answer
    # an Opus fmtp of the answer's own gets usedtx=1 appended
    own = PUB_ANSWER.replace(
        "a=rtpmap:111 opus/48000/2\r\n", "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\n"
    )
    assert own != PUB_ANSWER
    assert "a=fmtp:111 minptime=10;usedtx=1\r\n" in answer_red(own, offered_red(dtx_offer))[0]


def test_the_subscribe_offer_offers_red_after_opus():
    offer = offer_red(SUB_OFFER)
    audio = section(offer, "audio")
    assert audio[0].split(" ")[3:] == ["96", "63"]  # Opus stays aiortc's first codec
    assert "a=rtpmap:63 red/48000/2" in audio and "a=fmtp:63 96/96" in audio
    assert section(offer, "video") == section(SUB_OFFER, "video")
    assert offer_red(offer) == offer
    check_transport(offer)
    SessionDescription.parse(offer)
    # 63 taken elsewhere: another free payload type, the same in every audio section
    taken = SUB_OFFER.replace("SAVPF 97 98", "SAVPF 63 97 98")
    assert taken != SUB_OFFER
    assert "a=rtpmap:99 red/48000/2" in offer_red(taken) and "a=fmtp:99 96/96" in offer_red(taken)
    # with transport-cc, RED gets no transport-cc feedback line (it is not a codec)
    sent = subscribe_offer(SUB_OFFER, None)
    assert "a=rtpmap:63 red/48000/2" in sent and "a=rtcp-fb:63 transport-cc" not in sent
    assert "a=rtcp-fb:96 transport-cc" in sent


def test_what_the_subscriber_answered_about_red():
    assert answer_red_pts(SUB_ANSWER) == {}  # wrtc answered an offer without RED
    audio = section(SUB_ANSWER, "audio")
    with_red = SUB_ANSWER.replace(audio[0], audio[0] + " 63").replace(
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:96 opus/48000/2\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 96/96",
    )
    mid = next(line[6:] for line in audio if line.startswith("a=mid:"))
    assert answer_red_pts(with_red) == {mid: 63}
    assert answer_extras(with_red) == (answer_extras(SUB_ANSWER)[0], {mid: 63})
    # a rejected or inactive section does not count
    assert answer_red_pts(with_red.replace(audio[0], "m=audio 0 UDP/TLS/RTP/SAVPF 96 63")) == {}
