"""sfu.sdp: transport-cc added to the subscribe offer aiortc makes, read back from answers
(Chromium's real answer, edited ones), and aiortc accepting such an answer."""

from __future__ import annotations

import re
from pathlib import Path

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from sfu.rtp.extensions import TRANSPORT_CC_URI
from sfu.sdp import answer_transport_cc, offer_transport_cc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHROMIUM_ANSWER = (FIXTURES / "chromium_subscribe_answer_twcc.sdp").read_bytes().decode()


def subscribe_pc() -> RTCPeerConnection:
    """A subscribe connection as sfu/subscribe_side.py makes it: sendonly VP8 (+ RTX)
    and Opus."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind, codec in (("video", "vp8"), ("audio", "opus")):
        transceiver = pc.addTransceiver(kind, direction="sendonly")
        codecs = RTCRtpSender.getCapabilities(kind).codecs
        transceiver.setCodecPreferences(
            [c for c in codecs if c.mimeType.lower() in (f"{kind}/{codec}", f"{kind}/rtx")]
        )
    return pc


def sections(sdp: str) -> list[str]:
    return re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)[1:]


def extmaps(section: str) -> dict[int, str]:
    return {int(i): uri for i, uri in re.findall(r"^a=extmap:(\d+) (\S+)", section, re.M)}


async def test_offer_gets_one_free_id_everywhere_and_feedback_per_codec() -> None:
    pc = subscribe_pc()
    try:
        offer = (await pc.createOffer()).sdp  # createOffer opens no socket
    finally:
        await pc.close()
    munged = offer_transport_cc(offer)
    video, audio = sections(munged)
    before_video, before_audio = sections(offer)
    used = set(extmaps(before_video)) | set(extmaps(before_audio))
    (twcc_id,) = {i for i, uri in extmaps(video).items() if uri == TRANSPORT_CC_URI}
    assert twcc_id not in used and 1 <= twcc_id <= 14
    assert extmaps(audio)[twcc_id] == TRANSPORT_CC_URI
    # VP8 (not its RTX) and Opus get the feedback line
    vp8 = re.search(r"^a=rtpmap:(\d+) VP8/90000", video, re.M).group(1)  # type: ignore[union-attr]
    rtx = re.search(r"^a=rtpmap:(\d+) rtx/90000", video, re.M).group(1)  # type: ignore[union-attr]
    opus = re.search(r"^a=rtpmap:(\d+) opus/", audio, re.M).group(1)  # type: ignore[union-attr]
    assert f"a=rtcp-fb:{vp8} transport-cc\r\n" in video
    assert f"a=rtcp-fb:{rtx} transport-cc" not in video
    assert f"a=rtcp-fb:{opus} transport-cc\r\n" in audio
    # nothing else changed, CRLF kept, and doing it twice changes nothing more
    added = [line for line in munged.split("\r\n") if line not in offer.split("\r\n")]
    assert sorted(added) == sorted(
        [f"a=extmap:{twcc_id} {TRANSPORT_CC_URI}"] * 2
        + [f"a=rtcp-fb:{vp8} transport-cc", f"a=rtcp-fb:{opus} transport-cc"]
    )
    assert "\n" not in munged.replace("\r\n", "")
    assert offer_transport_cc(munged) == munged
    # the id wanted (e.g. negotiated before) when free; the smallest free one otherwise
    assert f"a=extmap:9 {TRANSPORT_CC_URI}" in offer_transport_cc(offer, prefer=9)
    taken = next(iter(used))
    assert f"a=extmap:{taken} {TRANSPORT_CC_URI}" not in offer_transport_cc(offer, prefer=taken)


def test_no_free_id_leaves_the_offer_alone() -> None:
    full = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + "".join(
        f"a=extmap:{i} urn:x:{i}\r\n" for i in range(1, 15)
    )
    assert offer_transport_cc(full) == full


def test_chromium_answer_keeps_the_extension() -> None:
    assert answer_transport_cc(CHROMIUM_ANSWER) == 4


def test_answers_without_transport_cc() -> None:
    no_extmap = CHROMIUM_ANSWER.replace(f"a=extmap:4 {TRANSPORT_CC_URI}\r\n", "")
    assert answer_transport_cc(no_extmap) is None
    no_video_fb = CHROMIUM_ANSWER.replace("a=rtcp-fb:97 transport-cc\r\n", "")
    assert answer_transport_cc(no_video_fb) is None
    # audio without the feedback line is fine (Parley needs it on video)
    assert answer_transport_cc(CHROMIUM_ANSWER.replace("a=rtcp-fb:96 transport-cc\r\n", "")) == 4
    # two ids for one extension on one transport: unusable
    video, audio = sections(CHROMIUM_ANSWER)
    head = CHROMIUM_ANSWER[: CHROMIUM_ANSWER.index("m=")]
    clash = (
        head
        + video
        + audio.replace(f"a=extmap:4 {TRANSPORT_CC_URI}", f"a=extmap:5 {TRANSPORT_CC_URI}")
    )
    assert answer_transport_cc(clash) is None
    # a video section not in use does not count
    inactive = (
        head
        + video.replace("m=video 9", "m=video 0").replace("a=rtcp-fb:97 transport-cc\r\n", "")
        + audio
    )
    assert answer_transport_cc(inactive) == 4
    # the publish answer fixture (no transport-cc)
    publish = (FIXTURES / "chromium_publish_answer.sdp").read_bytes().decode()
    assert answer_transport_cc(publish) is None


async def test_aiortc_accepts_an_answer_with_the_extension() -> None:
    """setLocalDescription gathers candidates: run inside scripts/in_netns.py."""
    pc = subscribe_pc()
    try:
        await pc.setLocalDescription(await pc.createOffer())
        await pc.setRemoteDescription(RTCSessionDescription(CHROMIUM_ANSWER, "answer"))
        assert pc.signalingState == "stable"
        assert [t.currentDirection for t in pc.getTransceivers()] == ["sendonly", "sendonly"]
    finally:
        await pc.close()


async def test_an_audio_only_offer_leaves_aiortcs_video_ids_free() -> None:
    """A first offer with audio only must not take abs-send-time's id (3): the video
    section a renegotiation adds later gets aiortc's 3 for abs-send-time, and a
    transport-cc element (2 bytes) under that id breaks aiortc's parsing of every packet."""
    from aiortc.codecs import HEADER_EXTENSIONS

    from sfu.sdp import _AIORTC_IDS

    assert {ext.id for exts in HEADER_EXTENSIONS.values() for ext in exts} <= _AIORTC_IDS
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        offer = (await pc.createOffer()).sdp
    finally:
        await pc.close()
    (audio,) = sections(offer_transport_cc(offer))
    (twcc_id,) = {i for i, uri in extmaps(audio).items() if uri == TRANSPORT_CC_URI}
    assert twcc_id not in _AIORTC_IDS and twcc_id == 4
