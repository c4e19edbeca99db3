"""``parley load``: the publisher's tagged RTP, clips, the bot plan and the report shape."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from loadgen.load.config import LoadConfig
from loadgen.load.metrics import (
    FLAG_FRAME_END,
    FLAG_FRAME_START,
    FLAG_KEYFRAME,
    TAG_SIZE,
    Interval,
    parse_tag,
    stream_id,
)
from loadgen.load.plan import plan_bots
from loadgen.media.prepared import ClipPlayer, OutStream, read_clip, vp8_payloads, write_clip
from loadgen.report.build import (
    RunData,
    ServerSample,
    build_report,
    report_schema,
    saturation,
    summary_table,
)
from sfu.rtp.packet import parse_rtp

# ----------------------------------------------------------------------- media


def _stream(**kw: object) -> OutStream:
    args: dict[str, object] = dict(
        stream=stream_id(3, 1),
        video=True,
        ssrc=1234,
        payload_type=96,
        clock_rate=90_000,
        extensions=[(4, b"1")],
        rtx_ssrc=5678,
        rtx_payload_type=97,
        first_seq=65_534,
        timestamp_offset=2**32 - 10,
    )
    args.update(kw)
    return OutStream(**args)  # type: ignore[arg-type]


def test_packets_carry_a_tag_after_the_payload_and_wrap_seq() -> None:
    stream = _stream()
    keyframe = bytes([0x10]) + bytes(3000)  # P bit clear: a keyframe
    parts = stream.frame_payloads(keyframe)
    assert len(parts) == 3
    assert parts[0][2] & FLAG_KEYFRAME and parts[0][2] & FLAG_FRAME_START
    assert parts[-1][1] == 1 and parts[-1][2] & FLAG_FRAME_END
    packets = [stream.packet(p, 100, m, f, 1000 + i) for i, (p, m, f) in enumerate(parts)]
    views = [parse_rtp(p) for p in packets]
    assert [v.seq for v in views] == [65_534, 65_535, 0]
    assert {v.timestamp for v in views} == {90}
    assert views[0].extensions() == {4: b"1"}
    tags = [parse_tag(p) for p in packets]
    assert [t.seq for t in tags if t] == [0, 1, 2]
    assert [t.send_ns for t in tags if t] == [1000, 1001, 1002]
    assert all(len(p) <= 1200 + 12 + 8 for p in packets)
    # the payload before the tag is what the packetizer produced
    assert views[1].payload()[:-TAG_SIZE] == parts[1][0]


def test_retransmission_keeps_the_original_tag() -> None:
    stream = _stream()
    original = stream.packet(b"\x90\x80\x80\x01abc", 0, 1, 0, 42)
    rtx = stream.retransmission(65_534)
    assert rtx is not None
    view = parse_rtp(rtx)
    assert view.ssrc == 5678 and view.payload_type == 97
    assert struct.unpack("!H", view.payload()[:2])[0] == 65_534
    assert parse_tag(rtx) == parse_tag(original)
    assert stream.retransmission(1) is None


def test_sender_report_maps_elapsed_time() -> None:
    stream = _stream(timestamp_offset=1000)
    sr = stream.sender_report(3_900_000_000.5, 2.0)
    assert sr[1] == 200
    assert struct.unpack_from("!I", sr, 16)[0] == 1000 + 180_000


def test_vp8_payloads_leave_room_for_the_tag() -> None:
    payloads = vp8_payloads(bytes(5000), 7)
    assert max(len(p) for p in payloads) + TAG_SIZE <= 1200


def test_clip_player_loops_and_restarts_on_keyframe_request() -> None:
    player = ClipPlayer([b"k", b"a", b"b"])
    assert [player.next() for _ in range(4)] == [b"k", b"a", b"b", b"k"]
    assert player.loops == 1
    assert player.next(keyframe=True) == b"k"
    assert player.next() == b"a"


def test_clip_file_round_trip(tmp_path: Path) -> None:
    frames = [b"\x00" * 10, b"abc", bytes(range(256))]
    path = tmp_path / "x.clip"
    write_clip(path, frames)
    assert read_clip(path) == frames
    path.write_bytes(path.read_bytes()[:-5])
    try:
        read_clip(path)
    except ValueError:
        pass
    else:
        raise AssertionError("a truncated clip must be refused")


# ------------------------------------------------------------------------ plan


def test_plan_ramps_and_varies_layers() -> None:
    config = LoadConfig(
        url="http://x", rooms=2, publishers=2, subscribers=3, simulcast=True, ramp=4
    )
    pubs, subs = plan_bots(config, 100.0)
    assert [p.index for p in pubs] == [0, 1, 2, 3]
    assert [p.start_at for p in pubs] == [100.0, 100.25, 100.5, 100.75]
    assert {p.room for p in pubs} == {"load-0", "load-1"}
    assert len(subs) == 6
    assert [s.start_at for s in subs] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert [s.max_height for s in subs] == [180, 360, 720, 180, 360, 720]
    assert sum(s.room == "load-0" for s in subs) == 3
    _, plain = plan_bots(LoadConfig(url=None, subscribers=2), 0.0)
    assert [s.max_height for s in plain] == [None, None]


# ---------------------------------------------------------------------- report


def _interval(latency_ms: float, received: int, lost: int = 0) -> Interval:
    interval = Interval()
    for kind in ("audio", "video"):
        interval.latency[kind].record(latency_ms)
        counters = interval.counters[kind]
        counters.sent = received
        counters.received = received
        counters.lost = lost
        counters.expected = received + lost
    return interval


def _run(cpu: float = 10.0, lag_ms: float = 1.0) -> RunData:
    from loadgen.load.metrics import LatencyHistogram

    lag = LatencyHistogram()
    lag.record(lag_ms)
    total = Interval()
    progress = []
    for second in range(1, 6):
        interval = _interval(1.0 + second, 100)
        total.merge(interval)
        progress.append((0, {"t": 1000.0 + second, "interval": interval.to_json()}))
    result = {
        "end": 1005.0,
        "total": total.to_json(),
        "join_ms": [120.0, 80.0, None],
        "freezes": {"count": 1, "total_s": 0.7, "max_s": 0.7},
        "layer_switches": 2,
        "cpu_samples": [(1000.0 + s, cpu) for s in range(1, 6)],
        "lag": lag.to_json(),
        "bots": [
            {"name": "pub", "role": "publisher", "joined": True, "errors": []},
            {"name": "sub", "role": "subscriber", "joined": True, "errors": ["boom"]},
        ],
    }
    return RunData(
        config={
            "target": "parley",
            "rooms": 1,
            "publishers": 1,
            "subscribers": 1,
            "simulcast": False,
            "processes": 1,
        },
        started=1000.0,
        steady_from=1001.0,
        end=1005.0,
        progress=progress,
        results=[result],
        server=[ServerSample(1000.0 + s, 20.0 + s, 80.0 + s) for s in range(1, 6)],
        server_pid=4242,
        cores=2,
        machine_cpu_pct=50.0,
    )


def test_report_has_every_documented_key() -> None:
    report = build_report(_run())
    for key in (
        "latency_ms",
        "join_ms",
        "loss_pct",
        "freezes",
        "layer_switches",
        "packets",
        "server",
        "loadgen_saturated",
    ):
        assert key in report
    for kind in ("audio", "video"):
        assert set(report["latency_ms"][kind]) >= {"p50", "p95", "p99", "max"}
        assert report["latency_ms"][kind]["max"] == 6.0
        assert report["loss_pct"][kind] == 0.0
    assert report["join_ms"] == {"p50": 80.0, "p95": 120.0, "max": 120.0, "count": 2, "missing": 1}
    assert report["freezes"] == {"count": 1, "total_ms": 700.0, "max_ms": 700.0}
    assert report["layer_switches"] == 2
    assert report["packets"]["sent"] == report["packets"]["received"] == 1000
    assert report["packets"]["forwarded_per_s"] == 200.0  # 4 steady seconds of 2 x 100
    assert report["server"]["pid"] == 4242
    assert report["server"]["cpu_pct"] == 23.5  # mean of 22..25 (steady window)
    assert report["server"]["rss_mb"] == 85.0
    assert report["server"]["cpu_us_per_forwarded_packet"] == 1175.0
    assert report["loadgen_saturated"] is False
    assert report["bots"]["errors"] == ["sub: boom"]
    assert len(report["timeline"]) == 5
    assert report["latency_cdf"]["audio"][-1][1] == 1.0
    text = summary_table(report)
    assert "latency audio" in text and "load generator saturated" in text


def test_latency_is_the_steady_window_s_and_the_whole_run_s_is_kept_apart() -> None:
    # While subscribers join, the SFU replays the newest keyframe and what followed it
    # (up to 0.5 s old): those packets' age is in the run's latency, not the steady
    # window's. bench/compare.py read 65-92 ms of video p99 from them (Janus: 2 ms).
    data = _run()
    joining = _interval(450.0, 100)
    total = Interval.from_json(data.results[0]["total"])
    total.merge(joining)
    data.results[0]["total"] = total.to_json()
    data.progress.insert(0, (0, {"t": 1000.5, "interval": joining.to_json()}))
    report = build_report(data)
    for kind in ("audio", "video"):
        assert report["latency_ms"][kind]["max"] == 6.0
        assert report["latency_ms"][kind]["count"] == 4  # one sample a second, seconds 2-5
        assert report["latency_ms_run"][kind]["max"] == pytest.approx(450.0, rel=0.01)
        assert report["latency_ms_run"][kind]["count"] == 6
    assert report["verdict"] == build_report(_run())["verdict"]


def test_report_matches_its_json_schema_and_the_schema_rejects_a_broken_one() -> None:
    schema = report_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    report = json.loads(json.dumps(build_report(_run())))  # as written to disk
    assert list(validator.iter_errors(report)) == []
    broken = copy.deepcopy(report)
    del broken["latency_ms"]["video"]["p99"]
    broken["loss_pct"]["audio"] = "none"
    broken["loadgen_saturated"] = 0
    paths = sorted(".".join(map(str, e.path)) for e in validator.iter_errors(broken))
    assert paths == ["latency_ms.video", "loadgen_saturated", "loss_pct.audio"]


def test_every_top_level_key_of_the_schema_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "loadgen.md").read_text(encoding="utf-8")
    section = doc[doc.index("## The JSON report") : doc.index("## Impaired links")]
    for key in report_schema()["properties"]:
        assert f'"{key}"' in section or f"`{key}" in section, key


def test_both_sides_cpu_is_reported() -> None:
    report = build_report(_run(cpu=10.0))
    pps = report["packets"]["forwarded_per_s"]
    assert pps > 0
    assert report["loadgen"]["cpu_us_per_received_packet"] == pytest.approx(10.0 * 1e4 / pps, 0.01)
    assert report["server_saturated"] is False
    busy = _run()
    busy.server = [ServerSample(1000.0 + s, 90.0, 80.0) for s in range(1, 6)]
    assert build_report(busy)["server_saturated"] is True


def test_saturation_verdicts() -> None:
    assert saturation(_run())[0] is False
    busy, details = saturation(_run(cpu=97.0))
    assert busy and "worker 0" in details["reasons"][0]
    lagging, details = saturation(_run(lag_ms=200.0))
    assert lagging and "late" in details["reasons"][0]


# ------------------------------------------------------------------------ html


def test_html_report_has_four_plots_and_survives_an_empty_run() -> None:
    from loadgen.report.html import join_histogram, render_html

    page = render_html(build_report(_run()))
    images = _png_images(page)
    assert len(images) == 4
    for image in images:
        assert image.size == (880, 360)
    assert "Service level:" in page
    empty = _run()
    empty.progress = []
    empty.results = []
    page = render_html(build_report(empty))
    assert len(_png_images(page)) == 4  # each says "no data"
    assert join_histogram([]) == []
    assert join_histogram([5.0, 5.0]) == [(5.0, 2.0)] + [(5.0 + i, 0.0) for i in range(1, 20)]
    hist = join_histogram([0.0, 10.0, 20.0], bins=2)
    assert hist == [(0.0, 1.0), (10.0, 2.0)]


def _png_images(page: str) -> list:
    """The page's images, decoded; every one must be embedded (a data: URL)."""
    import base64
    import io
    import re

    from PIL import Image

    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert page.count("<img") == len(sources)
    images = []
    for source in sources:
        assert source.startswith("data:image/png;base64,"), source[:40]
        images.append(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))
    return images


def test_html_report_loads_nothing_from_the_network() -> None:
    """Self-contained: no attribute or style pulls a resource from http(s) when viewed
    (the configuration's server URL is text, not a reference)."""
    import re

    from loadgen.report.html import render_html

    page = render_html(build_report(_run()))
    assert not re.search(r"""(src|href|action|data)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "@import" not in page and "<script" not in page and "<link" not in page
    assert "<iframe" not in page and "<object" not in page and "<embed" not in page


def test_plots_have_labelled_axes_with_several_ticks_and_legends_off_the_lines() -> None:
    """The CDF used to have one tick and a legend over its lines: every plot now has
    labels on both axes, several tick labels each, and its legend above the axes."""
    from loadgen.report.html import PLOTS

    report = build_report(_run())
    for title, draw in PLOTS:
        fig = draw(report)
        fig.canvas.draw()
        ax = fig.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel(), title
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
            assert len(labels) >= 3, (title, labels)
        legend = ax.get_legend()
        assert legend is not None, title
        box = legend.get_window_extent()
        plot_area = ax.get_window_extent()
        assert box.y0 >= plot_area.y1 - 1, (title, box, plot_area)  # above, not over


def test_cdf_ticks_read_as_milliseconds_not_powers_of_ten() -> None:
    from loadgen.report.html import latency_cdf

    fig = latency_cdf(build_report(_run()))
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].xaxis.get_ticklabels() if t.get_text()]
    assert labels and all(re_number(label) for label in labels), labels


def re_number(text: str) -> bool:
    import re

    return re.fullmatch(r"[0-9][0-9,]*(\.[0-9]+)?", text) is not None


def test_summary_explains_packet_counts_and_unmeasured_server_cpu() -> None:
    report = build_report(_run())
    text = summary_table(report)
    assert "packets sent by publishers" in text and "(audio 500, video 500)" in text
    assert "packets received by subscribers" in text and "1000 of 1000 expected" in text
    assert "summed over subscribers" in text and "not sent x subscribers" in text
    assert "server CPU % (mean/max), RSS MB" in text and "23.50/25.00, 85.00" in text
    unmeasured = _run()
    unmeasured.server = []
    unmeasured.server_pid = None
    text = summary_table(build_report(unmeasured))
    assert "not measured: pass --server-pid PID (or let parley load start the server)" in text
    assert "-/-" not in text
