"""Rooms and the top-level :class:`Sfu` object that embedders create.

The Sfu owns its rooms; a room owns its participants. Every participant
subscribes to every track the others publish. A room disappears when its last
participant leaves.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from .config import SfuConfig
from .participant import Participant, ParticipantListener, PublishedTrack

logger = logging.getLogger(__name__)


class Room:
    def __init__(self, sfu: Sfu, room_id: str) -> None:
        self.sfu = sfu
        self.id = room_id
        self.participants: dict[str, Participant] = {}

    def _others(self, participant: Participant) -> list[Participant]:
        return [p for p in self.participants.values() if p is not participant and not p.closed]

    def add(self, name: str, listener: ParticipantListener) -> Participant:
        participant_id = secrets.token_hex(6)
        participant = Participant(self, participant_id, name, listener, self.sfu.config)
        others = self._others(participant)
        self.participants[participant_id] = participant
        for other in others:
            other.listener.participant_joined(participant)
            for track in other.tracks.values():
                participant.subscribe(other, track)
        return participant

    def track_published(self, publisher: Participant, track: PublishedTrack, now: float) -> None:
        for other in self._others(publisher):
            other.listener.track_published(publisher, track)
            other.subscribe(publisher, track)

    def track_unpublished(self, publisher: Participant, track: PublishedTrack) -> None:
        for other in self._others(publisher):
            other.unsubscribe(track)
            other.listener.track_unpublished(publisher, track)

    def participant_closed(self, participant: Participant) -> None:
        if self.participants.pop(participant.id, None) is None:
            return
        for other in self._others(participant):
            other.listener.participant_left(participant)
        if not self.participants:
            self.sfu._room_empty(self)

    async def close(self) -> None:
        await asyncio.gather(*(p.close("room closed") for p in list(self.participants.values())))


class Sfu:
    """The selective forwarding unit: rooms of participants whose tracks it forwards."""

    def __init__(self, config: SfuConfig | None = None) -> None:
        self.config = config or SfuConfig()
        self.rooms: dict[str, Room] = {}
        self.closed = False

    def join(self, room_id: str, name: str, listener: ParticipantListener) -> Participant:
        if self.closed:
            raise RuntimeError("the SFU is closed")
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(self, room_id)
        return room.add(name, listener)

    def _room_empty(self, room: Room) -> None:
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]

    def stats(self) -> dict[str, object]:
        participants = [p for r in self.rooms.values() for p in r.participants.values()]
        return {
            "rooms": len(self.rooms),
            "participants": len(participants),
            "published_tracks": sum(len(p.tracks) for p in participants),
            "forwarders": sum(len(p.subscriptions) for p in participants),
        }

    async def close(self) -> None:
        """Close every room and participant. Idempotent."""
        if self.closed:
            return
        self.closed = True
        await asyncio.gather(*(room.close() for room in list(self.rooms.values())))
        self.rooms.clear()
