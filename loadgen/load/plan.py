"""Which bots a run starts, in which room, when, asking for which layer: pure."""

from __future__ import annotations

from loadgen.load.bots import BotSpec
from loadgen.load.config import LAYER_HEIGHTS, LoadConfig

# ------------------------------------------------------------------------ plan


def plan_bots(config: LoadConfig, start: float) -> tuple[list[BotSpec], list[BotSpec]]:
    """Publishers and subscribers of every room, with ``start_at`` spaced by ``ramp``.

    Subscribers' ``start_at`` is relative (from 0): the run shifts them once every
    publisher's media flows. With simulcast, subscriber ``j`` asks for
    ``LAYER_HEIGHTS[j % 3]``.
    """
    step = 1.0 / config.ramp if config.ramp > 0 else 0.0
    publishers: list[BotSpec] = []
    for room in range(config.rooms):
        for p in range(config.publishers):
            index = len(publishers)
            publishers.append(
                BotSpec(
                    "publisher",
                    f"load-{room}",
                    f"pub-{room}-{p}",
                    index,
                    start + index * step,
                    simulcast=config.simulcast,
                    e2e=config.e2e,
                    watch=p < config.impaired_publishers,
                )
            )
    subscribers = subscriber_specs(config, 0, config.subscribers)
    step = 1.0 / config.ramp if config.ramp > 0 else 0.0
    for k in range(config.impaired_subscribers):
        for room in range(config.rooms):
            subscribers.append(
                BotSpec(
                    "subscriber",
                    f"load-{room}",
                    f"imp-{room}-{k}",
                    config.subscribers * config.rooms + k * config.rooms + room,
                    len(subscribers) * step,
                    max_height=LAYER_HEIGHTS[-1] if config.simulcast else None,
                    e2e=config.e2e,
                    watch=True,
                    feedback=config.feedback,
                    native_io=config.native_io,
                )
            )
    return publishers, subscribers


def subscriber_specs(config: LoadConfig, first: int, count: int) -> list[BotSpec]:
    """Subscribers ``first`` .. ``first + count - 1`` of every room, interleaved by room,
    with relative ``start_at`` spaced by ``ramp``."""
    step = 1.0 / config.ramp if config.ramp > 0 else 0.0
    subscribers: list[BotSpec] = []
    for s in range(first, first + count):
        for room in range(config.rooms):
            index = s * config.rooms + room
            subscribers.append(
                BotSpec(
                    "subscriber",
                    f"load-{room}",
                    f"sub-{room}-{s}",
                    index,
                    len(subscribers) * step,
                    max_height=LAYER_HEIGHTS[index % len(LAYER_HEIGHTS)]
                    if config.simulcast
                    else None,
                    e2e=config.e2e,
                    # every subscriber of a room with an impaired participant is watched
                    watch=config.impaired,
                    feedback=config.feedback,
                    native_io=config.native_io,
                )
            )
    return subscribers
