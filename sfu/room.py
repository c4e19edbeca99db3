"""Rooms and the top-level :class:`Sfu` object that embedders create.

The Sfu owns its rooms; a room owns its participants. Every participant
subscribes to every track the others publish. A room disappears when its last
participant leaves.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from . import native
from .config import SfuConfig
from .observer import SfuObserver
from .participant import Listener as ParticipantListener
from .participant import Participant
from .speaker import ActiveSpeakerDetector
from .tracks import PublishedTrack

#: How often (s) a room samples its participants' audio levels.
SPEAKER_INTERVAL = 0.3

logger = logging.getLogger(__name__)


class Room:
    def __init__(self, sfu: Sfu, room_id: str) -> None:
        self.sfu = sfu
        self.id = room_id
        self.participants: dict[str, Participant] = {}
        self.speaker = ActiveSpeakerDetector()
        self._loudness_marks: dict[str, tuple[int, int]] = {}
        self._loop = asyncio.get_running_loop()
        self._speaker_timer: asyncio.TimerHandle | None = self._loop.call_later(
            SPEAKER_INTERVAL, self._sample_speakers
        )
        self.closed = False

    @property
    def active_speaker(self) -> Participant | None:
        current = self.speaker.current
        return self.participants.get(current) if current is not None else None

    def _sample_speakers(self) -> None:
        self._speaker_timer = None
        if self.closed:
            return
        try:
            loudness: dict[str, float | None] = {}
            marks: dict[str, tuple[int, int]] = {}
            for pid, p in self.participants.items():
                if p.closed:
                    continue
                total = sum(s.loudness_sum for t in p.tracks.values() for s in t.layers)
                count = sum(s.loudness_packets for t in p.tracks.values() for s in t.layers)
                old_total, old_count = self._loudness_marks.get(pid, (total, count))
                n = count - old_count
                loudness[pid] = (total - old_total) / n if n > 0 else None
                marks[pid] = (total, count)
            self._loudness_marks = marks
            if self.speaker.update(loudness, self._loop.time()):
                speaker = self.active_speaker
                for p in self._others(None):
                    p.listener.active_speaker_changed(speaker)
        except Exception:  # never let detection stop the room's timer
            logger.exception("room %s: active speaker detection failed", self.id)
        self._speaker_timer = self._loop.call_later(SPEAKER_INTERVAL, self._sample_speakers)

    def _others(self, participant: Participant | None) -> list[Participant]:
        return [p for p in self.participants.values() if p is not participant and not p.closed]

    def add(
        self,
        name: str,
        listener: ParticipantListener,
        *,
        reuse_mlines: bool = True,
        identity: str | None = None,
        decodes: frozenset[str] | None = None,
        participant_id: str | None = None,
    ) -> Participant:
        if participant_id is None:
            participant_id = secrets.token_hex(6)
        elif participant_id in self.participants:
            raise ValueError(f"participant {participant_id} is already in room {self.id}")
        participant = Participant(
            self,
            participant_id,
            name,
            listener,
            self.sfu.config,
            reuse_mlines=reuse_mlines,
            identity=identity,
            decodes=decodes,
        )
        others = self._others(participant)
        self.participants[participant_id] = participant
        self.sfu._notify("participant_joined", self, participant)
        for other in others:
            other.listener.participant_joined(participant)
            for track in other.tracks.values():
                participant.subscribe(other, track)
        if self.active_speaker is not None:
            listener.active_speaker_changed(self.active_speaker)
        return participant

    def track_published(self, publisher: Participant, track: PublishedTrack, now: float) -> None:
        for other in self._others(publisher):
            other.listener.track_published(publisher, track)
            other.subscribe(publisher, track)
        self.sfu._notify("track_published", self, publisher, track)

    def track_unpublished(self, publisher: Participant, track: PublishedTrack) -> None:
        for other in self._others(publisher):
            other.unsubscribe(track)
            other.listener.track_unpublished(publisher, track)
        self.sfu._notify("track_unpublished", self, publisher, track)

    def participant_closed(self, participant: Participant) -> None:
        if self.participants.pop(participant.id, None) is None:
            return
        self.sfu._retire(participant)
        for other in self._others(participant):
            other.listener.participant_left(participant)
        self.sfu._notify("participant_left", self, participant, participant.close_reason or "left")
        if not self.participants:
            self._stop()
            self.sfu._room_empty(self)

    def _stop(self) -> None:
        if not self.closed:
            self.sfu._notify("room_finished", self)
        self.closed = True
        if self._speaker_timer is not None:
            self._speaker_timer.cancel()
            self._speaker_timer = None

    async def close(self) -> None:
        await asyncio.gather(*(p.close("room closed") for p in list(self.participants.values())))
        self._stop()


class Sfu:
    """The selective forwarding unit: rooms of participants whose tracks it forwards."""

    def __init__(self, config: SfuConfig | None = None) -> None:
        self.config = config or SfuConfig()
        self.rooms: dict[str, Room] = {}
        #: sendmmsg per subscriber across a batch of incoming packets (None: sendto each)
        self.send_batch = native.new_send_batch()
        self.closed = False
        #: server-wide observers (``sfu/observer.py``): metrics, webhooks, logs
        self.observers: list[SfuObserver] = []
        #: malformed packets dropped from participants that have left
        self._retired_malformed = {"rtp": 0, "rtcp": 0}
        if not native.NATIVE:
            logger.warning(
                "forwarding in Python (1.3-2x the CPU per packet): %s", native.NATIVE_ERROR
            )

    def join(
        self,
        room_id: str,
        name: str,
        listener: ParticipantListener,
        *,
        reuse_mlines: bool = True,
        identity: str | None = None,
        decodes: frozenset[str] | None = None,
        participant_id: str | None = None,
    ) -> Participant:
        """Add a participant to room ``room_id`` (created if needed). ``reuse_mlines``:
        whether its subscribe connection may reuse inactive m-lines for new tracks;
        ``identity``: who it is for the application (``Participant.identity``);
        ``decodes``: the codecs it can decode (None: any), it is subscribed to no other;
        ``participant_id``: its id (default: a new random one; a piped publisher keeps
        its origin's, ``sfu/pipe.py``), ValueError if the room has it already."""
        if self.closed:
            raise RuntimeError("the SFU is closed")
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(self, room_id)
            self._notify("room_started", room)
        return room.add(
            name,
            listener,
            reuse_mlines=reuse_mlines,
            identity=identity,
            decodes=decodes,
            participant_id=participant_id,
        )

    def add_observer(self, observer: SfuObserver) -> None:
        """Tell ``observer`` of rooms, participants and tracks from now on."""
        self.observers.append(observer)

    def remove_observer(self, observer: SfuObserver) -> None:
        if observer in self.observers:
            self.observers.remove(observer)

    def _notify(self, event: str, *args: object) -> None:
        for observer in list(self.observers):
            try:
                getattr(observer, event)(*args)
            except Exception:  # one observer's bug never stops the SFU or the others
                logger.exception("SFU observer %r failed on %s", observer, event)

    def _room_empty(self, room: Room) -> None:
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]

    def _retire(self, participant: Participant) -> None:
        for kind, count in participant.malformed.totals.items():
            self._retired_malformed[kind] = self._retired_malformed.get(kind, 0) + count

    def stats(self) -> dict[str, object]:
        participants = [p for r in self.rooms.values() for p in r.participants.values()]
        malformed = dict(self._retired_malformed)
        for p in participants:
            for kind, count in p.malformed.totals.items():
                malformed[kind] = malformed.get(kind, 0) + count
        return {
            "rooms": len(self.rooms),
            "participants": len(participants),
            "published_tracks": sum(len(p.tracks) for p in participants),
            "forwarders": sum(len(p.subscriptions) for p in participants),
            # whether the C forwarding loop is in use (sfu/native.py), and the packets
            # it sent for the forwarders alive now
            "native_forwarding": native.NATIVE,
            "native_ingress": native.NATIVE_INGRESS,
            "native_packets": sum(
                s.forwarder.native_packets for p in participants for s in p.subscriptions.values()
            ),
            # packets the publishers' C ingress took in (sfu/_ingress.c), for the tracks
            # published now
            "native_ingress_packets": sum(
                s.native_packets for p in participants for t in p.tracks.values() for s in t.layers
            ),
            # malformed RTP / RTCP dropped since start, from every participant
            # (per participant and reason: Participant.malformed, sfu/rtp/malformed.py)
            "rtp_malformed": malformed["rtp"],
            "rtcp_malformed": malformed["rtcp"],
        }

    async def close(self) -> None:
        """Close every room and participant. Idempotent."""
        if self.closed:
            return
        self.closed = True
        await asyncio.gather(*(room.close() for room in list(self.rooms.values())))
        self.rooms.clear()
