"""``loadgen/load/nodes.py``: where a load run's rooms landed, per node, and its rejoins."""

from __future__ import annotations

from typing import Any

from loadgen.load.nodes import http_url, nodes_section, reconnects_line, reconnects_section


def _rejoin(before: str, after: str, media_ms: float | None) -> dict[str, Any]:
    return {
        "reason": "websocket closed (code 1006)",
        "node_before": before,
        "node": after,
        "attempts": 2,
        "recovered": True,
        "joined_after_ms": 500.0,
        "media_after_ms": media_ms,
        "last_error": None,
    }


A, B = "http://10.0.0.1:8080", "http://10.0.0.2:8080"
BOTS: list[dict[str, Any]] = [
    {"name": "pub-0", "room": "load-0", "node": A, "reconnects": []},
    {"name": "sub-0", "room": "load-0", "node": A, "reconnects": []},
    {"name": "pub-1", "room": "load-1", "node": A, "reconnects": [_rejoin(B, A, 700.0)]},
    {"name": "sub-1", "room": "load-1", "node": A, "reconnects": [_rejoin(B, A, None)]},
    {"name": "late", "room": "load-2", "node": None, "reconnects": []},  # never joined
]


def test_node_urls_are_compared_in_one_form() -> None:
    assert http_url("ws://10.0.0.1:8080/ws") == http_url("http://10.0.0.1:8080/") == A
    assert http_url("wss://n.example/ws") == "https://n.example"


def test_rooms_are_counted_where_their_bots_ended_and_where_they_were_first_placed() -> None:
    samples = {
        A: [(1.0, {"participants": 2}), (5.0, {"participants": 4}), (20.0, {"participants": 0})],
        B: [(1.0, {"participants": 2}), (5.0, None)],  # B died: no answer
    }
    nodes = {n["url"]: n for n in nodes_section(BOTS, samples, start=0.5, end=10.0)}
    assert set(nodes) == {A, B}
    assert nodes[A]["rooms"] == ["load-0", "load-1"] and nodes[A]["bots"] == 4
    assert nodes[A]["first_rooms"] == ["load-0"]
    assert nodes[B]["rooms"] == [] and nodes[B]["first_rooms"] == ["load-1"]
    # the busiest answer within the window (the one after the end is not in it)
    assert nodes[A]["healthz"] == {"participants": 4} and nodes[A]["peak_participants"] == 4
    assert nodes[B]["healthz"] == {"participants": 2} and nodes[B]["samples"] == 1


def test_a_node_that_never_answered_has_no_health() -> None:
    (node,) = nodes_section([], {A: [(1.0, None)]}, start=0.0, end=10.0)
    assert node["healthz"] is None and node["peak_participants"] is None and node["bots"] == 0


def test_rejoins_are_summed_with_the_time_to_media_again() -> None:
    section = reconnects_section(BOTS)
    assert section == {
        "count": 2,
        "bots": 2,
        "recovered": 2,
        "media_back": 1,
        "media_after_ms": {"p50": 700.0, "max": 700.0},
    }
    assert "2 rejoined" in reconnects_line(section)
    assert reconnects_section([])["media_after_ms"] == {"p50": None, "max": None}
