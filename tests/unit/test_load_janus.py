"""``parley load --target janus`` and ``bench/compare.py``: the pure parts."""

from __future__ import annotations

import sys
from pathlib import Path

from loadgen.load.janus import JANUS_ROOM_BASE, janus_room, substream_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from compare import compare, table  # noqa: E402
from janus_server import write_janus_config  # noqa: E402


def test_room_names_map_to_janus_room_numbers() -> None:
    assert janus_room("load-0") == JANUS_ROOM_BASE
    assert janus_room("load-12") == JANUS_ROOM_BASE + 12
    assert janus_room("demo") == janus_room("demo") >= 10_000


def test_substreams_follow_janus_high_to_low_reading_of_our_rids() -> None:
    assert substream_for(180) == 2  # q
    assert substream_for(360) == 1  # h
    assert substream_for(720) == 0  # f
    assert substream_for(100) == 2 and substream_for(1080) == 0


def test_janus_config_keeps_only_videoroom_and_websockets(tmp_path: Path) -> None:
    path = write_janus_config(tmp_path / "conf", "pj1", event_loops=2)
    text = path.read_text()
    assert 'ice_enforce_list = "pj1"' in text
    assert "event_loops = 2" in text
    assert "libjanus_videoroom.so" not in text  # not disabled
    assert "libjanus_http.so" in text and "libjanus_echotest.so" in text
    ws = (tmp_path / "conf" / "janus.transport.websockets.jcfg").read_text()
    assert "ws_port = 8188" in ws and 'ws_ip = "10.77.0.2"' in ws


def _report(cpu_us: float, p99: float) -> dict:
    latency = {"p50": 1.0, "p95": 2.0, "p99": p99, "max": 10.0}
    return {
        "latency_ms": {"audio": latency, "video": latency},
        "join_ms": {"p50": 100.0, "p95": 200.0, "max": 300.0},
        "loss_pct": {"audio": 0.0, "video": 0.0},
        "freezes": {"count": 0, "total_ms": 0.0, "max_ms": 0.0},
        "packets": {"forwarded_per_s": 1000.0},
        "server": {"cpu_pct": 5.0, "rss_mb": 50.0, "cpu_us_per_forwarded_packet": cpu_us},
        "loadgen_saturated": False,
        "bots": {"errors": []},
    }


def test_compare_ratios_are_parley_over_janus() -> None:
    result = compare({"parley": _report(30.0, 4.0), "janus": _report(15.0, 8.0)})
    ratios = result["ratios_parley_over_janus"]
    assert ratios["cpu_per_forwarded_packet"] == 2.0
    assert ratios["latency"]["audio"]["p99"] == 0.5
    assert ratios["latency"]["video"]["p50"] == 1.0
    text = table(result)
    assert "parley/janus" in text and "server CPU us / forwarded packet" in text
    only = compare({"parley": _report(30.0, 4.0)})
    assert only["ratios_parley_over_janus"] == {}
