"""signaling/metrics.py's once-a-second observations (loss, round trip time, estimate,
sent bit/s), on stand-ins for participants: what is observed and what is skipped."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from signaling.metrics import ParleyMetrics


def forwarder(kind: str, rtt: float | None, lost: float) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, is_video=kind == "video", rtt=rtt, fraction_lost=lost)


def subscriber(cap: float | None, sent: float, *forwarders: SimpleNamespace) -> Any:
    subs = {str(i): SimpleNamespace(forwarder=f) for i, f in enumerate(forwarders)}
    return SimpleNamespace(subscriptions=subs, bwe=SimpleNamespace(cap=cap), egress_bitrate=sent)


def samples(metrics: ParleyMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_sample_observes_what_has_been_measured_only() -> None:
    metrics = ParleyMetrics()
    capped = subscriber(
        800_000.0, 600_000.0, forwarder("video", 0.04, 0.05), forwarder("audio", 0.02, 0.0)
    )
    fresh = subscriber(None, 0.0, forwarder("video", None, 0.0))  # no receiver report yet
    audio_only = subscriber(None, 0.0, forwarder("audio", 0.03, 0.5))
    metrics.sample([capped, fresh, audio_only])
    got = samples(metrics)
    assert got["parley_subscriber_rtt_seconds_count", (("kind", "video"),)] == 1
    assert got["parley_subscriber_rtt_seconds_sum", (("kind", "video"),)] == 0.04
    assert got["parley_subscriber_rtt_seconds_count", (("kind", "audio"),)] == 2
    assert got["parley_subscriber_loss_ratio_sum", (("kind", "audio"),)] == 0.5
    assert got["parley_subscriber_loss_ratio_bucket", (("kind", "video"), ("le", "0.05"))] == 1
    assert got["parley_subscriber_loss_ratio_bucket", (("kind", "video"), ("le", "0.02"))] == 0
    # the estimate of the capped video subscriber only; sent bit/s of both video ones
    assert got["parley_subscriber_estimate_bits_per_second_count", ()] == 1
    assert got["parley_subscriber_estimate_bits_per_second_sum", ()] == 800_000
    assert got["parley_subscriber_sent_bits_per_second_count", ()] == 2
    assert got["parley_subscriber_sent_bits_per_second_sum", ()] == 600_000
    metrics.close()


def test_without_an_sfu_the_gauges_are_zero_and_errors_count_by_code() -> None:
    metrics = ParleyMetrics()
    metrics.count_error("bad_json")
    metrics.count_error("bad_json")
    got = samples(metrics)
    assert got["parley_participants", ()] == 0
    assert got["parley_packets_total", (("direction", "in"), ("kind", "video"))] == 0
    assert got["parley_signaling_errors_total", (("code", "bad_json"),)] == 2
    assert got["parley_process_resident_memory_bytes", ()] > 0
