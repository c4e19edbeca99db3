"""The pure parts of the Redis cluster: two random choices, the load a node publishes,
its rates and the once-per-interval failure log (``cluster/``; Redis itself is tested in
tests/integration/test_redis_placement.py and test_redis_nodes.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections import Counter

import pytest

from cluster.redis_node import node_url, redis_arguments_error
from cluster.redis_placement import SCORE_TOLERANCE, estimated_score, two_choices
from cluster.registry import Logged, NodeLoad, RateSampler, load_score
from parley_client import base_url
from signaling.messages import ProtocolError, Redirect, parse_server_message


def node(
    node_id: str,
    *,
    cpu: float = 0.0,
    participants: int = 0,
    rooms: int = 0,
    capacity: int = 100,
    draining: bool = False,
) -> NodeLoad:
    return NodeLoad(
        node_id=node_id,
        ws_url=f"ws://{node_id}:8080/ws",
        capacity=capacity,
        cpu_percent=cpu,
        rooms=rooms,
        participants=participants,
        published_tracks=0,
        forwarders=0,
        forwarded_pps=0.0,
        draining=draining,
        at=1000.0,
    )


def test_score_is_the_larger_of_cpu_and_participants_per_capacity() -> None:
    assert load_score(50.0, 10, 100) == 0.5
    assert load_score(5.0, 80, 100) == 0.8
    assert node("a", cpu=20, participants=30).score == pytest.approx(0.3)
    # a pending room counts as one participant more
    assert estimated_score(node("a", participants=30), 5) == pytest.approx(0.35)


def test_load_json_round_trip() -> None:
    load = node("n1", cpu=12.5, participants=7, rooms=2)
    assert NodeLoad.from_json(load.to_json()) == load


def test_a_node_of_workers_has_a_core_per_worker() -> None:
    # parley serve --workers 4 --redis: 150 % CPU over four processes is 0.375 of the node
    assert load_score(150.0, 10, 100, workers=4) == pytest.approx(0.375)
    four = dataclasses.replace(node("w", cpu=150.0, participants=10), workers=4)
    assert four.score == pytest.approx(0.375)
    assert NodeLoad.from_json(four.to_json()) == four
    # a load written before the field existed is one process
    legacy = {k: v for k, v in json.loads(four.to_json()).items() if k != "workers"}
    assert NodeLoad.from_json(json.dumps(legacy)).workers == 1


def test_no_node_or_only_draining_nodes_gives_none() -> None:
    rng = random.Random(1)
    assert two_choices([], {}, rng) is None
    assert two_choices([node("a", draining=True)], {}, rng) is None


def test_a_single_healthy_node_takes_everything_and_draining_ones_nothing() -> None:
    rng = random.Random(2)
    nodes = [node("a", draining=True), node("b", cpu=90), node("c", draining=True)]
    assert {two_choices(nodes, {}, rng).node_id for _ in range(50)} == {"b"}  # type: ignore[union-attr]


def test_the_less_loaded_of_the_two_drawn_wins() -> None:
    rng = random.Random(3)
    nodes = [node("idle", cpu=5), node("busy", cpu=80)]
    assert {two_choices(nodes, {}, rng).node_id for _ in range(50)} == {"idle"}  # type: ignore[union-attr]


def test_two_choices_never_picks_the_most_loaded_but_spreads_over_the_others() -> None:
    rng = random.Random(4)
    nodes = [node("a", cpu=10), node("b", cpu=40), node("c", cpu=90)]
    picks = Counter(two_choices(nodes, {}, rng).node_id for _ in range(300))  # type: ignore[union-attr]
    # the most loaded node loses every pair it is drawn in; the middle one wins the
    # pairs without the least loaded (1 in 3): "two choices", not "always the least"
    assert picks["c"] == 0
    assert 60 < picks["b"] < 140 and picks["a"] > 160, picks


def test_within_the_tolerance_the_node_with_fewer_rooms_wins() -> None:
    rng = random.Random(5)
    jitter = SCORE_TOLERANCE / 2 * 100  # CPU percent apart, less than the tolerance
    nodes = [node("a", cpu=1.0, rooms=4), node("b", cpu=1.0 + jitter, rooms=1)]
    assert {two_choices(nodes, {}, rng).node_id for _ in range(30)} == {"b"}  # type: ignore[union-attr]
    # rooms claimed since the last heartbeat count too
    assert {two_choices(nodes, {"b": 5}, rng).node_id for _ in range(30)} == {"a"}  # type: ignore[union-attr]


def test_pending_claims_spread_a_burst_of_new_rooms() -> None:
    """Twenty rooms placed within one heartbeat (the loads do not move): each claim is
    counted as pending, so the two idle nodes share them."""
    rng = random.Random(6)
    nodes = [node("a", cpu=2.0), node("b", cpu=3.0)]
    pending: Counter[str] = Counter()
    for _ in range(20):
        chosen = two_choices(nodes, pending, rng)
        assert chosen is not None
        pending[chosen.node_id] += 1
    assert pending == {"a": 10, "b": 10}


def test_cpu_percent_is_a_moving_average_of_the_process_cpu() -> None:
    sampler = RateSampler(cpu_tau=5.0)
    assert sampler.cpu_percent(100.0, 5.0) == 0.0  # nothing to compare with yet
    # a one-second spike to 100 % moves the average by 1 - e^(-1/5) of the way
    assert sampler.cpu_percent(101.0, 6.0) == pytest.approx(18.1, abs=0.05)
    assert sampler.cpu_percent(101.0, 7.0) == pytest.approx(18.1, abs=0.05)  # no time: same
    # a steady 50 % for long enough is read as 50 %
    t, cpu = 101.0, 7.0
    for _ in range(60):
        t, cpu = t + 1.0, cpu + 0.5
        value = sampler.cpu_percent(t, cpu)
    assert value == pytest.approx(50.0, abs=0.1)


def test_forwarded_packets_per_second_follow_forwarders_coming_and_going() -> None:
    sampler = RateSampler()
    assert sampler.forwarded(0.0, {1: 100}) == 0.0
    # forwarder 1 sent 50 more, forwarder 2 is new with 30, over 2 s
    assert sampler.forwarded(2.0, {1: 150, 2: 30}) == 40.0
    # forwarder 1 left (its packets are not counted again), 2 sent 10 in 1 s
    assert sampler.forwarded(1.0, {2: 40}) == 10.0


def test_a_recurring_failure_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    log = Logged(interval=10.0)
    with caplog.at_level(logging.INFO, logger="cluster.registry"):
        for t in (0.0, 1.0, 2.0, 9.9):
            log.failed(t, "heartbeat", ConnectionError("refused"))
        assert len(caplog.records) == 1
        log.failed(10.0, "heartbeat", ConnectionError("refused"))
        assert len(caplog.records) == 2
        log.recovered("heartbeat")
        assert "reachable again" in caplog.records[-1].getMessage()
        log.failed(10.5, "heartbeat", ConnectionError("refused"))  # a new outage: at once
    assert len(caplog.records) == 4


def test_redirect_message_and_base_url() -> None:
    message = parse_server_message(
        '{"type":"redirect","url":"ws://10.0.0.7:8080/ws","room":"r","request_id":"j"}'
    )
    assert message == Redirect("ws://10.0.0.7:8080/ws", "r", "j")
    assert base_url("ws://10.0.0.7:8080/ws") == "ws://10.0.0.7:8080"
    with pytest.raises(ProtocolError):
        parse_server_message('{"type":"redirect","url":"http://elsewhere/ws","room":"r"}')


def test_node_url_from_the_options() -> None:
    import argparse

    def args(**kw: object) -> argparse.Namespace:
        base = {"node_url": None, "host": "10.0.0.7", "port": 8080}
        return argparse.Namespace(**{**base, **kw})

    assert node_url(args()) == "ws://10.0.0.7:8080/ws"
    assert node_url(args(node_url="wss://a.example/ws")) == "wss://a.example/ws"
    for bad in (args(host="0.0.0.0"), args(port=0), args(node_url="http://a/ws")):
        with pytest.raises(ValueError):
            node_url(bad)


def test_redis_arguments_are_checked_before_serving() -> None:
    import argparse

    def args(**kw: object) -> argparse.Namespace:
        base = {"redis": "redis://10.0.0.5:6379/0", "node_url": None, "host": "h", "port": 1}
        return argparse.Namespace(**{**base, **kw})

    assert redis_arguments_error(args()) is None
    assert redis_arguments_error(args(redis=None, host="0.0.0.0")) is None  # no cluster
    assert "redis://" in (redis_arguments_error(args(redis="10.0.0.5:6379")) or "")
    assert "--node-url" in (redis_arguments_error(args(host="0.0.0.0")) or "")
    # one room over several nodes: with --redis, on nodes of one process
    assert redis_arguments_error(args(node_spread=True)) is None
    assert "needs --redis" in (redis_arguments_error(args(redis=None, node_spread=True)) or "")
    assert "--workers" in (redis_arguments_error(args(node_spread=True, workers="2")) or "")
    assert "needs --node-spread" in (redis_arguments_error(args(node_spread_after=3)) or "")
