"""The impaired links of a run: each bot's link, its schedule, and the worker process that runs
the bot inside the link's namespace."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from loadgen.impair.schedule import LinkState

# -------------------------------------------------------------- impaired links


@dataclass(slots=True)
class RunLink:
    """One bot behind an impaired link, its worker, and the link's changes."""

    bot: str
    room: str
    role: str  # "subscriber" (its downlink is shaped) or "publisher" (its uplink)
    link: Any  # loadgen.impair.link.ImpairedLink
    initial: LinkState
    #: relative to the schedule's zero until the run knows it, then time.monotonic()
    schedule: list[tuple[float, LinkState]]
    #: (time.monotonic(), state) of every state applied, the first at setup
    changes: list[tuple[float, LinkState]] = field(default_factory=list)
    worker: Any = None  # LinkWorker

    def apply(self, state: LinkState) -> None:
        from loadgen.impair.link import Shape

        shape = Shape(state.rate_kbit, state.loss_pct / 100.0)
        if self.role == "subscriber":
            self.link.shape(down=shape)
        else:
            self.link.shape(up=shape)
        self.changes.append((time.monotonic(), state))

    def to_json(self, t0: float) -> dict[str, Any]:
        return {
            "bot": self.bot,
            "room": self.room,
            "role": self.role,
            "index": self.link.index,
            "server_address": self.link.host_address,
            "bot_address": self.link.peer_address,
            "direction": "down" if self.role == "subscriber" else "up",
            "changes": [{"t_s": round(t - t0, 2), **s.to_json()} for t, s in self.changes],
        }


class LinkWorker:
    """A worker process inside a link's namespace (``nsenter``), talking over a socket
    pair: looks like a ``multiprocessing.Process`` to the run, its commands like a queue."""

    def __init__(self, link: Any, reports: Any, worker_args: dict[str, Any]) -> None:
        from loadgen.load.worker import ConnectionQueue

        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "loadgen.load.worker", "--fd", str(theirs.fileno())]
        self.proc = subprocess.Popen(link.command(command), pass_fds=(theirs.fileno(),))
        theirs.close()
        self.commands = ConnectionQueue(Connection(ours.detach()))
        self.commands.put(worker_args)
        self._reports = reports
        self._reader = threading.Thread(target=self._read, name="link-worker", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                item = self.commands.get(None)
            except (EOFError, OSError):
                return
            self._reports.put(item)

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
