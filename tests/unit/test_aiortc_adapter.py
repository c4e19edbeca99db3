"""sfu.aiortc_adapter: the hooks still fit the installed aiortc, SDP facts, ICE restriction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport

from sfu import aiortc_adapter
from sfu.aiortc_adapter import (
    AdapterError,
    check_hooks,
    create_peer_connection,
    describe_remote_media,
    restrict_codecs,
    rtc_configuration,
)
from sfu.config import IceConfig, IceServer
from sfu.rtp.extensions import ABS_SEND_TIME_URI as AST_URI
from sfu.rtp.extensions import MID_URI, RID_URI

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SIMULCAST_OFFER = FIXTURES / "chromium_simulcast_offer.sdp"


@pytest.fixture(scope="module")
def offer_sdp() -> str:
    assert SIMULCAST_OFFER.exists(), f"fixture missing: {SIMULCAST_OFFER}"
    return SIMULCAST_OFFER.read_text()


# ------------------------------------------------------------------ hooks


def test_check_hooks_passes_on_installed_aiortc():
    check_hooks()


def test_check_hooks_names_a_missing_attribute(monkeypatch):
    bogus = (RTCRtpSender, "_parley_no_such_attribute")
    monkeypatch.setattr(
        aiortc_adapter, "HOOKED_ATTRIBUTES", aiortc_adapter.HOOKED_ATTRIBUTES + (bogus,)
    )
    with pytest.raises(AdapterError, match="RTCRtpSender._parley_no_such_attribute") as info:
        check_hooks()
    # only the missing one is named
    assert "_handle_rtp_data" not in str(info.value)


def test_check_hooks_detects_an_attribute_removed_from_aiortc(monkeypatch):
    monkeypatch.delattr(RTCDtlsTransport, "_handle_rtp_data")
    with pytest.raises(AdapterError) as info:
        check_hooks()
    message = str(info.value)
    assert "aiortc.rtcdtlstransport.RTCDtlsTransport._handle_rtp_data" in message
    assert "_handle_rtcp_data" not in message


async def test_check_hooks_refuses_to_run_inside_an_event_loop():
    with pytest.raises(RuntimeError, match="outside an event loop"):
        check_hooks()


# ------------------------------------------------------------------ SDP facts


def test_describe_chromium_simulcast_offer(offer_sdp):
    (media,) = describe_remote_media(offer_sdp)
    assert media.index == 0 and media.mid == "0" and media.kind == "video"
    assert media.direction == "sendonly"
    assert media.port == 34513
    assert media.ssrcs == []  # simulcast by rid: no a=ssrc lines
    assert media.msid_track == "da067fc3-20be-4cc3-ad5d-9d18ef00930d"
    assert media.extensions[MID_URI] == 9
    assert media.extensions[RID_URI] == 10
    assert media.extensions[AST_URI] == 2
    assert len(media.extensions) == 13


def test_describe_ssrcs_with_rtx_groups(offer_sdp):
    lines = offer_sdp.replace("\r\n", "\n").splitlines()
    extra = [
        "a=ssrc-group:FID 1111 2222",
        "a=ssrc:1111 cname:abc",
        "a=ssrc:1111 msid:- t",
        "a=ssrc:2222 cname:abc",
        "a=ssrc:3333 cname:abc",
    ]
    sdp = "\r\n".join(lines + extra) + "\r\n"
    (media,) = describe_remote_media(sdp)
    assert media.ssrcs == [(1111, 2222), (3333, None)]


@pytest.mark.parametrize(
    "junk",
    [
        "v=0\r\nm=video x\r\n",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF abc\r\n",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:x urn:foo\r\n",
    ],
)
def test_describe_rejects_junk(junk):
    with pytest.raises(ValueError, match="unparseable SDP"):
        describe_remote_media(junk)


def test_describe_without_media_lines_is_empty():
    # aiortc's parser is lenient with text that has no m= line at all
    assert describe_remote_media("") == []


async def test_restrict_codecs_on_the_chromium_offer(offer_sdp):
    pc = create_peer_connection(IceConfig())
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        (transceiver,) = pc.getTransceivers()
        mimes = {c.mimeType.lower() for c in transceiver._codecs}
        assert {"video/vp8", "video/h264", "video/rtx"} <= mimes
        assert restrict_codecs(transceiver, {"video/vp8"})
        kept = [(c.mimeType.lower(), c.payloadType) for c in transceiver._codecs]
        assert kept == [("video/vp8", 96), ("video/rtx", 97)]
        assert transceiver._codecs[1].parameters["apt"] == 96
        answer = await pc.createAnswer()
        m_line = next(line for line in answer.sdp.splitlines() if line.startswith("m=video"))
        assert m_line.split()[3:] == ["96", "97"]
        # nothing acceptable: False, codecs left alone
        assert not restrict_codecs(transceiver, {"video/av1"})
        assert [c.payloadType for c in transceiver._codecs] == [96, 97]
    finally:
        await pc.close()


# ------------------------------------------------------------------ ICE


def test_rtc_configuration_has_no_ice_servers_by_default():
    config = rtc_configuration(IceConfig())
    assert config.iceServers == []


def test_rtc_configuration_uses_configured_servers():
    server = IceServer(urls=("turn:127.0.0.1:3478",), username="u", credential="p")
    (ice,) = rtc_configuration(IceConfig(servers=(server,))).iceServers
    assert ice.urls == ["turn:127.0.0.1:3478"]
    assert (ice.username, ice.credential) == ("u", "p")


async def test_peer_connection_gathers_only_loopback_host_candidates():
    pc = create_peer_connection(IceConfig())
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        candidates = re.findall(r"^a=candidate:(.*)$", sdp, re.MULTILINE)
        assert candidates
        for candidate in candidates:
            fields = candidate.split()
            assert fields[2].lower() == "udp"
            assert fields[4] == "127.0.0.1"
            assert fields[6:8] == ["typ", "host"]
        assert "srflx" not in sdp and "relay" not in sdp
    finally:
        await pc.close()
