"""``parley bot`` subprocesses for the cluster tests: start, stop, read their summaries."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PARLEY = [sys.executable, "-m", "parley"]


async def start_bot(
    url: str, room: str, name: str, tmp_path: Path, duration: float, *extra: str
) -> asyncio.subprocess.Process:
    """``parley bot`` joining ``room`` at ``url``; its summary goes to ``tmp_path/name.json``."""
    command = [
        *PARLEY, "bot", "--url", url, "--room", room, "--name", name,
        "--duration", str(duration), "--json", str(tmp_path / f"{name}.json"), *extra,
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)


async def stop_bots(procs: Iterable[asyncio.subprocess.Process]) -> None:
    """Kill the bots still running (a test that failed half-way)."""
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def summary(tmp_path: Path, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((tmp_path / f"{name}.json").read_text())
    return loaded


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without its long lists (for assertion messages)."""
    return {k: v for k, v in summary.items() if k not in ("events", "tracks")}


def tracks_from(summary: dict[str, Any], publisher: str, kind: str) -> list[dict[str, Any]]:
    """The bot's received tracks of ``publisher``'s ``kind``."""
    return [
        t for t in summary["tracks"] if t["participant_name"] == publisher and t["kind"] == kind
    ]
