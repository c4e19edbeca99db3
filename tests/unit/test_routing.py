"""sfu.routing.IngressRouter learns every SSRC of a real Chromium simulcast capture."""

from __future__ import annotations

from pathlib import Path

from sfu.routing import IngressRouter
from sfu.rtp.packet import RtpView
from sfu.source import Source, SourceParams
from tests.fakes import RecordingOwner, load_capture, rtp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HEADER, RECORDS = load_capture(FIXTURES / "chromium_publish_rtp.jsonl")
MID, RID, RRID = 9, 10, 11


def _sources() -> tuple[IngressRouter, dict[str, Source]]:
    owner = RecordingOwner()
    router = IngressRouter()
    router.set_extension_ids(MID, RID, RRID)
    sources = {}
    for rid in ("q", "h", "f"):
        params = SourceParams("cam", "video", "vp8", 90000, 96, None, 97, None, mid="0", rid=rid)
        sources[rid] = Source(params, owner)
    sources["audio"] = Source(
        SourceParams("mic", "audio", "opus", 48000, 111, None, mid="1"), owner
    )
    for source in sources.values():
        router.add(source)
    return router, sources


def _route(router: IngressRouter, pkt: RtpView) -> tuple[Source, bool] | None:
    source = router.by_ssrc.get(pkt.ssrc)
    if source is not None:
        return source, False
    source = router.by_rtx_ssrc.get(pkt.ssrc)
    if source is not None:
        return source, True
    return router.learn(pkt)


def test_every_packet_of_the_capture_finds_its_layer():
    router, sources = _sources()
    rtp_records = [r for r in RECORDS if r["kind"] == "rtp"]
    assert len(rtp_records) == 500
    unknown = 0
    for record in rtp_records:
        pkt = RtpView(record["data"])
        hit = _route(router, pkt)
        if hit is None:
            unknown += 1
            continue
        source, rtx = hit
        if rtx:
            assert pkt.payload_type == 97
        else:
            assert pkt.payload_type == source.payload_type
    assert unknown == 0
    for rid, layer in HEADER["rids"].items():
        assert sources[rid].ssrc == layer["ssrc"]
        assert sources[rid].rtx_ssrc == layer["rtx_ssrc"]
    assert sources["audio"].ssrc == HEADER["audio"]["ssrc"]


def test_packets_without_extensions_after_binding_still_route():
    """Chromium drops MID/RID after the first packets: the binding must persist."""
    router, sources = _sources()
    q = HEADER["rids"]["q"]["ssrc"]
    without = [
        RtpView(r["data"]) for r in RECORDS if r["kind"] == "rtp" and RtpView(r["data"]).ssrc == q
    ]
    assert any(p.extension(RID) is None for p in without)  # the capture shows the drop
    assert all(_route(router, p) is not None for p in without)


def test_unknown_mid_rid_or_payload_type_is_refused():
    router, sources = _sources()
    assert router.learn(RtpView(rtp(1, ssrc=5, pt=96))) is None  # no extensions
    assert (
        router.learn(RtpView(rtp(1, ssrc=5, pt=96, extensions=[(MID, b"7"), (RID, b"q")]))) is None
    )
    assert (
        router.learn(RtpView(rtp(1, ssrc=5, pt=96, extensions=[(MID, b"0"), (RID, b"x")]))) is None
    )
    assert (
        router.learn(RtpView(rtp(1, ssrc=5, pt=100, extensions=[(MID, b"0"), (RID, b"q")]))) is None
    )
    # repaired-RID with the media payload type is not an RTX packet
    assert (
        router.learn(RtpView(rtp(1, ssrc=5, pt=96, extensions=[(MID, b"0"), (RRID, b"q")]))) is None
    )
    assert sources["q"].ssrc is None and router.by_ssrc == {}


def test_a_new_ssrc_for_a_bound_layer_moves_the_binding():
    router, sources = _sources()
    router.learn(RtpView(rtp(1, ssrc=5, pt=96, extensions=[(MID, b"0"), (RID, b"h")])))
    assert router.by_ssrc == {5: sources["h"]}
    router.learn(RtpView(rtp(1, ssrc=6, pt=96, extensions=[(MID, b"0"), (RID, b"h")])))
    assert router.by_ssrc == {6: sources["h"]} and sources["h"].ssrc == 6


def test_remove_forgets_a_source():
    router, sources = _sources()
    router.learn(RtpView(rtp(1, ssrc=5, pt=96, extensions=[(MID, b"0"), (RID, b"h")])))
    router.learn(RtpView(rtp(1, ssrc=7, pt=97, extensions=[(MID, b"0"), (RRID, b"h")])))
    router.remove(sources["h"])
    assert router.by_ssrc == {} and router.by_rtx_ssrc == {}
    assert ("0", "h") not in router.by_mid_rid
