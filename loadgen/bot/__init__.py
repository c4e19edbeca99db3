"""``parley bot``: one headless participant that publishes, subscribes, decodes and judges
the call.

* :mod:`.participant`: the :class:`Bot` (signaling through ``parley_client``, the two peer
  connections, publishing, receiving, the summary);
* :mod:`.stats`: what it measures of each remote track; :mod:`.verdict`: ``ok`` and why not;
* :mod:`.config`: :class:`BotConfig`; :mod:`.reconnect`: rejoining with backoff;
* :mod:`.cli`: ``parley bot`` (:func:`main`) and :func:`run_bot`.
"""

from loadgen.bot.cli import build_parser, main, run_bot
from loadgen.bot.config import BotConfig, JoinFailed
from loadgen.bot.participant import Bot, write_summary
from loadgen.bot.stats import PacketLoss, TrackStats, evaluate_ok

__all__ = [
    "Bot",
    "BotConfig",
    "JoinFailed",
    "PacketLoss",
    "TrackStats",
    "build_parser",
    "evaluate_ok",
    "main",
    "run_bot",
    "write_summary",
]
