"""The verdict of ``parley bot``: was the call good? Pure (every time is passed in).

``ok`` is true when the bot joined, stayed to the end of its duration (or left when it
was told to: that is the end), every required remote track decoded, no video track froze
longer than ``max_freeze_ms`` and no track lost more than ``max_loss_pct`` of its
packets. Each condition that fails becomes one :class:`Failure` (a machine-readable
``code`` and a human ``message``). See ``docs/bots.md``, "The verdict".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Default ``--max-freeze-ms``: a video gap longer than this is a freeze that fails ``ok``.
MAX_FREEZE_MS = 1000.0
#: Default ``--max-loss``: a track losing more of its packets (%) fails ``ok``. Receivers
#: conceal a few % (NACK/RTX repairs most of it first); above this a call is visibly bad.
MAX_LOSS_PCT = 5.0
#: Loss is judged on tracks that expected at least this many packets (fewer: noise).
MIN_PACKETS_FOR_LOSS = 50


class TrackView(Protocol):
    """What the verdict reads of a remote track (``loadgen.bot.participant.TrackStats``)."""

    participant: str
    participant_name: str | None
    kind: str
    frames_decoded: int
    published_at: float
    packets: int | None
    packets_lost: int | None

    def required(self, end: float, grace: float = ...) -> bool: ...

    def longest_freeze(self, end: float) -> tuple[float, float] | None: ...

    def loss_pct(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    max_freeze_ms: float = MAX_FREEZE_MS
    max_loss_pct: float = MAX_LOSS_PCT
    #: a track must have been published this long (s) before the end to be required
    grace: float = 3.0
    min_packets_for_loss: int = MIN_PACKETS_FOR_LOSS


@dataclass(slots=True)
class RunFacts:
    """How the bot's stay went, in seconds of its clock."""

    started_at: float
    #: when its stay ended (its duration, or earlier)
    end: float
    #: when its duration was to end
    deadline: float
    joined: bool
    join_error: str | None = None
    #: asked to publish, and whether the last connection's publish was answered
    publish: bool = False
    published: bool = False
    #: when the bot (re)joined on its last connection
    session_joined_at: float | None = None
    #: (code, message, when) of a connection lost for good: without ``--reconnect``,
    #: or not recovered by the end (``connection_lost``, ``server_shutdown``, ``removed``)
    lost: tuple[str, str, float] | None = None
    reconnect: bool = False
    #: reconnection attempts made for ``lost`` (with ``--reconnect``)
    attempts: int = 0
    last_attempt_error: str | None = None
    #: roles (``publish``/``subscribe``) of peer connections that failed on the last
    #: connection
    failed_connections: list[str] = field(default_factory=list)
    #: an exception that ended the stay early
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def _who(track: TrackView) -> str:
    return f"{track.kind} from {track.participant_name or track.participant}"


def evaluate(facts: RunFacts, tracks: Iterable[TrackView], limits: Limits) -> list[Failure]:
    """Every condition of ``ok`` that failed; empty when the call was good."""
    if not facts.joined:
        return [Failure("not_joined", f"did not join: {facts.join_error or 'unknown reason'}")]
    failures: list[Failure] = []
    t0 = facts.started_at
    planned = facts.deadline - t0
    if facts.lost is not None:
        code, message, at = facts.lost
        when = f"at {at - t0:.1f} s of {planned:.0f} s"
        if facts.reconnect:
            detail = f" (last: {facts.last_attempt_error})" if facts.last_attempt_error else ""
            failures.append(
                Failure(
                    "not_recovered",
                    f"{code}: {message} {when}, and not back in the room by the end "
                    f"after {facts.attempts} attempt(s){detail}",
                )
            )
        else:
            failures.append(Failure(code, f"{message} {when}"))
    elif facts.error is not None:
        failures.append(
            Failure("ended_early", f"{facts.error} at {facts.end - t0:.1f} s of {planned:.0f} s")
        )
    in_room = facts.session_joined_at if facts.session_joined_at is not None else facts.end
    if (
        facts.publish
        and not facts.published
        and facts.lost is None
        and facts.end - in_room >= limits.grace
    ):
        failures.append(Failure("not_published", "the server never answered the publish offer"))
    for role in facts.failed_connections:
        failures.append(Failure("ice_failed", f"the {role} peer connection failed"))
    limit_s = limits.max_freeze_ms / 1000.0
    for track in tracks:
        if track.frames_decoded == 0:
            if track.required(facts.end, limits.grace):
                failures.append(
                    Failure(
                        "no_media",
                        f"no {_who(track)} decoded (published "
                        f"{facts.end - track.published_at:.1f} s before the end)",
                    )
                )
            continue
        freeze = track.longest_freeze(facts.end)
        if freeze is not None and freeze[1] > limit_s:
            failures.append(
                Failure(
                    "freeze",
                    f"{_who(track)} froze for {freeze[1] * 1000:.0f} ms at "
                    f"{freeze[0] - t0:.1f} s (limit {limits.max_freeze_ms:.0f} ms)",
                )
            )
        loss = track.loss_pct()
        expected = (track.packets or 0) + max(track.packets_lost or 0, 0)
        if (
            loss is not None
            and loss > limits.max_loss_pct
            and expected >= limits.min_packets_for_loss
        ):
            failures.append(
                Failure(
                    "loss",
                    f"{_who(track)} lost {loss:.1f} % of its packets "
                    f"({track.packets_lost} of {expected}; limit {limits.max_loss_pct:g} %)",
                )
            )
    return failures


def verdict_line(failures: Sequence[Failure]) -> str:
    """One human line: ``ok``, or ``not ok:`` and every failure."""
    if not failures:
        return "ok"
    return "not ok: " + "; ".join(f"{f.code}: {f.message}" for f in failures)
