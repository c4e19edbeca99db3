"""Run a command inside a fresh network namespace that has only loopback.

Usage: python scripts/in_netns.py COMMAND [ARGS...]

Re-executes itself under ``unshare --net --map-root-user`` (util-linux), brings
``lo`` up with an ioctl (no iproute2 needed), and then executes COMMAND. Nothing
the command sends can leave the machine: the namespace has no other interface.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import sys

MARK = "PARLEY_NETNS"
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def bring_loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def main() -> int:
    command = sys.argv[1:]
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get(MARK) != "1":
        unshare = shutil.which("unshare")
        if unshare is None:
            print("in_netns: 'unshare' (util-linux) is required", file=sys.stderr)
            return 2
        env = dict(os.environ, **{MARK: "1"})
        os.execve(unshare, [unshare, "--net", "--map-root-user", sys.executable, *sys.argv], env)
    bring_loopback_up()
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
