"""Load generation: headless synthetic participants ("bots") for Parley.

The bot's names are imported on first use, so a light module of the package
(``loadgen.netns``, ``loadgen.procfs``) does not load aiortc and PyAV.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Bot": "bot",
    "BotConfig": "bot",
    "TrackStats": "bot",
    "evaluate_ok": "bot",
    "main": "bot",
    "run_bot": "bot",
    "PatternTrack": "media.synthetic",
    "ToneTrack": "media.synthetic",
    "draw_counter": "media.synthetic",
    "read_counter": "media.synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'loadgen' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
