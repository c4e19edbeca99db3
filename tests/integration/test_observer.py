"""Server-wide observers (``sfu/observer.py``) see rooms, participants and tracks come and go."""

from __future__ import annotations

import asyncio

from loadgen.bot import BotConfig, run_bot
from sfu.observer import SfuObserver
from sfu.participant import Participant
from sfu.room import Room
from sfu.tracks import PublishedTrack

from .conftest import RunningServer


class Recorder(SfuObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def room_started(self, room: Room) -> None:
        self.events.append(("room_started", room.id))

    def room_finished(self, room: Room) -> None:
        self.events.append(("room_finished", room.id))

    def participant_joined(self, room: Room, participant: Participant) -> None:
        assert participant.id in room.participants
        self.events.append(("joined", room.id, participant.name))

    def participant_left(self, room: Room, participant: Participant, reason: str) -> None:
        self.events.append(("left", room.id, participant.name, reason))

    def track_published(self, room: Room, participant: Participant, track: PublishedTrack) -> None:
        self.events.append(("published", participant.name, track.kind))

    def track_unpublished(
        self, room: Room, participant: Participant, track: PublishedTrack
    ) -> None:
        self.events.append(("unpublished", participant.name, track.kind))


class Broken(SfuObserver):
    def participant_joined(self, room: Room, participant: Participant) -> None:
        raise RuntimeError("an observer's bug")


async def test_observer_sees_a_call_from_start_to_finish(server: RunningServer) -> None:
    recorder = Recorder()
    server.sfu.add_observer(Broken())  # raising must not stop the SFU or the next observer
    server.sfu.add_observer(recorder)
    configs = [BotConfig(url=server.url, room="obs", name=n, duration=4.0) for n in ("ann", "bob")]
    summaries = await asyncio.gather(*(run_bot(c) for c in configs))
    assert all(s["ok"] for s in summaries), summaries
    for _ in range(50):
        if ("room_finished", "obs") in recorder.events:
            break
        await asyncio.sleep(0.1)
    events = recorder.events
    assert events[0] == ("room_started", "obs")
    assert events[-1] == ("room_finished", "obs")
    assert events.count(("room_started", "obs")) == 1
    for name in ("ann", "bob"):
        assert ("joined", "obs", name) in events
        assert [e for e in events if e[:3] == ("left", "obs", name)], events
        for kind in ("audio", "video"):
            assert events.count(("published", name, kind)) == 1, events
            assert events.count(("unpublished", name, kind)) == 1, events
            assert events.index(("published", name, kind)) < events.index(
                ("unpublished", name, kind)
            )
    assert not server.sfu.rooms
