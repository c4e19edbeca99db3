"""sfu.egress.Egress: a subscriber's packet sink, with a fake port and a fake clock."""

from __future__ import annotations

from sfu.egress import Egress
from tests.fakes import FakeClock, FakePort


class RefusingPort(FakePort):
    def send_rtp(self, data: bytes) -> bool:
        self.tx_errors += 1
        return False


def make(port: FakePort | None = None) -> tuple[Egress, FakeClock, list[float]]:
    clock = FakeClock()
    overflows: list[float] = []
    egress = Egress(clock, overflows.append, lambda forwarder: None, {"frames_dropped": 0})
    egress.port = port if port is not None else FakePort()  # type: ignore[assignment]
    return egress, clock, overflows


def test_video_goes_out_at_once_while_nothing_limits_the_link():
    egress, clock, _ = make()
    assert egress.send_video(b"v" * 1000, clock.time())
    assert egress.port.sent == [b"v" * 1000] and clock.pending() == []


def test_video_is_paced_on_the_timer_while_the_estimate_has_a_cap():
    egress, clock, _ = make()
    egress.pacer.set_rate(400_000, clock.time())  # 75 kB/s at the pacing factor
    for _ in range(20):
        assert egress.send_video(b"v" * 1000, clock.time())
    first = len(egress.port.sent)
    assert first < 20 and len(clock.pending()) == 1  # the rest waits for the pace timer
    clock.advance(0.5)
    assert len(egress.port.sent) == 20 and egress.pacer.queue == type(egress.pacer.queue)()


def test_a_refused_paced_packet_is_an_overflow():
    egress, clock, overflows = make(RefusingPort())
    egress.pacer.set_rate(400_000, clock.time())
    assert egress.send_video(b"v" * 1000, clock.time())  # queued: no tokens saved up yet
    clock.advance(0.05)  # the pace timer sends it, the socket refuses it
    assert len(overflows) == 1 and 100.0 < overflows[0] <= clock.time()
    assert egress.tx_errors == 1  # counted for the once-a-second measurement


def test_a_dropped_frame_is_counted_and_an_overflow():
    egress, clock, overflows = make()
    egress.frame_dropped(None, 3.0)  # type: ignore[arg-type]
    assert egress._counters["frames_dropped"] == 1 and overflows == [3.0]


def test_close_stops_the_pace_timer_and_the_port():
    egress, clock, _ = make()
    egress.pacer.set_rate(100_000, clock.time())
    for _ in range(10):
        egress.send_video(b"v" * 1000, clock.time())
    egress.close()
    assert egress.port.closed and clock.pending() == [] and not egress.pacer.queue


def test_nothing_is_sent_before_there_is_a_transport():
    egress, clock, _ = make()
    egress.port = None
    assert not egress.send_rtp(b"x") and not egress.send_video(b"x", clock.time())
    assert egress.tx_errors is None and egress.remote_address is None
