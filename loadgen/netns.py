"""Network namespaces for tests, load runs and benchmarks: the one home of

* :func:`ensure_loopback_namespace`: run this program again inside a fresh namespace
  that has only ``lo`` (``unshare --net --map-root-user``), unless it already is in one;
  ``scripts/in_netns.py`` and every ``bench/*.py`` script use it;
* :class:`HeldNamespace`: a namespace of its own held by a sleeping process, that
  commands enter with ``nsenter`` (impaired links, a server on a veth pair).

Nothing here sends a packet; the namespaces start with no interface but ``lo``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

#: Set in the environment of a program re-executed in a fresh namespace.
NETNS_MARK = "PARLEY_NETNS"
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class NamespaceError(RuntimeError):
    """A namespace could not be made or entered."""


def only_loopback() -> bool:
    """Whether this network namespace has no interface but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def bring_loopback_up() -> None:
    """Set ``lo`` up with an ioctl (no iproute2 needed); nothing to do when it is up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
        if not flags & _IFF_UP:
            ifreq = struct.pack("16sH14s", b"lo", flags | _IFF_UP, b"")
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, ifreq)


def ensure_loopback_namespace(
    argv: list[str] | None = None, who: str = "parley", *, strict: bool = False
) -> None:
    """Unless already in a namespace made for it (``PARLEY_NETNS=1``) or one with only
    ``lo``: exec ``argv`` (default: this program again) under ``unshare --net
    --map-root-user``, marked. Inside: bring ``lo`` up and return. ``strict``: refuse
    (exit) to go on where any interface but ``lo`` is seen."""
    if os.environ.get(NETNS_MARK) != "1" and not only_loopback():
        unshare = shutil.which("unshare")
        if unshare is None:
            sys.exit(f"{who}: 'unshare' (util-linux) is required to isolate the network")
        command = argv if argv is not None else [sys.executable, *sys.argv]
        env = dict(os.environ, **{NETNS_MARK: "1"})
        os.execve(unshare, [unshare, "--net", "--map-root-user", *command], env)
    if strict and not only_loopback():
        sys.exit(f"{who}: still see non-loopback interfaces after unshare; refusing")
    bring_loopback_up()


class HeldNamespace:
    """A new network namespace, alive as long as the ``sleep`` process holding it.

    ``path`` (``/proc/PID/ns/net``) names it for ``ip link ... netns`` and ``nsenter``;
    :meth:`enter` wraps a command to run inside. ``close()`` (idempotent) ends the holder.
    """

    def __init__(self, timeout: float = 5.0) -> None:
        self.holder: subprocess.Popen[bytes] | None = subprocess.Popen(
            ["unshare", "--net", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid = self.holder.pid
        self.path = f"/proc/{self.pid}/ns/net"
        try:
            self._wait_switched(timeout)
        except BaseException:
            self.close()
            raise

    def _wait_switched(self, timeout: float) -> None:
        holder = self.holder
        assert holder is not None
        mine = os.readlink("/proc/self/ns/net")  # "net:[inode]"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if holder.poll() is not None:
                err = holder.stderr.read().decode() if holder.stderr else ""
                raise NamespaceError(f"unshare --net failed: {err.strip()}")
            try:
                if os.readlink(self.path) != mine:  # unshare has switched
                    return
            except OSError:
                pass
            time.sleep(0.005)
        raise NamespaceError("unshare --net did not create a namespace")

    def enter(self, *cmd: str) -> list[str]:
        """``cmd`` to run inside the namespace (nsenter execs it: the pid stays the same)."""
        return ["nsenter", f"--net={self.path}", *cmd]

    def close(self) -> None:
        holder, self.holder = self.holder, None
        if holder is not None:
            if holder.poll() is None:
                holder.kill()
            holder.wait()
            if holder.stderr is not None:
                holder.stderr.close()
