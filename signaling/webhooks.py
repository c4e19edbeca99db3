"""Webhooks: the server POSTs what happens to rooms, participants and tracks to your URLs.

Events (``event`` field): ``room_started``, ``room_finished``, ``participant_joined``,
``participant_left``, ``track_published``, ``track_unpublished``, taken from the SFU's
observers (``sfu/observer.py``). Each is one JSON object, POSTed to every configured URL
with ``Content-Type: application/webhook+json`` and signed as LiveKit signs its
webhooks: the ``Authorization`` header is an HS256 JWT made with the API secret whose
claims carry ``iss`` (the API key) and ``sha256`` (base64 of the body's SHA-256).
Receivers check it with :func:`verify_webhook`. Webhooks need ``--api-key`` and
``--api-secret``: the server refuses to start with ``--webhook-url`` and no key.

Delivery never holds the SFU up: an observer callback only appends the event to one
bounded queue per URL (full: the oldest event is dropped, counted and logged at most
once per ``DROP_LOG_INTERVAL``); one task per URL POSTs its events in order over one
shared ``aiohttp.ClientSession``, retrying a failed POST (an error, a timeout, a status
other than 2xx) ``attempts - 1`` times with doubling back-off, then giving up on that
event. :meth:`Webhooks.close` gives the queues ``close_timeout`` seconds to empty, then
drops what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aiohttp
import jwt

from sfu.observer import SfuObserver

if TYPE_CHECKING:
    from sfu.observer import Room
    from sfu.participant import Participant
    from sfu.tracks import PublishedTrack

    from .server import ServerConfig

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Seconds between two log lines about events dropped from a full queue.
DROP_LOG_INTERVAL = 10.0
#: Seconds a webhook's signature stays valid (its ``exp`` claim), as LiveKit's.
SIGNATURE_TTL = 300
#: Seconds of clock difference between sender and receiver that ``verify_webhook`` forgives.
CLOCK_LEEWAY = 30
CONTENT_TYPE = "application/webhook+json"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    #: where events are POSTed (each gets every event); empty: no webhooks
    urls: tuple[str, ...] = ()
    #: the API key (the signature's ``iss``) and secret (its HS256 key)
    api_key: str | None = None
    api_secret: str | None = dataclasses.field(default=None, repr=False)
    #: events waiting per URL; past it, the oldest is dropped
    queue_size: int = 1000
    #: POSTs of one event to one URL before it is given up
    attempts: int = 4
    #: seconds before the first retry; doubled each time up to ``max_backoff``
    backoff: float = 0.5
    max_backoff: float = 8.0
    #: seconds one POST may take
    timeout: float = 5.0
    #: seconds ``close()`` lets the queues drain before dropping what is left
    close_timeout: float = 0.5

    def __post_init__(self) -> None:
        if self.urls and not (self.api_key and self.api_secret):
            raise ValueError(
                "webhooks are signed with the API secret: give an API key and secret "
                "(parley serve --api-key K --api-secret S)"
            )
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook URL {url!r} is not http:// or https://")
        if self.queue_size < 1 or self.attempts < 1:
            raise ValueError("webhook queue_size and attempts must be at least 1")


class EventQueue(Generic[_T]):
    """A bounded FIFO that never blocks: when full, ``put`` drops the oldest item.

    ``dropped`` counts every drop; ``put`` returns how many drops to log now (0 unless
    there are unlogged drops and ``log_interval`` passed since the last report).
    """

    def __init__(self, maxsize: int, log_interval: float = DROP_LOG_INTERVAL) -> None:
        self.maxsize = max(maxsize, 1)
        self.log_interval = log_interval
        self.dropped = 0
        self._items: deque[_T] = deque()
        self._unreported = 0
        self._reported_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: _T, now: float) -> int:
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            self._unreported += 1
        self._items.append(item)
        return self.drops_to_report(now)

    def drops_to_report(self, now: float) -> int:
        if self._unreported and (
            self._reported_at is None or now - self._reported_at >= self.log_interval
        ):
            count, self._unreported, self._reported_at = self._unreported, 0, now
            return count
        return 0

    def pop(self) -> _T | None:
        return self._items.popleft() if self._items else None


def backoff_delay(config: WebhookConfig, retry: int) -> float:
    """Seconds before retry number ``retry`` (1 for the first)."""
    return float(min(config.backoff * 2 ** (retry - 1), config.max_backoff))


def body_digest(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def sign_webhook(body: bytes, api_key: str, api_secret: str, now: float) -> str:
    """The ``Authorization`` header value for ``body``: an HS256 JWT carrying its digest."""
    claims = {
        "iss": api_key,
        "sha256": body_digest(body),
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + SIGNATURE_TTL,
    }
    return jwt.encode(claims, api_secret, algorithm="HS256")


class WebhookError(Exception):
    """A webhook whose signature does not hold: do not trust its body."""


def verify_webhook(
    body: bytes, header: str | None, api_key: str, api_secret: str
) -> dict[str, Any]:
    """Check a received webhook; returns its event, or raises :class:`WebhookError`.

    ``body``: the request body exactly as received (bytes, before any JSON parsing);
    ``header``: its ``Authorization`` header (a bare JWT; a ``Bearer`` prefix is
    accepted). The JWT must be HS256 with ``api_secret``, issued by ``api_key``, within
    its validity, and its ``sha256`` claim must be the base64 SHA-256 of ``body``.
    """
    if not header:
        raise WebhookError("no Authorization header")
    token = header.removeprefix("Bearer ").strip()
    try:
        claims = jwt.decode(
            token,
            api_secret,
            algorithms=["HS256"],
            issuer=api_key,
            leeway=CLOCK_LEEWAY,
            options={"require": ["iss", "exp", "sha256"]},
        )
    except jwt.InvalidTokenError as exc:
        raise WebhookError(f"bad signature: {exc}") from exc
    digest = claims.get("sha256")
    if not isinstance(digest, str) or not hmac.compare_digest(digest, body_digest(body)):
        raise WebhookError("the body does not match its signature")
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise WebhookError(f"the body is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise WebhookError("the body is not a JSON object")
    return event


@dataclass
class _Endpoint:
    url: str
    queue: EventQueue[dict[str, Any]]
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    busy: bool = False
    task: asyncio.Task[None] | None = None


class Webhooks(SfuObserver):
    """Delivers the SFU's events to the configured URLs (add it with ``Sfu.add_observer``).

    ``clock``: wall-clock seconds (``created_at``, the signatures). Counters for
    operators: ``delivered``, ``failed`` (gave up after every attempt), ``dropped``.
    """

    def __init__(self, config: WebhookConfig, clock: Callable[[], float] = time.time) -> None:
        if not config.urls:
            raise ValueError("no webhook URL")
        self.config = config
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.timeout))
        self._endpoints = [_Endpoint(url, EventQueue(config.queue_size)) for url in config.urls]
        self._seq = 0
        self.delivered = 0
        self.failed = 0
        self.closed = False
        for endpoint in self._endpoints:
            endpoint.task = asyncio.ensure_future(self._run(endpoint))

    @property
    def dropped(self) -> int:
        return sum(e.queue.dropped for e in self._endpoints)

    # ------------------------------------------------------------ SfuObserver

    def room_started(self, room: Room) -> None:
        self._emit("room_started", room)

    def room_finished(self, room: Room) -> None:
        self._emit("room_finished", room)

    def participant_joined(self, room: Room, participant: Participant) -> None:
        self._emit("participant_joined", room, participant)

    def participant_left(self, room: Room, participant: Participant, reason: str) -> None:
        self._emit("participant_left", room, participant, reason=reason)

    def track_published(self, room: Room, participant: Participant, track: PublishedTrack) -> None:
        self._emit("track_published", room, participant, track)

    def track_unpublished(
        self, room: Room, participant: Participant, track: PublishedTrack
    ) -> None:
        self._emit("track_unpublished", room, participant, track)

    # ------------------------------------------------------------ events

    def _emit(
        self,
        kind: str,
        room: Room,
        participant: Participant | None = None,
        track: PublishedTrack | None = None,
        reason: str | None = None,
    ) -> None:
        """Called from the SFU: build the event, queue it per URL. Never blocks."""
        if self.closed:
            return
        now = self._clock()
        self._seq += 1
        event: dict[str, Any] = {
            "id": f"EV_{secrets.token_hex(8)}",
            "event": kind,
            "seq": self._seq,
            "created_at": round(now, 3),
            "room": {"name": room.id, "num_participants": len(room.participants)},
        }
        if participant is not None:
            event["participant"] = {
                "id": participant.id,
                "identity": participant.identity,  # the join token's (None without tokens)
                "name": participant.name,
            }
            if reason is not None:
                event["participant"]["reason"] = reason
        if track is not None:
            event["track"] = {
                "id": track.id,
                "kind": track.kind,
                "mid": track.mid,
                "layers": list(track.rids) if track.rids else None,
            }
        for endpoint in self._endpoints:
            drops = endpoint.queue.put(event, now)
            if drops:
                logger.warning(
                    "webhook queue for %s full: dropped %d oldest event(s) (%d in all)",
                    endpoint.url,
                    drops,
                    endpoint.queue.dropped,
                )
            endpoint.wake.set()

    async def _run(self, endpoint: _Endpoint) -> None:
        while True:
            event = endpoint.queue.pop()
            if event is None:
                endpoint.wake.clear()
                await endpoint.wake.wait()
                continue
            endpoint.busy = True
            try:
                await self._deliver(endpoint.url, event)
            except Exception:  # a bug must not stop this URL's deliveries for good
                logger.exception("webhook to %s failed", endpoint.url)
            finally:
                endpoint.busy = False

    async def _deliver(self, url: str, event: dict[str, Any]) -> bool:
        config = self.config
        assert config.api_key and config.api_secret
        body = json.dumps(event, separators=(",", ":")).encode()
        why = ""
        for attempt in range(config.attempts):
            if attempt:
                await asyncio.sleep(backoff_delay(config, attempt))
            headers = {
                "Content-Type": CONTENT_TYPE,
                "Authorization": sign_webhook(
                    body, config.api_key, config.api_secret, self._clock()
                ),
            }
            try:
                async with self._http.post(url, data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return True
                    why = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = str(exc) or type(exc).__name__
            logger.debug(
                "webhook %s to %s: attempt %d failed: %s", event["event"], url, attempt + 1, why
            )
        self.failed += 1
        logger.warning(
            "webhook %s (%s) to %s not delivered after %d attempt(s): %s",
            event["event"],
            event["id"],
            url,
            config.attempts,
            why,
        )
        return False

    def pending(self) -> int:
        """Events queued or being delivered, over every URL."""
        return sum(len(e.queue) + e.busy for e in self._endpoints)

    async def close(self) -> None:
        """Let queued events go out for up to ``close_timeout`` s, then stop. Idempotent."""
        if self.closed:
            return
        self.closed = True
        deadline = self._loop.time() + self.config.close_timeout
        while self.pending() and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        if left := self.pending():
            logger.warning("webhooks: %d event(s) not delivered at shutdown", left)
        tasks = [e.task for e in self._endpoints if e.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._http.close()


# ---------------------------------------------------------------- parley serve


def add_webhook_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--webhook-url",
        dest="webhook_urls",
        action="append",
        default=None,
        metavar="URL",
        help="POST room, participant and track events here, signed with the API secret "
        "(repeatable; needs --api-key and --api-secret)",
    )
    # (--api-key and --api-secret, which sign webhooks, are the tokens' own options:
    # parley/token_cmd.py add_auth_arguments)


def with_webhooks(config: ServerConfig, args: argparse.Namespace) -> ServerConfig:
    urls = tuple(args.webhook_urls or ())
    try:
        webhooks = WebhookConfig(urls=urls, api_key=args.api_key, api_secret=args.api_secret)
    except ValueError as exc:
        raise SystemExit(f"parley serve: {exc}") from None
    return dataclasses.replace(config, webhooks=webhooks)
