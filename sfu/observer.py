"""Server-wide observers of the SFU's life: rooms, participants and tracks coming and going.

An embedder (or Parley's own signaling server: metrics, webhooks, operator logs) adds an
object with any of these methods to :attr:`sfu.room.Sfu.observers` with
:meth:`~sfu.room.Sfu.add_observer`. Every method is optional (:class:`SfuObserver` provides
do-nothing defaults to inherit from); each is called synchronously from the event loop, so
it must return quickly (queue slow work, never await). An observer that raises is logged
and does not stop the others or the SFU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .participant import Participant
    from .ports import RoomEvents
    from .tracks import PublishedTrack

    #: the room as observers see it (``sfu.room.Room``; named by its protocol, which
    #: keeps this module out of an import circle with ``sfu.room``)
    Room = RoomEvents[Participant, Participant, PublishedTrack]


class SfuObserver:
    """Do-nothing base: override what you need."""

    def room_started(self, room: Room) -> None:
        """The first participant is joining ``room`` (it is not yet in ``participants``)."""

    def room_finished(self, room: Room) -> None:
        """The last participant left ``room``, or the room was closed."""

    def participant_joined(self, room: Room, participant: Participant) -> None:
        """``participant`` is in ``room`` (already in ``room.participants``)."""

    def participant_left(self, room: Room, participant: Participant, reason: str) -> None:
        """``participant`` left ``room``; ``reason`` as in ``Participant.close_reason``."""

    def track_published(self, room: Room, participant: Participant, track: PublishedTrack) -> None:
        """``participant`` published ``track`` and the room's others are subscribed."""

    def track_unpublished(
        self, room: Room, participant: Participant, track: PublishedTrack
    ) -> None:
        """``track`` is gone (unpublished, or its publisher left)."""
