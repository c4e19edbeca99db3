"""Data-channel messages down a pipe (``sfu/pipe.py``): one room's data channel across SFUs.

A participant's message (``sfu/data_side.py``) is relayed to the participants of its
room on its own SFU; the participants on the far side of a pipe — those connected
there, including ones that publish nothing and so are not known here — get it through
the pipe. :class:`DataPipe` taps each local participant the pipe exports (the
``relay_taps`` of its ``DataSide``): every message it relays goes down the pipe once as
a reliable control message ``data`` (``room``, ``from``, ``to`` when targeted, and the
message as relayed: ``text``, or ``bin`` in base64). The far side delivers it to its
room's participants that are connected there (never to remote publishers: their own
SFU delivered it), by the same rule as a local message (``datachannel.recipients``:
everyone but the sender, or those named). A message never goes back up a pipe, so a
mesh of pipes delivers it once per participant. Limits and refusals are the sender's
SFU's (checked before the relay); a receiver's slow channel drops it as for any message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

from .datachannel import Envelope, recipients
from .observer import SfuObserver
from .participant import Participant
from .pipe_import import is_piped
from .ports import RoomEvents

__all__ = ["DataPipe"]

Room = RoomEvents[Participant, Participant, Any]


class DataPipe(SfuObserver):
    """The data messages of one pipe, both ways. ``announce`` sends a control message
    reliably; ``wants(room, participant)`` says whether the pipe exports it;
    ``rooms()`` are the SFU's rooms by id."""

    def __init__(
        self,
        announce: Callable[[dict[str, Any]], int],
        wants: Callable[[str, Participant], bool],
        rooms: Callable[[], Mapping[str, Room]],
    ) -> None:
        self._announce = announce
        self._wants = wants
        self._rooms = rooms
        #: the tap on each exported participant's data side, by (room, participant id)
        self._taps: dict[tuple[str, str], tuple[Participant, Callable[..., None]]] = {}
        self.sent = 0
        self.received = 0
        self.delivered = 0
        self.bad = 0
        self.closed = False

    # ------------------------------------------------------------ exporting

    def tap(self, room_id: str, participant: Participant) -> None:
        """Follow ``participant``'s messages down the pipe (if the pipe exports it)."""
        key = (room_id, participant.id)
        if self.closed or key in self._taps or not self._wants(room_id, participant):
            return

        def relayed(message: str | bytes, to: tuple[str, ...] | None) -> None:
            self._send(room_id, participant.id, message, to)

        participant.data_side.relay_taps.append(relayed)
        self._taps[key] = (participant, relayed)

    def tap_room(self, room: Room) -> None:
        for participant in list(room.participants.values()):
            self.tap(room.id, participant)

    def untap(self, room_id: str, participant_id: str) -> None:
        entry = self._taps.pop((room_id, participant_id), None)
        if entry is not None:
            participant, relayed = entry
            taps = participant.data_side.relay_taps
            if relayed in taps:
                taps.remove(relayed)

    def untap_room(self, room_id: str) -> None:
        for room, pid in [k for k in self._taps if k[0] == room_id]:
            self.untap(room, pid)

    def _send(
        self, room: str, sender: str, message: str | bytes, to: tuple[str, ...] | None
    ) -> None:
        if self.closed:
            return
        body: dict[str, Any] = {"t": "data", "room": room, "from": sender}
        if to is not None:
            body["to"] = list(to)
        if isinstance(message, str):
            body["text"] = message
        else:
            body["bin"] = base64.b64encode(message).decode("ascii")
        self._announce(body)
        self.sent += 1

    # ------------------------------------------------------------ SfuObserver

    def participant_joined(self, room: Any, participant: Participant) -> None:
        self.tap(room.id, participant)

    def participant_left(self, room: Any, participant: Participant, reason: str) -> None:
        self.untap(room.id, participant.id)

    # ------------------------------------------------------------ importing

    def on_data(self, message: Mapping[str, Any]) -> None:
        """A message from the far side: to this room's participants connected here."""
        self.received += 1
        room = self._rooms().get(message["room"])
        to = message.get("to")
        try:
            if "text" in message and isinstance(message["text"], str):
                out: str | bytes = message["text"]
            else:
                out = base64.b64decode(str(message["bin"]), validate=True)
            if to is not None and not (
                isinstance(to, list) and all(isinstance(t, str) for t in to)
            ):
                raise ValueError("to is a list of ids")
        except (KeyError, ValueError, binascii.Error):
            self.bad += 1
            return
        if room is None:
            return
        present = {
            pid: p for pid, p in room.participants.items() if not p.closed and not is_piped(p)
        }
        envelope = Envelope(to=tuple(to) if to is not None else None, data=None, binary=False)
        for pid in recipients(str(message["from"]), envelope, list(present)):
            if present[pid].data_side.deliver(out):
                self.delivered += 1

    def stats(self) -> dict[str, int]:
        return {
            "data_sent": self.sent,
            "data_received": self.received,
            "data_delivered": self.delivered,
            "data_bad": self.bad,
        }

    def close(self) -> None:
        self.closed = True
        for room, pid in list(self._taps):
            self.untap(room, pid)
