"""Server limits: rooms, participants, tracks, join and message rates (``parley serve`` flags).

Each refusal is an ``error`` with a stable code (docs/protocol.md): ``too_many_rooms``,
``room_full``, ``too_many_tracks``, ``rate_limited``. The rate limits are token buckets
whose time is passed in (``now``, seconds on any monotonic clock), so they are tested
with a fake clock. The websocket frame size (``--max-message-bytes``) lives in
``ServerConfig.max_message_bytes``; the subscribe offers a participant leaves unanswered
are capped at one by the SFU (``sfu/subscribe_side.py``), bounded in time by
``--subscribe-answer-timeout`` (``SfuConfig.subscribe_answer_timeout``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sfu.token_bucket import TokenBucket

if TYPE_CHECKING:
    from .server import ServerConfig


@dataclass(frozen=True, slots=True)
class Limits:
    """What one server admits; 0 turns a count or rate limit off."""

    #: participants in one room; the next ``join`` gets ``room_full``
    max_participants_per_room: int = 250
    #: rooms on this server; a ``join`` that would open another gets ``too_many_rooms``
    max_rooms: int = 1000
    #: tracks one participant publishes (a simulcast track counts once); a
    #: ``publish_offer`` that would go past it gets ``too_many_tracks``
    max_tracks_per_participant: int = 16
    #: ``join`` messages per second from one client address (token bucket) ...
    join_rate: float = 20.0
    #: ... and how many may come at once
    join_burst: int = 100
    #: client messages per second on one websocket (token bucket) ...
    message_rate: float = 20.0
    #: ... and how many may come at once
    message_burst: int = 60
    #: refused messages tolerated on one websocket within ``ABUSE_WINDOW`` seconds;
    #: one more and the websocket is closed (1008)
    max_refused_messages: int = 20
    #: client addresses whose join buckets are remembered (least recently used forgotten)
    max_tracked_addresses: int = 10_000


#: Seconds over which ``max_refused_messages`` refusals close a websocket.
ABUSE_WINDOW = 10.0
#: Websocket close code for a client that kept sending over its rate (policy violation).
RATE_CLOSE_CODE = 1008


class AddressBuckets:
    """One token bucket per client address, at most ``max_addresses`` remembered.

    Buckets that refilled are forgotten first (they are the same as new ones); past that,
    the least recently used. So a flood from many addresses costs bounded memory.
    """

    def __init__(self, rate: float, burst: float, max_addresses: int) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max(max_addresses, 1)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, address: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                self._forget(now)
            bucket = self._buckets[address] = TokenBucket(self.rate, max(self.burst, 1), now)
        else:
            self._buckets.move_to_end(address)
        return bucket.take(now)

    def _forget(self, now: float) -> None:
        for address in [a for a, b in self._buckets.items() if b.full(now)]:
            del self._buckets[address]
        while len(self._buckets) >= self.max_addresses:
            self._buckets.popitem(last=False)


class MessageGate:
    """One websocket's message rate: ``admit`` each frame before it is handled.

    Returns ``"ok"``, ``"refuse"`` (answer ``rate_limited``, drop the frame) or
    ``"close"`` (the client kept sending over its rate: more than
    ``max_refused_messages`` refusals within about ``ABUSE_WINDOW`` seconds).
    """

    def __init__(self, limits: Limits, now: float) -> None:
        #: None: no limit (``message_rate`` 0)
        self.messages = (
            TokenBucket(limits.message_rate, max(limits.message_burst, 1), now)
            if limits.message_rate > 0
            else None
        )
        allowed = max(limits.max_refused_messages, 1)
        self.strikes = TokenBucket(allowed / ABUSE_WINDOW, allowed, now)
        self.refused = 0

    def admit(self, now: float) -> str:
        if self.messages is None or self.messages.take(now):
            return "ok"
        self.refused += 1
        return "refuse" if self.strikes.take(now) else "close"


def join_refusal(limits: Limits, rooms: int, participants: int | None) -> tuple[str, str] | None:
    """Whether a join may go ahead: ``(code, message)`` to refuse it, else None.

    ``rooms``: rooms on the server now; ``participants``: in the room joined, None when
    the join would open it.
    """
    if participants is None:
        if 0 < limits.max_rooms <= rooms:
            return "too_many_rooms", f"this server has reached its limit of {rooms} rooms"
        return None
    if 0 < limits.max_participants_per_room <= participants:
        return "room_full", f"the room is full ({participants} participants)"
    return None


def offered_tracks(sdp: str) -> int:
    """Audio and video m-lines a publish offer sends on: the tracks it would publish."""
    count = 0
    for section in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        lines = section.split("\n")
        if not lines[0].startswith(("audio ", "video ")) or lines[0].split(" ")[1] == "0":
            continue
        if not any(ln.strip() in ("a=inactive", "a=recvonly") for ln in lines[1:]):
            count += 1
    return count


def tracks_refusal(limits: Limits, sdp: str) -> tuple[str, str] | None:
    tracks = offered_tracks(sdp)
    if 0 < limits.max_tracks_per_participant < tracks:
        return (
            "too_many_tracks",
            f"the offer publishes {tracks} tracks; the limit is "
            f"{limits.max_tracks_per_participant} per participant",
        )
    return None


# ---------------------------------------------------------------- parley serve


def _number(text: str, kind: type[float] | type[int]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _count(text: str) -> int:
    return int(_number(text, int))


def _rate(text: str) -> float:
    return _number(text, float)


def _seconds(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The limits' ``parley serve`` options (0 turns a limit off)."""
    d = Limits()
    group = parser.add_argument_group("limits", "what one server admits (0: no limit)")
    count, rate = _count, _rate
    group.add_argument(
        "--max-participants-per-room", dest="max_participants_per_room", type=count,
        default=d.max_participants_per_room, metavar="N",
        help=f"participants in one room; the next join gets room_full (default "
        f"{d.max_participants_per_room})",
    )  # fmt: skip
    group.add_argument(
        "--max-rooms", dest="max_rooms", type=count, default=d.max_rooms, metavar="N",
        help=f"rooms on the server; a join opening another gets too_many_rooms "
        f"(default {d.max_rooms})",
    )  # fmt: skip
    group.add_argument(
        "--max-tracks-per-participant", dest="max_tracks_per_participant", type=count,
        default=d.max_tracks_per_participant, metavar="N",
        help=f"tracks one participant publishes; more get too_many_tracks (default "
        f"{d.max_tracks_per_participant})",
    )  # fmt: skip
    group.add_argument(
        "--join-rate", dest="join_rate", type=rate, default=d.join_rate, metavar="PER_S",
        help=f"joins per second from one client address, more get rate_limited "
        f"(default {d.join_rate:g}; burst --join-burst)",
    )  # fmt: skip
    group.add_argument(
        "--join-burst", dest="join_burst", type=count, default=d.join_burst, metavar="N",
        help=f"joins one address may make at once (default {d.join_burst})",
    )  # fmt: skip
    group.add_argument(
        "--message-rate", dest="message_rate", type=rate, default=d.message_rate,
        metavar="PER_S",
        help=f"signaling messages per second on one websocket, more get rate_limited "
        f"(default {d.message_rate:g}; burst --message-burst)",
    )  # fmt: skip
    group.add_argument(
        "--message-burst", dest="message_burst", type=count, default=d.message_burst,
        metavar="N", help=f"messages one websocket may send at once (default {d.message_burst})",
    )  # fmt: skip
    group.add_argument(
        "--max-refused-messages", dest="max_refused_messages", type=count,
        default=d.max_refused_messages, metavar="N",
        help=f"refused messages within {ABUSE_WINDOW:g} s after which the websocket is "
        f"closed with 1008 (default {d.max_refused_messages})",
    )  # fmt: skip
    group.add_argument(
        "--subscribe-answer-timeout", dest="subscribe_answer_timeout", type=_seconds,
        default=20.0, metavar="S",
        help="seconds a participant may leave the server's subscribe_offer unanswered "
        "before it is removed (one offer is outstanding at a time; default 20)",
    )  # fmt: skip


def with_limits(config: ServerConfig, args: argparse.Namespace) -> ServerConfig:
    """``config`` with the limits of the parsed ``parley serve`` options."""
    limits = Limits(
        max_participants_per_room=args.max_participants_per_room,
        max_rooms=args.max_rooms,
        max_tracks_per_participant=args.max_tracks_per_participant,
        join_rate=args.join_rate,
        join_burst=args.join_burst,
        message_rate=args.message_rate,
        message_burst=args.message_burst,
        max_refused_messages=args.max_refused_messages,
    )
    sfu = dataclasses.replace(config.sfu, subscribe_answer_timeout=args.subscribe_answer_timeout)
    return dataclasses.replace(config, limits=limits, sfu=sfu)
