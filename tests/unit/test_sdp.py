"""sfu.sdp: simulcast read from a real Chromium offer, written into the answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu.aiortc_adapter import describe_remote_media
from sfu.sdp import SimulcastError, SimulcastOffer, read_simulcast, write_simulcast_answer

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
