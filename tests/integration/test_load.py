"""``parley load`` end to end: it starts a real server, runs bots (2 rooms, each with 2
simulcast publishers and 3 subscribers) over loopback in two worker processes and writes a
report that matches its documented schema and whose every key has a sane value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from loadgen.join_phases import END, ORDER, SUBSCRIBE, order_problems
from loadgen.report.build import report_schema


def validator() -> Draft202012Validator:
    return Draft202012Validator(report_schema())


def test_parley_load_reports_latency_join_loss_and_server_cost(tmp_path: Path) -> None:
    report_path = tmp_path / "load.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "parley",
            "load",
            "--rooms",
            "2",
            "--publishers",
            "2",
            "--subscribers",
            "3",
            "--simulcast",
            "--duration",
            "6",
            "--processes",
            "2",
            "--json",
            str(report_path),
            "--html",
            str(tmp_path / "out" / "load.html"),  # the directory is made
            # loose levels: the machine is shared with other work, and this test is about
            # the report (a tight level's exit code is the next test's)
            "--slo-p99-ms",
            "1000",
            "--slo-freeze-ms",
            "3000",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "latency audio" in proc.stdout  # the summary table
    assert "service level" in proc.stdout and "parley load: ok" in proc.stderr
    report = json.loads(report_path.read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in validator().iter_errors(report)]
    assert errors == [], errors  # the documented schema (loadgen/report.schema.json)
    assert report["ok"] and report["failed"] == [], report["failed"]
    assert report["service_level"]["p99_ms"] == 1000.0
    page = (tmp_path / "out" / "load.html").read_text()
    assert page.count('<img alt="') == 4 and page.count('src="data:image/png;base64,') == 4

    for kind in ("audio", "video"):
        latency = report["latency_ms"][kind]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        assert latency["p50"] < 50, latency  # loopback: a few ms at most
        assert latency["count"] > 100
        assert report["loss_pct"][kind] is not None and report["loss_pct"][kind] < 1.0

    join = report["join_ms"]
    assert join["count"] == 6 and join["missing"] == 0
    assert 0 < join["p50"] <= join["p95"] <= join["max"] < 5000
    # each subscriber's join by phase (loadgen/join_phases.py): ordered, ending at its
    # join time; the report has their medians
    subscribers = [b for b in report["bots"]["list"] if b["role"] == "subscriber"]
    for bot in subscribers:
        phases = bot["join_phases_ms"]
        assert order_problems(phases) == [], phases
        assert set(SUBSCRIBE) <= set(phases), phases
        assert abs(phases[END] - bot["join_ms"]) <= 0.1, (phases, bot["join_ms"])
    medians = report["join_phases_ms"]
    assert list(medians) == [p for p in ORDER if p in medians] and set(SUBSCRIBE) <= set(medians)
    assert "join phases, median ms" in proc.stdout

    assert report["freezes"]["count"] == 0, report["freezes"]
    assert isinstance(report["layer_switches"], int)
    packets = report["packets"]
    assert packets["sent"] > 0 and packets["received"] > packets["sent"]  # fan-out 4
    assert packets["forwarded_per_s"] > 100

    server = report["server"]
    assert isinstance(server["pid"], int)
    assert server["cpu_pct"] is not None and 0 < server["cpu_pct"] < 400
    assert server["rss_mb"] is not None and 20 < server["rss_mb"] < 2000

    assert isinstance(report["loadgen_saturated"], bool)
    assert report["loadgen"]["processes"] == 2
    assert report["e2e_ms"] is None  # only with --e2e
    assert report["bots"]["joined"] == 10 and not report["bots"]["errors"]
    assert {b["room"] for b in report["bots"]["list"]} == {"load-0", "load-1"}
    # publishers answer the server's offers too (each receives the other's media)
    publishers = [b for b in report["bots"]["list"] if b["role"] == "publisher"]
    assert all(b["packets_received"] > 0 and b["media_started"] for b in publishers)

    # subscribers asked for 180, 360 and 720: each got that simulcast layer of both tracks
    layers = sorted(
        (b["room"], b["max_height"], b["layers"])
        for b in report["bots"]["list"]
        if b["role"] == "subscriber"
    )
    assert layers == [
        (room, height, [code])
        for room in ("load-0", "load-1")
        for height, code in ((180, 2), (360, 3), (720, 4))
    ]


def test_parley_load_exits_1_and_names_the_level_it_missed(tmp_path: Path) -> None:
    """A latency level no real run can meet (0.01 ms): exit code 1, ``failed`` names
    ``latency`` for both kinds, the summary and stderr say why."""
    report_path = tmp_path / "tight.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "parley", "load", "--subscribers", "1",
            "--duration", "3", "--slo-p99-ms", "0.01", "--json", str(report_path), "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    assert list(validator().iter_errors(report)) == []
    assert report["ok"] is False
    assert [f["code"] for f in report["failed"]] == ["latency", "latency"], report["failed"]
    assert "audio p99 latency" in report["failed"][0]["message"]
    assert "NOT MET (p99 <= 0.01 ms" in proc.stdout
    assert "parley load: not ok: latency: audio p99 latency" in proc.stderr
    # everything else about the run was fine: media flowed to the subscriber
    assert report["bots"]["joined"] == 2 and report["join_ms"]["missing"] == 0


def test_parley_load_e2e_reads_capture_time_back_from_decoded_frames(tmp_path: Path) -> None:
    report_path = tmp_path / "e2e.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "parley",
            "load",
            "--subscribers",
            "1",
            "--duration",
            "4",
            "--e2e",
            "--json",
            str(report_path),
            "--slo-p99-ms",
            "1000",
            "--slo-freeze-ms",
            "3000",  # a shared machine
            "--quiet",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    assert list(validator().iter_errors(report)) == []  # e2e_ms filled in
    e2e = report["e2e_ms"]
    assert e2e["count"] > 20 and e2e["unreadable"] == 0
    assert 0 < e2e["p50"] <= e2e["max"] < 2000
    # glass to glass includes encoding and decoding: above the packet latency
    assert e2e["p50"] > report["latency_ms"]["video"]["p50"]
    assert "glass to glass" in proc.stdout
