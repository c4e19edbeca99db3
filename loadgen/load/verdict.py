"""The verdict of ``parley load``: did the run meet its service levels? Pure.

A run is ``ok`` when every bot joined, every subscriber got video, every worker reported,
and (outside ``--find-capacity``, whose steps are judged one by one) p99 latency of each
kind, loss of each kind and the longest freeze are within the service levels
(``--slo-p99-ms``, ``--slo-loss-pct``, ``--slo-freeze-ms``). The exit code of ``parley
load`` is 0 when ``ok``, 1 otherwise. See ``docs/loadgen.md``, "Service levels and the
exit code".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadgen.bot.verdict import Failure, verdict_line

KINDS = ("audio", "video")


@dataclass(frozen=True, slots=True)
class LoadLevels:
    """The service levels of a run (the defaults of ``parley load``)."""

    p99_ms: float = 50.0
    loss_pct: float = 1.0
    max_freeze_ms: float = 1000.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LoadLevels:
        default = cls()
        return cls(
            float(config.get("slo_p99_ms", default.p99_ms)),
            float(config.get("slo_loss_pct", default.loss_pct)),
            float(config.get("slo_freeze_ms", default.max_freeze_ms)),
        )

    def to_json(self) -> dict[str, float]:
        return {
            "p99_ms": self.p99_ms,
            "loss_pct": self.loss_pct,
            "max_freeze_ms": self.max_freeze_ms,
        }


def evaluate_load(report: dict[str, Any], levels: LoadLevels) -> list[Failure]:
    """Every service level or run condition ``report`` (``build_report``'s) failed."""
    failures: list[Failure] = []
    if report["errors"]:
        failures.append(Failure("incomplete", "; ".join(str(e) for e in report["errors"])))
    bots = report["bots"]
    total = bots["publishers"] + bots["subscribers"]
    if bots["joined"] < total:
        failures.append(
            Failure("join", f"{total - bots['joined']} of {total} bots did not join the room")
        )
    missing = report["join_ms"]["missing"]
    if missing:
        failures.append(Failure("no_media", f"{missing} subscriber(s) never got a video frame"))
    capacity = report.get("capacity")
    if capacity is not None:  # --find-capacity: each step was judged against the levels
        if not capacity.get("max_subscribers_per_room"):
            failures.append(Failure("capacity", "no step held the service level"))
        return failures
    if bots["subscribers"] and not report["packets"]["received"]:
        failures.append(Failure("no_media", "subscribers received no packets at all"))
    for kind in KINDS:
        p99 = report["latency_ms"][kind]["p99"]
        if p99 is not None and p99 > levels.p99_ms:
            failures.append(
                Failure(
                    "latency",
                    f"{kind} p99 latency {p99:.1f} ms is over the level of {levels.p99_ms:g} ms",
                )
            )
    for kind in KINDS:
        loss = report["loss_pct"][kind]
        if loss is not None and loss > levels.loss_pct:
            failures.append(
                Failure(
                    "loss", f"{kind} loss {loss:.2f} % is over the level of {levels.loss_pct:g} %"
                )
            )
    freeze = report["freezes"]["max_ms"]
    if freeze > levels.max_freeze_ms:
        failures.append(
            Failure(
                "freeze",
                f"the longest video freeze, {freeze:.0f} ms, is over the level of "
                f"{levels.max_freeze_ms:g} ms ({report['freezes']['count']} freezes)",
            )
        )
    return failures


def verdict_section(report: dict[str, Any]) -> dict[str, Any]:
    """The report's ``service_level``, ``ok``, ``failed`` and ``verdict`` keys."""
    levels = LoadLevels.from_config(report.get("config", {}))
    failures = evaluate_load(report, levels)
    return {
        "service_level": levels.to_json(),
        "ok": not failures,
        "failed": [f.to_json() for f in failures],
        "verdict": verdict_line(failures),
    }
