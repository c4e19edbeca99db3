"""bench/hotpath.py keeps running as the SFU's classes change (it broke once unnoticed):
a small run through the real Source/Forwarder/SRTP/sendto path writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_hotpath_benchmark_runs_and_forwards_every_packet(tmp_path: Path) -> None:
    out = tmp_path / "hotpath.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hotpath.py"), "--packets", "4000",
         "--fanouts", "1,4", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert set(result["stages_us"]) >= {"srtp_unprotect", "srtp_protect", "sendto"}
    assert all(v > 0 for v in result["stages_us"].values())
    assert [f["fanout"] for f in result["fanouts"]] == [1, 4]
    assert all(f["us_per_forwarded"] > 0 for f in result["fanouts"])
    # both paths measured (the script exits non-zero if the native one served fewer
    # than 80 % of the packets)
    assert result["native_available"] is True
    assert all(f["native_over_python"] > 0 for f in result["fanouts"])
    assert "fan-out   4 native" in proc.stdout and "fan-out   4 python" in proc.stdout
    # and through the C ingress (the script exits non-zero if it took fewer than 99 %)
    assert "fan-out   4 ingress" in proc.stdout
    assert all(f["ingress_over_native"] > 0 for f in result["fanouts"])
