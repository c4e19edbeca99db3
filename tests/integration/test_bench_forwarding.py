"""bench/forwarding.py keeps working (the figures in docs/benchmarks.md come from it): a
short run at fan-out 2 with the SFU in its own process forwards every packet to both
subscribers over real SRTP and reports the SFU's CPU per packet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_forwarding_benchmark_short_run(tmp_path: Path) -> None:
    out = tmp_path / "forwarding.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "forwarding.py"), "--fanouts", "2",
         "--pps", "300", "--window", "2", "--warmup", "0.5", "--no-calibrate",
         "--repeat", "1", "--max-foreign", "400", "--quiet-timeout", "0.1", "--no-pin",
         "--json", str(out)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["target"] == "parley" and result["fanout"] == 2
    assert result["sent"] > 300 and result["received"] == result["expected"] == 2 * result["sent"]
    assert result["sfu_loss_pct"] == 0.0
    assert result["sfu_us_per_fwd"] > 0 and result["sfu_cpu_s"] > 0
    assert result["srtp_profiles_subscribers"] == ["SRTP_AEAD_AES_256_GCM"]
    # the C forwarding loop served the steady state (sfu/native.py)
    stats = result["server_stats"]
    assert stats["native_forwarding"] is True, stats
    assert stats["native_packets"] >= result["received"] - 2 * 20, stats
    # and the publisher's packets came in through the C ingress (sfu/_ingress.c)
    assert stats["native_ingress_packets"] >= result["sent"] - 20, stats
