"""Pure parts of ``parley serve --workers``: LocalPlacement, the relay's first-message
handling, the workers' argv, the merged /metrics, the forwarded client address."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.local_placement import LocalPlacement, NoLiveWorker
from cluster.metrics_merge import label_sample, merge_metrics
from cluster.placement import Target
from cluster.relay import first_message, is_joined
from cluster.workers import worker_argv, worker_count
from signaling import messages as m

W0 = Target("ws://127.0.0.1:1000/ws", "w0")
W1 = Target("ws://127.0.0.1:1001/ws", "w1")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_a_room_stays_on_its_worker_and_new_rooms_go_to_the_least_loaded() -> None:
    load = {"w0": 0, "w1": 0}
    placement = LocalPlacement(load=lambda node: load[node])
    placement.worker_up(W0)
    placement.worker_up(W1)
    assert run(placement.place("a")) == W0  # a tie: the first worker
    assert run(placement.place("b")) == W1  # fewer rooms
    load["w0"] = 5  # a busy room on w0
    assert run(placement.place("c")) == W1  # fewer participants wins over fewer rooms
    assert run(placement.place("a")) == W0  # a placed room does not move
    assert placement.rooms_of("w1") == ["b", "c"]


def test_a_dead_worker_s_rooms_are_placed_anew_and_it_comes_back_at_a_new_address() -> None:
    placement = LocalPlacement()
    placement.worker_up(W0)
    placement.worker_up(W1)
    assert run(placement.place("a")) == W0
    assert placement.worker_down("w0") == ["a"]
    assert run(placement.place("a")) == W1
    restarted = Target("ws://127.0.0.1:2000/ws", "w0")
    placement.worker_up(restarted)
    assert run(placement.place("a")) == W1  # rooms stay where they were placed
    assert run(placement.place("new")) == restarted  # the restarted worker is idle


def test_forget_only_drops_the_owner_it_names() -> None:
    placement = LocalPlacement()
    placement.worker_up(W0)
    placement.worker_up(W1)
    assert run(placement.place("a")) == W0
    run(placement.forget("a", W1))  # someone with a stale view: no effect
    assert placement.owner("a") == W0
    run(placement.forget("a", W0))
    assert placement.owner("a") is None


def test_a_room_owned_by_a_stale_address_is_placed_again() -> None:
    placement = LocalPlacement()
    placement.worker_up(W0)
    assert run(placement.place("a")) == W0
    placement.worker_up(Target("ws://127.0.0.1:3000/ws", "w0"))  # restarted, unnoticed
    assert run(placement.place("a")).ws_url == "ws://127.0.0.1:3000/ws"


def test_no_live_worker_is_an_error() -> None:
    placement = LocalPlacement()
    with pytest.raises(NoLiveWorker):
        run(placement.place("a"))
    placement.worker_up(W0)
    placement.worker_down("w0")
    with pytest.raises(NoLiveWorker):
        run(placement.place("a"))


def test_the_first_message_is_validated_as_a_worker_would() -> None:
    join = first_message('{"type": "join", "room": "r1", "name": "ann"}', 1000)
    assert isinstance(join, m.Join) and join.room == "r1"
    assert isinstance(first_message('{"type": "ping", "request_id": 3}', 1000), m.Ping)
    with pytest.raises(m.ProtocolError) as bad:
        first_message("{not json", 1000)
    assert bad.value.code == "bad_json"
    with pytest.raises(m.ProtocolError) as large:
        first_message(json.dumps({"type": "join", "room": "r", "name": "x" * 2000}), 1000)
    assert large.value.code == "too_large"
    with pytest.raises(m.ProtocolError) as room:
        first_message('{"type": "join", "room": "no spaces!", "name": "a"}', 1000)
    assert room.value.code == "invalid_field"


def test_joined_is_recognised_among_the_worker_s_frames() -> None:
    assert is_joined('{"type": "joined", "id": "p1", "room": "r", "participants": []}')
    assert not is_joined('{"type": "participant_joined", "participant": {}}')
    assert not is_joined('{"type": "error", "message": "\\"joined\\""}')
    assert not is_joined(b'"joined"')


def test_workers_get_the_front_s_options_but_not_its_address() -> None:
    argv = ["--workers", "2", "--host", "0.0.0.0", "--port=8080", "--api-secret", "s",
            "--max-rooms", "3", "--work=4", "--po", "9", "--worker-hang-timeout", "5"]  # fmt: skip
    assert worker_argv(argv) == ["--api-secret", "s", "--max-rooms", "3"]
    # with --redis the front is the node: its workers get none of the node's options
    node = ["--redis", "redis://r:6379/0", "--node-url=ws://a:1/ws", "--node-id", "n1",
            "--capacity", "50", "--redis-prefix", "p", "--spread", "--node-spread",
            "--pipe-srtp"]  # fmt: skip
    assert worker_argv(node) == ["--spread", "--pipe-srtp"]
    assert worker_count(None) is None
    assert worker_count("3") == 3
    assert worker_count("auto") is not None and worker_count("auto") >= 1  # type: ignore[operator]
    with pytest.raises(SystemExit):
        worker_count("0")
    with pytest.raises(SystemExit):
        worker_count("many")


WORKER_TEXT = """# HELP parley_rooms Rooms open.
# TYPE parley_rooms gauge
parley_rooms 2.0
# HELP parley_errors_total Errors sent.
# TYPE parley_errors_total counter
parley_errors_total{code="bad_json"} 1.0
# HELP parley_join_seconds Join latency.
# TYPE parley_join_seconds histogram
parley_join_seconds_bucket{le="0.1"} 1.0
parley_join_seconds_bucket{le="+Inf"} 2.0
parley_join_seconds_sum 0.3
parley_join_seconds_count 2.0
"""


def test_merged_metrics_are_one_valid_exposition_labelled_by_worker() -> None:
    text = merge_metrics(
        [("w0", WORKER_TEXT), ("w1", WORKER_TEXT.replace("2.0", "5.0"))],
        [("parley_worker_up", "gauge", "Up.", {"w0": 1, "w1": 0})],
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    rooms = {s.labels["worker"]: s.value for s in families["parley_rooms"].samples}
    assert rooms == {"w0": 2.0, "w1": 5.0}
    assert text.count("# TYPE parley_rooms gauge") == 1  # each family once
    buckets = [s for s in families["parley_join_seconds"].samples if s.name.endswith("_bucket")]
    assert {(s.labels["worker"], s.labels["le"]) for s in buckets} == {
        ("w0", "0.1"), ("w0", "+Inf"), ("w1", "0.1"), ("w1", "+Inf")
    }  # fmt: skip
    up = {s.labels["worker"]: s.value for s in families["parley_worker_up"].samples}
    assert up == {"w0": 1.0, "w1": 0.0}


def test_label_sample_keeps_existing_labels() -> None:
    assert label_sample('a{b="c"} 1', "w1") == 'a{worker="w1",b="c"} 1'
    assert label_sample("a 1", "w1") == 'a{worker="w1"} 1'
    assert label_sample("a{} 1", "w1") == 'a{worker="w1"} 1'


def test_a_worker_takes_the_forwarded_address_only_with_the_front_s_key() -> None:
    from aiohttp.test_utils import make_mocked_request

    from signaling.server import ServerConfig, client_address

    def request(headers: dict[str, str]):  # type: ignore[no-untyped-def]
        return make_mocked_request("GET", "/ws", headers=headers)

    worker = ServerConfig(front_key="k3y")
    forwarded = {"X-Forwarded-For": "10.1.2.3", "X-Parley-Front-Key": "k3y"}
    peer = client_address(request({}), worker)
    assert client_address(request(forwarded), worker) == "10.1.2.3"
    wrong = {**forwarded, "X-Parley-Front-Key": "guess"}
    assert client_address(request(wrong), worker) == peer != "10.1.2.3"
    # a server that is no worker never believes the header
    assert client_address(request(forwarded), ServerConfig()) == peer


def test_the_front_checks_admin_callers_itself() -> None:
    """A worker sees the front's requests as loopback: without a secret the front must
    refuse a remote caller itself; with one, only the secret or an admin token passes."""
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    from cluster.admin_proxy import admin_refusal
    from signaling.auth import AuthConfig, Grants, mint_token

    def request(peer: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            (peer, 4000) if name == "peername" else default
        )
        return make_mocked_request("GET", "/admin/rooms", headers=headers, transport=transport)

    open_ = AuthConfig(loopback_admin=True)
    assert admin_refusal(request("127.0.0.1"), open_) is None
    refused = admin_refusal(request("10.0.0.5"), open_)
    assert refused is not None and refused.status == 401
    secret = "s" * 32
    auth = AuthConfig(api_key="k", api_secret=secret)
    assert admin_refusal(request("127.0.0.1"), auth) is not None  # loopback is not enough
    assert admin_refusal(request("10.0.0.5", {"Authorization": f"Bearer {secret}"}), auth) is None
    import time

    joiner = mint_token("k", secret, room="r", identity="i", now=time.time())
    refused = admin_refusal(request("10.0.0.5", {"Authorization": f"Bearer {joiner}"}), auth)
    assert refused is not None and refused.status == 401  # a join token is no admin token
    admin = mint_token(
        "k", secret, room="r", identity="i", grants=Grants(room_admin=True), now=time.time()
    )
    assert admin_refusal(request("10.0.0.5", {"Authorization": f"Bearer {admin}"}), auth) is None


def test_signaling_and_the_sfu_do_not_import_cluster() -> None:
    """``cluster`` sits above them (beside ``parley``), never the other way round."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("signaling", "sfu"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "cluster"]
    assert offenders == []


def test_a_spread_room_s_views_are_merged_by_participant() -> None:
    from cluster.admin_proxy import _home, merge_room

    def person(pid: str, local: bool, tracks: int = 2, identity: str | None = None) -> dict:
        return {"id": pid, "identity": identity, "name": pid,
                "grants": {"publish": True} if local else None,
                "tracks": [{"id": f"{pid}-{i}"} for i in range(tracks)]}  # fmt: skip

    shows = [
        ("w0", {"participants": [person("cam", True), person("plain", False)]}),
        (
            "w1",
            {
                "participants": [
                    person("plain", True, identity="p"),
                    person("cam", False),
                    person("watch", True, tracks=0),
                ]
            },
        ),  # fmt: skip
    ]
    room = merge_room("r", shows)
    assert {p["id"]: p["worker"] for p in room["participants"]} == {
        "cam": "w0", "plain": "w1", "watch": "w1"}  # fmt: skip
    assert room["published_tracks"] == 4 and room["workers"] == ["w0", "w1"]
    assert _home(shows, "plain") == "w1" and _home(shows, "p") == "w1"  # id, or identity
    assert _home(shows, "nobody") is None
    # a participant whose own worker did not answer is listed from a copy, without a worker
    (copy,) = merge_room("r", shows[:1])["participants"][1:]
    assert copy["id"] == "plain" and copy["worker"] is None
