"""Draining before a stop: refuse new joins, let the rooms empty, then shut down.

``parley serve --drain-timeout S``: on the first SIGTERM (or Ctrl-C) the server *drains*:
a ``join`` is refused with the error ``server_draining`` (the websocket is then closed with
1013, "try again later"), ``/healthz`` answers ``{"status": "draining"}`` with HTTP 503 (a
load balancer takes the instance out), and the rooms already running go on until they are
empty or ``S`` seconds have passed, whichever comes first; a second signal ends the wait.
Then the usual shutdown runs: whoever is left gets ``server_shutdown`` (with
``reconnect: true``: rejoin elsewhere or later) and the process exits. ``S = 0`` (the
default) skips the wait: the process exits within about a second of the signal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

logger = logging.getLogger(__name__)

#: Set once the server drains: joins are refused, ``/healthz`` says ``draining``.
DRAINING_KEY = web.AppKey("parley_draining", asyncio.Event)

#: The websocket close code after a refused join while draining ("try again later").
DRAINING_CLOSE_CODE = 1013


@dataclass(frozen=True, slots=True)
class DrainConfig:
    #: Seconds to wait for the rooms to empty after the first stop signal (0: do not wait).
    timeout: float = 0.0
    #: How often (s) the wait looks at the rooms.
    poll_interval: float = 0.1
    #: What a refused join is told.
    refusal: str = "the server is draining before a restart: join another server or retry later"


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def add_drain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drain-timeout",
        type=_non_negative_seconds,
        default=0.0,
        metavar="S",
        help="on SIGTERM, refuse new joins, answer /healthz with 503 draining and wait up to "
        "S seconds for the rooms to empty before telling the rest server_shutdown; a second "
        "signal stops waiting (default 0: stop at once)",
    )


def drain_config(args: argparse.Namespace) -> DrainConfig:
    return DrainConfig(timeout=args.drain_timeout)


def is_draining(app: web.Application) -> bool:
    event = app.get(DRAINING_KEY)
    return event is not None and event.is_set()


async def drain(
    app: web.Application,
    config: DrainConfig,
    participant_count: Callable[[], int],
    stop_waiting: asyncio.Event | None = None,
) -> bool:
    """Refuse joins from now on and wait until ``participant_count()`` is 0 (True), or
    until ``config.timeout`` passes or ``stop_waiting`` is set (False)."""
    app[DRAINING_KEY].set()
    left = participant_count()
    logger.info(
        "draining: new joins refused, waiting up to %g s for %d participant(s)",
        config.timeout,
        left,
    )
    stop = stop_waiting if stop_waiting is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.timeout
    while (left := participant_count()) > 0:
        remaining = deadline - loop.time()
        if remaining <= 0 or stop.is_set():
            why = "timed out" if remaining <= 0 else "stopped by a second signal"
            logger.info("draining %s with %d participant(s) left", why, left)
            return False
        try:
            async with asyncio.timeout(min(config.poll_interval, remaining)):
                await stop.wait()
        except TimeoutError:
            pass
    logger.info("draining done: every room is empty")
    return True
