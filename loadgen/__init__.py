"""Load generation: headless synthetic participants ("bots") for Parley."""

from .bot import Bot, BotConfig, TrackStats, evaluate_ok, main, run_bot
from .media import PatternTrack, ToneTrack, draw_counter, read_counter

__all__ = [
    "Bot",
    "BotConfig",
    "PatternTrack",
    "ToneTrack",
    "TrackStats",
    "draw_counter",
    "evaluate_ok",
    "main",
    "read_counter",
    "run_bot",
]
