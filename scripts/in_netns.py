"""Run a command inside a fresh network namespace that has only loopback.

Usage: python scripts/in_netns.py COMMAND [ARGS...]

Re-executes itself under ``unshare --net --map-root-user`` (util-linux), brings
``lo`` up with an ioctl (no iproute2 needed), and then executes COMMAND. Nothing
the command sends can leave the machine: the namespace has no other interface.
The mechanism lives in ``loadgen/netns.py``, shared with the benchmarks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen.netns import ensure_loopback_namespace  # noqa: E402


def main() -> int:
    command = sys.argv[1:]
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_loopback_namespace(who="in_netns")
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
