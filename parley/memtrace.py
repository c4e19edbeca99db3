"""What holds a running server's memory: ``tracemalloc`` snapshots on request (benchmarks).

With ``PARLEY_TRACEMALLOC=DIR`` in its environment, ``parley serve`` starts
``tracemalloc`` before it imports the server (so the Python heap its imports build is
traced too) and, on each ``SIGUSR2``, writes ``DIR/snapshot-N.pickle`` (a
:class:`tracemalloc.Snapshot`, ``N`` counting from 0) and ``DIR/modules-N.txt`` (the
names in ``sys.modules``, one a line), the second file last so a reader that sees it
knows the snapshot is complete. ``PARLEY_TRACEMALLOC_FRAMES`` sets the frames kept per
allocation (default 4). Tracing costs CPU and memory of its own: the RSS figures of
``bench/memory.py`` come from runs without it. Without the variable nothing happens.
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

__all__ = ["ENV_DIR", "ENV_FRAMES", "SnapshotWriter", "install_from_env"]

ENV_DIR = "PARLEY_TRACEMALLOC"
ENV_FRAMES = "PARLEY_TRACEMALLOC_FRAMES"


class SnapshotWriter:
    """Writes numbered snapshots (and the loaded modules) into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written = 0

    def write(self) -> Path:
        """Take a snapshot now; returns the path of its pickle."""
        snapshot = tracemalloc.take_snapshot()
        n = self.written
        self.written += 1
        path = self.directory / f"snapshot-{n}.pickle"
        snapshot.dump(str(path))
        modules = self.directory / f"modules-{n}.txt"
        partial = modules.with_suffix(".part")
        partial.write_text("\n".join(sorted(sys.modules)) + "\n", encoding="utf-8")
        partial.rename(modules)
        return path

    def on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.write()

    def close(self) -> None:
        """Stop tracing (the signal handler stays, writing empty snapshots)."""
        tracemalloc.stop()


def install_from_env(environ: Mapping[str, str]) -> SnapshotWriter | None:
    """Start tracing and answer ``SIGUSR2`` when ``environ`` names a directory."""
    directory = environ.get(ENV_DIR)
    if not directory:
        return None
    frames = int(environ.get(ENV_FRAMES, "4"))
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(frames)
    writer = SnapshotWriter(path)
    signal.signal(signal.SIGUSR2, writer.on_signal)
    return writer
