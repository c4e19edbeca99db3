"""The decisions of a node's heartbeat over the rooms it shares with other nodes
(``cluster/node_spread.py``; the Redis side is tested in
tests/integration/test_redis_spread.py)."""

from __future__ import annotations

from cluster.node_spread import JOIN_GRACE, idle_rooms, unused_peers
from cluster.placement import Target

A = Target("ws://10.0.0.1:8080/ws", "a")
C = Target("ws://10.0.0.3:8080/ws", "c")


def test_a_room_with_a_participant_of_this_node_stays_shared() -> None:
    linked = {"big": {"a": A}, "small": {"a": A}}
    here = {"big": 1, "small": 0}
    assert idle_rooms(linked, {}, lambda r: here[r], now=100.0) == ["small"]


def test_a_room_being_joined_here_is_not_left_before_its_participant_arrives() -> None:
    # A CI run: a heartbeat came while a join was being piped to the owner; the room had
    # no participant of this node yet, so the beat unpiped it and closed the pipe under
    # the join, and the joiner was then moved off the node ("room moved").
    linked: dict[str, dict[str, Target]] = {"big": {"a": A}}
    joining = {"big": 100.0}
    nobody = lambda room: 0  # noqa: E731
    assert idle_rooms(linked, joining, nobody, now=100.2) == []
    assert idle_rooms(linked, joining, nobody, now=100.0 + JOIN_GRACE - 0.01) == []
    # the join never brought its participant: the room is left after the grace
    assert idle_rooms(linked, joining, nobody, now=100.0 + JOIN_GRACE) == ["big"]


def test_a_pipe_is_closed_only_when_no_shared_room_links_its_peer() -> None:
    linked = {"big": {"a": A}, "other": {"a": A, "c": C}}
    assert unused_peers({"a", "c"}, linked) == set()
    del linked["other"]
    assert unused_peers({"a", "c"}, linked) == {"c"}
    # a peer being linked is listed before its link is made: its pipe stays
    linked["new"] = {"c": C}
    assert unused_peers({"a", "c"}, linked) == set()
