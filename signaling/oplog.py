"""Logs for operators: one INFO line per thing that happened to a room, each naming it.

:class:`OperatorLog` is an :class:`sfu.observer.SfuObserver` (registered by
``setup_parley``): one line per join, leave (with its reason), publish and unpublish, on the
``parley.ops`` logger. :class:`PauseLog` (one per signaling session) adds one line when a
subscriber's video is paused (the SFU stopped forwarding it: congestion, or the client
asked) and one when it resumes. Every line reads ``event room=... participant=... name=...``
and carries the same as structured fields (``extra={"parley_fields": {...}}``) that
:class:`JsonFormatter` writes as keys of its JSON object (``event``, ``room``,
``participant``, ``name``, and ``track``, ``kind``, ``reason``, ``publisher`` where they apply).

:func:`configure_logging` sets up the process's logging for ``parley serve``:
``--log-format text`` (the default) or ``json`` (one object per line, for log shippers),
and keeps aioice's, aiortc's and aiohttp's access chatter at WARNING unless the level is
DEBUG.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from sfu.observer import SfuObserver

if TYPE_CHECKING:
    from sfu.observer import Room
    from sfu.participant import Participant
    from sfu.tracks import PublishedTrack

#: The logger of the operator lines.
logger = logging.getLogger("parley.ops")

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Libraries that log every ICE check or HTTP request at INFO: WARNING unless DEBUG.
CHATTY_LOGGERS = ("aioice", "aiortc", "aiohttp.access")
#: The record attribute (``extra``) holding an operator line's structured fields.
FIELDS_ATTRIBUTE = "parley_fields"


def _fields(event: str, room: str, participant: Participant, **more: object) -> dict[str, object]:
    return {
        "event": event,
        "room": room,
        "participant": participant.id,
        "name": participant.name,
        **({"identity": participant.identity} if participant.identity is not None else {}),
        **more,
    }


def _line(fields: dict[str, object]) -> str:
    words = [str(fields["event"])]
    for key, value in fields.items():
        if key != "event" and value is not None:
            shown = value if isinstance(value, str) and value and " " not in value else None
            words.append(f"{key}={shown if shown is not None else json.dumps(value)}")
    return " ".join(words)


def emit(event: str, room: str, participant: Participant, **more: object) -> None:
    """One operator line (INFO) for ``event`` in ``room`` about ``participant``."""
    fields = _fields(event, room, participant, **more)
    # one attribute: LogRecord reserves ``name`` (the logger's) and other plain words
    logger.info("%s", _line(fields), extra={FIELDS_ATTRIBUTE: fields})


class OperatorLog(SfuObserver):
    """Joins, leaves, publishes and unpublishes as operator lines."""

    def participant_joined(self, room: Room, participant: Participant) -> None:
        emit("join", room.id, participant)

    def participant_left(self, room: Room, participant: Participant, reason: str) -> None:
        emit("leave", room.id, participant, reason=reason)

    def track_published(self, room: Room, participant: Participant, track: PublishedTrack) -> None:
        layers = ",".join(track.rids) if track.rids else None
        emit("publish", room.id, participant, track=track.id, kind=track.kind, layers=layers)

    def track_unpublished(
        self, room: Room, participant: Participant, track: PublishedTrack
    ) -> None:
        emit("unpublish", room.id, participant, track=track.id, kind=track.kind)


class PauseLog:
    """One subscriber's paused tracks: a line when one pauses or resumes, not per change."""

    def __init__(self) -> None:
        self.paused: set[str] = set()

    def update(
        self, subscriber: Participant | None, track: str, publisher: str, paused: bool
    ) -> None:
        """The forwarder of ``track`` (published by ``publisher``) now sends or not."""
        if subscriber is None or paused == (track in self.paused):
            return
        if paused:
            self.paused.add(track)
        else:
            self.paused.discard(track)
        emit(
            "video_paused" if paused else "video_resumed",
            subscriber.room.id,
            subscriber,
            track=track,
            publisher=publisher,
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            out.update((k, v) for k, v in fields.items() if v is not None and k not in out)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """The root logger at ``level``, writing ``text`` or ``json`` lines to ``stream``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` for ``parley serve`` (``--log-level`` is in ``parley/cli.py``)."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text lines (default) or json: one object per line with time, level, logger, "
        "message and, for operator lines, event, room, participant and name",
    )
