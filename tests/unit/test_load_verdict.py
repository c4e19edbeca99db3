"""``parley load``'s verdict (loadgen/load/verdict.py): the report's service levels decide
``ok``, ``failed`` and the exit code."""

from __future__ import annotations

import copy
import json
from typing import Any

from jsonschema import Draft202012Validator

from loadgen.load.verdict import LoadLevels, evaluate_load, verdict_section
from loadgen.report.build import build_report, report_schema
from tests.unit.test_load_report import _run


def good_report() -> dict[str, Any]:
    report = build_report(_run())
    report["join_ms"]["missing"] = 0
    report["freezes"] = {"count": 0, "total_ms": 0.0, "max_ms": 0.0}
    report.update(verdict_section(report))
    return report


def codes(report: dict[str, Any], levels: LoadLevels | None = None) -> list[str]:
    return [f.code for f in evaluate_load(report, levels or LoadLevels())]


def test_a_run_within_its_levels_is_ok_and_valid() -> None:
    report = good_report()
    assert report["ok"] and report["failed"] == [] and report["verdict"] == "ok"
    assert report["service_level"] == {"p99_ms": 50.0, "loss_pct": 1.0, "max_freeze_ms": 1000.0}
    validator = Draft202012Validator(report_schema())
    assert list(validator.iter_errors(json.loads(json.dumps(report)))) == []
    # the schema ties ok to failed
    broken = copy.deepcopy(report)
    broken["ok"] = False
    assert list(validator.iter_errors(broken))


def test_each_level_that_breaks_is_named() -> None:
    report = good_report()
    report["latency_ms"]["video"]["p99"] = 63.9
    report["loss_pct"]["audio"] = 2.5
    report["freezes"] = {"count": 3, "total_ms": 4000.0, "max_ms": 2500.0}
    failures = evaluate_load(report, LoadLevels())
    assert [f.code for f in failures] == ["latency", "loss", "freeze"]
    assert failures[0].message == "video p99 latency 63.9 ms is over the level of 50 ms"
    assert "audio loss 2.50 %" in failures[1].message
    assert "2500 ms" in failures[2].message and "3 freezes" in failures[2].message
    # looser levels: met
    assert codes(report, LoadLevels(p99_ms=100, loss_pct=5, max_freeze_ms=3000)) == []


def test_levels_come_from_the_runs_config() -> None:
    report = good_report()
    report["config"].update(slo_p99_ms=1.0, slo_loss_pct=0.5, slo_freeze_ms=200.0)
    report.update(verdict_section(report))
    assert report["service_level"] == {"p99_ms": 1.0, "loss_pct": 0.5, "max_freeze_ms": 200.0}
    assert not report["ok"] and [f["code"] for f in report["failed"]] == ["latency", "latency"]
    assert report["verdict"].startswith("not ok: latency: audio p99 latency 6.0 ms")


def test_joins_media_and_workers() -> None:
    report = good_report()
    report["bots"]["joined"] -= 1
    report["join_ms"]["missing"] = 2
    report["errors"] = ["1 worker(s) sent no result"]
    assert codes(report) == ["incomplete", "join", "no_media"]
    nothing = good_report()
    nothing["packets"]["received"] = 0
    assert codes(nothing) == ["no_media"]


def test_capacity_runs_are_judged_by_their_steps() -> None:
    report = good_report()
    report["latency_ms"]["audio"]["p99"] = 500.0  # the last step broke the level on purpose
    report["capacity"] = {"max_subscribers_per_room": 26}
    assert codes(report) == []
    report["capacity"] = {"max_subscribers_per_room": None}
    assert codes(report) == ["capacity"]
