"""``parley load`` with a subscriber behind an impaired link: limited to 300 kbit/s for
part of the run, it switches down, and back to the top layer once the limit is lifted;
its neighbours on loopback keep their layers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from loadgen.report.build import report_schema


def test_a_subscriber_behind_300_kbits_switches_down_and_back_up(tmp_path: Path) -> None:
    report_path = tmp_path / "impaired.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "parley", "load",
            "--simulcast", "--subscribers", "1", "--impaired-subscribers", "1",
            "--link-schedule", "5:300,13:none", "--duration", "29",
            "--json", str(report_path), "--quiet",
            # 300 kbit/s loses and freezes video on purpose: the levels are not the point
            "--slo-p99-ms", "100000", "--slo-loss-pct", "100", "--slo-freeze-ms", "100000",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    assert list(Draft202012Validator(report_schema()).iter_errors(report)) == []
    impaired = report["impaired"]
    (link,) = impaired["links"]
    assert [c["rate_kbit"] for c in link["changes"]] == [None, 300, None], link
    subs = {s["name"]: s for s in impaired["subscribers"]}
    slow = subs["imp-0-0"]
    context = (slow["layer_changes"], slow["phases"])
    assert slow["impaired"] and slow["top_layer"] and set(slow["top_layer"].values()) == {"f"}
    assert slow["switch_down_s"] is not None and slow["switch_down_s"] < 3.0, context
    assert slow["back_to_top_s"] is not None, context  # within the 16 s after the lift
    assert slow["layer_switches_between"] >= 2, context
    assert slow["freezes"]["count"] is not None
    # the neighbour on loopback never switched down
    neighbour = subs["sub-0-0"]
    assert not neighbour["impaired"] and neighbour["switch_down_s"] is None, neighbour
    # the lean subscribers gave the server feedback
    bots = {b["name"]: b for b in report["bots"]["list"]}
    assert bots["imp-0-0"]["receiver_reports_sent"] > 20
    assert bots["imp-0-0"]["nacks_sent"] > 0
    assert report["loss_before_repair_pct"]["video"] >= report["loss_pct"]["video"]
