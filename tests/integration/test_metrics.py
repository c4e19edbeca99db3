"""``/metrics``: Prometheus text scraped over HTTP during and after a real call of bots,
parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from loadgen.bot import BotConfig, run_bot
from sfu import native
from signaling.server import ServerConfig

from .conftest import RunningServer, ServerFactory

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: RunningServer) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def simulcast_forwarded(samples: Samples) -> float:
    """Video subscriptions forwarding one of a simulcast track's layers."""
    return sum(value(samples, "parley_subscribed_video_layers", layer=n) for n in "012")


async def wait_until(
    server: RunningServer, predicate: Callable[[Samples], bool], timeout: float
) -> Samples:
    """Scrape until ``predicate`` holds of a scrape; that scrape."""
    async with asyncio.timeout(timeout):
        while True:
            samples = await scrape(server)
            if predicate(samples):
                return samples
            await asyncio.sleep(0.1)


async def wait_for(
    server: RunningServer,
    name: str,
    predicate: Callable[[float], bool],
    timeout: float = 15.0,
    **labels: str,
) -> Samples:
    """Scrape until ``predicate`` holds of the sample ``name{labels}``; that scrape."""
    key = (name, tuple(sorted(labels.items())))
    # (a labelled histogram has no sample before its first observation)
    return await wait_until(server, lambda s: predicate(s.get(key, 0.0)), timeout)


async def test_metrics_follow_a_call_of_three_bots(server: RunningServer) -> None:
    before = await scrape(server)
    assert value(before, "parley_participants") == 0
    assert value(before, "parley_join_latency_seconds_count") == 0
    assert value(before, "parley_process_resident_memory_bytes") > 0

    def bot(name: str, duration: float, simulcast: bool = False) -> BotConfig:
        return BotConfig(
            url=server.url, room="metrics", name=name, duration=duration, simulcast=simulcast
        )

    # ann publishes first (three simulcast layers); bob and cy join a room with tracks:
    # two join latencies
    first = asyncio.ensure_future(run_bot(bot("ann", 12.0, simulcast=True)))
    await wait_for(server, "parley_published_tracks", lambda v: v >= 1, kind="video")
    await wait_for(server, "parley_participants", lambda v: v == 1)
    started = asyncio.get_running_loop().time()
    others = [asyncio.ensure_future(run_bot(bot(n, 9.0))) for n in ("bob", "cy")]
    during = await wait_for(
        server, "parley_join_latency_seconds_count", lambda v: v >= 2, timeout=20.0
    )
    waited = asyncio.get_running_loop().time() - started
    assert value(during, "parley_participants") == 3
    assert value(during, "parley_rooms") == 1
    await asyncio.sleep(2.0)  # media flows to everybody
    during = await scrape(server)
    assert value(during, "parley_published_tracks", kind="video") == 3
    assert value(during, "parley_subscribed_tracks", kind="audio") == 6
    assert value(during, "parley_subscribed_tracks", kind="video") == 6
    for kind in ("audio", "video"):
        for direction in ("in", "out"):
            assert value(during, "parley_packets_total", direction=direction, kind=kind) > 0
            assert value(during, "parley_bytes_total", direction=direction, kind=kind) > 0
        out = value(during, "parley_packets_total", direction="out", kind=kind)
        fast = value(during, "parley_forwarded_packets_total", path="native", kind=kind)
        slow = value(during, "parley_forwarded_packets_total", path="python", kind=kind)
        assert fast + slow == out and slow > 0  # a stream's first packets take Python
        # bytes per packet: an RTP header at least, at most a datagram
        size = value(during, "parley_bytes_total", direction="out", kind=kind) / out
        assert 12 < size < 1500
    native_packets = sum(
        value(during, "parley_forwarded_packets_total", path="native", kind=kind)
        for kind in ("audio", "video")
    )
    assert (native_packets > 0) == native.NATIVE
    assert value(during, "parley_plis_sent_total") > 0  # every video start asks for a keyframe
    assert value(during, "parley_event_loop_lag_seconds_count") > 0
    # receiver reports answer the SFU's sender reports (about once a second)
    during = await wait_for(
        server, "parley_subscriber_rtt_seconds_count", lambda v: v > 0, timeout=6.0, kind="video"
    )
    rtts = value(during, "parley_subscriber_rtt_seconds_count", kind="video")
    # (bots in the server's process answer late on a busy machine: seconds, not minutes)
    assert 0 <= value(during, "parley_subscriber_rtt_seconds_sum", kind="video") / rtts < 5.0
    assert value(during, "parley_subscriber_loss_ratio_count", kind="video") > 0
    subscribers = [
        value(during, "parley_video_subscribers", estimate=e) for e in ("capped", "unlimited")
    ]
    assert sum(subscribers) == 3
    # bob's and cy's video is one layer; ann's, to both, one of three (or none, between two)
    during = await wait_until(server, lambda s: simulcast_forwarded(s) >= 1, timeout=8.0)
    layers = {
        layer: value(during, "parley_subscribed_video_layers", layer=layer)
        for layer in ("0", "1", "2", "single", "none")
    }
    assert sum(layers.values()) == 6 and layers["single"] + layers["none"] >= 4, layers
    assert value(during, "parley_paused_tracks", reason="requested") == 0
    # what each subscriber is sent is measured each second, from its second second on
    during = await wait_for(
        server, "parley_subscriber_sent_bits_per_second_sum", lambda v: v > 0, timeout=6.0
    )
    sent = value(during, "parley_subscriber_sent_bits_per_second_count")
    assert 10_000 < value(during, "parley_subscriber_sent_bits_per_second_sum") / sent < 10_000_000

    summaries = await asyncio.gather(first, *others)
    # (media quality is the bots' tests' business: a busy machine may freeze a frame)
    assert all(s["joined"] and s["published"] for s in summaries), summaries
    after = await wait_for(server, "parley_participants", lambda v: v == 0)
    assert value(after, "parley_rooms") == 0
    assert value(after, "parley_subscribed_tracks", kind="video") == 0
    assert value(after, "parley_participants_joined_total") == 3
    assert value(after, "parley_participants_left_total") == 3
    assert value(after, "parley_rooms_started_total") == 1
    # the departed participants' counts are kept: no _total goes backwards
    for key, number in during.items():
        if key[0].endswith("_total") and not key[0].startswith("parley_process"):
            assert after[key] >= number, key
    # one join latency per joiner into a room with tracks, each within what we waited
    latency = value(after, "parley_join_latency_seconds_count")
    total = value(after, "parley_join_latency_seconds_sum")
    assert latency == 2
    assert 0 < total / 2 < waited
    assert value(after, "parley_process_cpu_seconds_total") > 0


async def test_signaling_errors_are_counted_by_code(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
        await ws.send_str("{not json")
        reply = json.loads((await ws.receive()).data)
        assert reply["code"] == "bad_json"
        await ws.send_str(json.dumps({"type": "set_layer", "track": "t", "paused": True}))
        reply = json.loads((await ws.receive()).data)
        assert reply["code"] == "wrong_state"
        await ws.send_str("[]")
        reply = json.loads((await ws.receive()).data)
        samples = await scrape(server)
    assert value(samples, "parley_signaling_errors_total", code="bad_json") == 1
    assert value(samples, "parley_signaling_errors_total", code="wrong_state") == 1
    assert value(samples, "parley_signaling_errors_total", code=reply["code"]) == 1
    assert value(samples, "parley_signaling_errors_total", code="internal") == 0


async def test_each_application_has_its_own_registry(server_factory: ServerFactory) -> None:
    one, two = await server_factory(ServerConfig()), await server_factory(ServerConfig())
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{one.url}/ws") as ws:
        await ws.send_str("{not json")
        await ws.receive()
    assert value(await scrape(one), "parley_signaling_errors_total", code="bad_json") == 1
    assert value(await scrape(two), "parley_signaling_errors_total", code="bad_json") == 0
