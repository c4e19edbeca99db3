"""sfu.sdp: simulcast read from a real Chromium offer, written into the answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu.aiortc_adapter import describe_remote_media
from sfu.sdp import (
    SimulcastError,
    SimulcastOffer,
    TransportError,
    check_transport,
    read_simulcast,
    write_simulcast_answer,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OFFER = (FIXTURES / "chromium_simulcast_offer.sdp").read_text()
ANSWER = (FIXTURES / "chromium_publish_answer.sdp").read_bytes().decode()


def _without_simulcast(text: str) -> str:
    return "\r\n".join(
        line for line in text.split("\r\n") if not line.startswith(("a=rid:", "a=simulcast:"))
    )


def test_reads_the_chromium_offer():
    assert read_simulcast(OFFER) == {0: SimulcastOffer(mid="0", rids=("q", "h", "f"))}


def test_writing_the_answer_reproduces_what_chromium_accepted():
    stripped = _without_simulcast(ANSWER)
    assert "a=simulcast" not in stripped
    written = write_simulcast_answer(stripped, {"0": ("q", "h", "f")})
    assert written == ANSWER  # byte for byte, CRLF kept
    # and aiortc's own parser still reads it
    assert [m.mid for m in describe_remote_media(written)] == ["0", "1"]


def test_answer_sections_without_layers_are_untouched():
    stripped = _without_simulcast(ANSWER)
    assert write_simulcast_answer(stripped, {}) == stripped
    written = write_simulcast_answer(stripped, {"1": ("a", "b")})
    audio = written.split("m=audio")[1]
    video = written.split("m=audio")[0]
    assert "a=simulcast:recv a;b" in audio and "a=rid:a recv" in audio
    assert "a=rid" not in video


def test_lf_only_answer_keeps_lf_and_final_newline():
    text = "v=0\ns=-\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:v\na=sendrecv\n"
    out = write_simulcast_answer(text, {"v": ("lo", "hi")})
    assert out == (
        "v=0\ns=-\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:v\na=sendrecv\n"
        "a=rid:lo recv\na=rid:hi recv\na=simulcast:recv lo;hi\n"
    )


def _offer(*lines: str) -> str:
    return "\r\n".join(["v=0", "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:0", *lines, ""])


def test_paused_and_alternative_streams():
    text = _offer("a=rid:a send", "a=rid:b send", "a=rid:c send", "a=simulcast:send ~a;b,c;c")
    assert read_simulcast(text)[0].rids == ("a", "b", "c")


def test_undeclared_and_receive_rids_are_dropped():
    text = _offer("a=rid:a send", "a=rid:b recv", "a=simulcast:send a;b;z recv b")
    assert read_simulcast(text)[0].rids == ("a",)


def test_rids_without_simulcast_line_or_receive_only_are_not_simulcast():
    assert read_simulcast(_offer("a=rid:a send", "a=rid:b send")) == {}
    assert read_simulcast(_offer("a=rid:a recv", "a=simulcast:recv a")) == {}
    assert read_simulcast("v=0\r\nm=audio 9 RTP/AVP 0\r\na=mid:1\r\n") == {}


@pytest.mark.parametrize(
    "lines",
    [
        ("a=rid:", "a=simulcast:send a"),
        ("a=rid:bad/rid send", "a=simulcast:send a"),
        ("a=rid:a send", "a=simulcast:send"),
        ("a=rid:a send", "a=simulcast:send a;b/c"),
        ("a=rid:a send", "a=simulcast:send a recv"),
    ],
)
def test_malformed_lines_raise(lines):
    with pytest.raises(SimulcastError):
        read_simulcast(_offer(*lines))


def test_too_many_layers_raise():
    rids = [f"r{i}" for i in range(9)]
    text = _offer(*(f"a=rid:{r} send" for r in rids), "a=simulcast:send " + ";".join(rids))
    with pytest.raises(SimulcastError, match="more than"):
        read_simulcast(text)


# ------------------------------------------------------------------ check_transport

GSTREAMER_OFFER = (FIXTURES / "gstreamer_webrtcbin_publish_offer.sdp").read_text()


def _drop(text: str, *prefixes: str) -> str:
    return "\r\n".join(line for line in text.splitlines() if not line.startswith(prefixes))


def _drop_second_fingerprint(text: str) -> str:
    """GStreamer's offer without the video (second, bundled) m-line's fingerprint."""
    head, _, tail = text.partition("m=video")
    return head + "m=video" + _drop(tail, "a=fingerprint")


def test_real_offers_have_what_a_connection_needs():
    check_transport(OFFER)  # Chromium
    check_transport(GSTREAMER_OFFER)  # webrtcbin: audio, and a bundle-only video m-line
    # a bundled m-line other than the first shares the first one's DTLS transport
    check_transport(_drop_second_fingerprint(GSTREAMER_OFFER))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_drop(OFFER, "a=fingerprint"), "m-line 0 (mid 0): no a=fingerprint"),
        (_drop(GSTREAMER_OFFER, "a=fingerprint"), "m-line 0 (mid audio0): no a=fingerprint"),
        (_drop(OFFER, "a=setup"), "no a=setup"),
        (OFFER.replace("a=setup:actpass", "a=setup:holdconn"), "a=setup:holdconn is not one"),
        (_drop(OFFER, "a=ice-ufrag"), "no a=ice-ufrag"),
        (_drop(GSTREAMER_OFFER, "a=ice-pwd"), "m-line 0 (mid audio0): no a=ice-pwd"),
        (_drop(OFFER, "a=rtcp-mux"), "no a=rtcp-mux"),
        (OFFER.replace("a=fingerprint:sha-256", "a=fingerprint:md5"), "of a supported hash"),
        (OFFER.replace("a=fingerprint:sha-256 6C:45", "a=fingerprint:sha-256 6C"), "not a sha-256"),
        (OFFER.replace("a=fingerprint:sha-256 6C:45", "a=fingerprint:sha-256 ZZ:45"), "not a sha"),
        (OFFER.replace("a=fingerprint:sha-256 ", "a=fingerprint:sha-256"), "malformed"),
        # out of the bundle, the video m-line needs a fingerprint of its own
        (
            _drop_second_fingerprint(GSTREAMER_OFFER).replace(
                "BUNDLE audio0 video1", "BUNDLE audio0"
            ),
            "m-line 1 (mid video1): no a=fingerprint",
        ),
    ],
)
def test_offers_aiortc_cannot_connect_with_are_refused(text: str, message: str) -> None:
    with pytest.raises(TransportError) as caught:
        check_transport(text)
    assert message in str(caught.value)


def test_session_level_attributes_count_for_every_m_line():
    lines = OFFER.splitlines()
    moved = [line for line in lines if line.startswith(("a=fingerprint", "a=setup", "a=ice-"))]
    rest = [line for line in lines if line not in moved]
    at = rest.index(next(line for line in rest if line.startswith("m=")))
    check_transport("\r\n".join(rest[:at] + moved + rest[at:]))


def test_an_unknown_hash_next_to_a_supported_one_is_fine():
    line = next(x for x in OFFER.splitlines() if x.startswith("a=fingerprint:"))
    check_transport(OFFER.replace(line, "a=fingerprint:sha-1 AA:BB\r\n" + line))


def test_data_m_lines_need_no_rtcp_mux_and_other_kinds_are_not_checked():
    data = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:9\r\n"
    data += "a=setup:actpass\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n"
    text = OFFER.rstrip() + "\r\nm=text 9 RTP/AVP 0\r\n" + data
    check_transport(text.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 9"))
    with pytest.raises(TransportError, match=r"\(mid 9\): no a=fingerprint"):
        check_transport(text)  # not bundled: a DTLS transport of its own
