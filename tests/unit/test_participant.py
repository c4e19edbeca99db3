"""sfu.participant.Participant's lifecycle with fakes: a room that records, a listener,
and peer connections whose close misbehaves (no sockets)."""

from __future__ import annotations

import asyncio

from sfu.config import SfuConfig
from sfu.participant import Participant
from sfu.ports import NullListener
from tests.fakes import FakeClock


class RecordingRoom:
    """An ``sfu.ports.RoomEvents`` that records what its participant tells it."""

    def __init__(self) -> None:
        self.id = "room"
        self.participants: dict[str, Participant] = {}
        self.active_speaker: Participant | None = None
        self.closed: list[Participant] = []

    def track_published(self, publisher: Participant, track: object, now: float) -> None:
        pass

    def track_unpublished(self, publisher: Participant, track: object) -> None:
        pass

    def participant_closed(self, participant: Participant) -> None:
        self.closed.append(participant)


class Listener(NullListener):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def closed(self, reason: str) -> None:
        self.reasons.append(reason)


class HangingPc:
    """A peer connection whose close never finishes (as aiortc's did after a close that
    had raised half-way)."""

    def __init__(self) -> None:
        self.close_calls = 0

    async def close(self) -> None:
        self.close_calls += 1
        await asyncio.Event().wait()


class FailingPc:
    def __init__(self) -> None:
        self.close_calls = 0

    async def close(self) -> None:
        self.close_calls += 1
        raise AttributeError("'NoneType' object has no attribute 'stop'")


async def test_close_is_bounded_when_a_peer_connection_never_closes():
    room, listener = RecordingRoom(), Listener()
    p = Participant(room, "p1", "ann", listener, SfuConfig(), FakeClock())
    p.pc_close_timeout = 0.05
    hanging, failing = HangingPc(), FailingPc()
    p.publish_side.pc = hanging  # type: ignore[assignment]
    p.subscribe_side.pc = failing  # type: ignore[assignment]
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(p.close("left"), 2.0)
    assert asyncio.get_running_loop().time() - started < 1.0
    # both were closed (the hanging one given up on), and closing carried on to the end
    assert hanging.close_calls == 1 and failing.close_calls == 1
    assert listener.reasons == ["left"] and room.closed == [p]
    assert p.closed and p.close_reason == "left"


async def test_close_is_idempotent_and_stops_the_periodic_task():
    room, listener = RecordingRoom(), Listener()
    p = Participant(room, "p1", "ann", listener, SfuConfig(), FakeClock())
    await p.close("left")
    await p.close("again")
    assert listener.reasons == ["left"] and room.closed == [p]
    assert p._task.done()


async def test_the_periodic_tick_with_nothing_negotiated_sends_nothing():
    room, listener = RecordingRoom(), Listener()
    clock = FakeClock()
    p = Participant(room, "p1", "ann", listener, SfuConfig(), clock)
    p.tick(clock.time())
    assert p.counters["probes"] == 0 and p.egress_bitrate == 0.0 and not p.closed
    await p.close()


class ClosingPc:
    """A peer connection the remote side closes while an offer is being made."""

    def __init__(self) -> None:
        self.signalingState = "stable"

    def getTransceivers(self) -> list[object]:
        return []

    async def createOffer(self) -> None:
        from aiortc.exceptions import InvalidStateError

        self.signalingState = "closed"
        raise InvalidStateError("RTCPeerConnection is closed")


async def test_no_subscribe_offer_on_a_closed_peer_connection():
    from aiortc import RTCPeerConnection

    room, listener = RecordingRoom(), Listener()
    p = Participant(room, "p1", "ann", listener, SfuConfig(), FakeClock())
    closed = RTCPeerConnection()
    await closed.close()
    p.subscribe_side.pc = closed
    p.subscribe_side._dirty = True
    assert await p.create_subscribe_offer() is None
    # closed while the offer is made (the peer hung up): no offer and no error either
    p.subscribe_side.pc = ClosingPc()  # type: ignore[assignment]
    p.subscribe_side._dirty = True
    assert await p.create_subscribe_offer() is None
    assert not p.subscribe_side._offer_pending
    await p.close("left")
