"""``parley load --target janus``: the same bots against Janus's VideoRoom (skipped when
the Debian package ``janus`` is not installed). Janus runs in a namespace of its own,
joined to the test's loopback-only namespace by a veth pair (``bench/janus_server.py``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from loadgen.report.build import report_schema

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.skipif(shutil.which("janus") is None, reason="janus is not installed")
@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 is not installed")
def test_parley_load_drives_janus_videoroom_with_simulcast(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    from janus_server import CLIENT_ADDRESS, IsolatedServer

    server = IsolatedServer("janus")
    try:
        report_path = tmp_path / "janus.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "parley",
                "load",
                "--target",
                "janus",
                "--url",
                server.url,
                "--server-pid",
                str(server.pid),
                "--ice-address",
                CLIENT_ADDRESS,
                "--subscribers",
                "3",
                "--simulcast",
                "--duration",
                "5",
                "--json",
                str(report_path),
                # the test compares what the bots measure, not Janus against our levels
                "--slo-p99-ms",
                "1000",
                "--slo-freeze-ms",
                "3000",
                "--quiet",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        server.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    assert list(Draft202012Validator(report_schema()).iter_errors(report)) == []
    for kind in ("audio", "video"):
        assert 0 < report["latency_ms"][kind]["p50"] < 50
        assert report["loss_pct"][kind] < 1.0
    assert report["join_ms"]["count"] == 3
    assert report["server"]["cpu_pct"] is not None and report["server"]["rss_mb"] > 1
    assert not report["bots"]["errors"]
    layers = {
        b["max_height"]: b["layers"] for b in report["bots"]["list"] if b["role"] == "subscriber"
    }
    assert layers == {180: [2], 360: [3], 720: [4]}
