"""Impaired links: a participant in its own network namespace behind a veth pair.

``ImpairedLink`` creates a network namespace (held open by a ``sleep`` process started
with ``unshare --net``), a veth pair between it and the current namespace with the
addresses ``10.99.N.1`` (this side, where the server listens and gathers ICE) and
``10.99.N.2`` (the participant's side), and shapes it with what this kernel offers
(``../shared/DESIGN.md`` §7; there is no ``netem``):

* a rate limit per direction: ``tc qdisc replace dev IF root tbf rate R burst B
  latency 200ms`` on the sending side's veth end (``down`` limits server to
  participant, ``up`` participant to server);
* random loss per direction: ``iptables ... -m statistic --mode random --probability
  P -j DROP`` in the participant's namespace (INPUT for down, OUTPUT for up).

Processes run inside with :meth:`ImpairedLink.command` (``nsenter --net=...``). Needs
CAP_NET_ADMIN: root, or the user namespace ``scripts/in_netns.py`` makes. Everything
disappears with the namespace when :meth:`close` kills its holder.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass

from loadgen.netns import HeldNamespace, NamespaceError


class LinkError(RuntimeError):
    """The namespace, the veth pair or a qdisc/rule could not be set up."""


@dataclass(frozen=True, slots=True)
class Shape:
    """One direction's impairment: a rate in kbit/s (None: unlimited) and a loss 0..1."""

    rate_kbit: int | None = None
    loss: float = 0.0


def remove_interface(name: str, timeout: float = 5.0) -> None:
    """Delete our end of a veth pair and wait until it is gone.

    Killing the process that holds the other end's namespace removes the pair too, but
    the kernel does that later, on its own schedule: a caller checking for a namespace
    with only ``lo`` right after would still see the interface. Deleting it here takes
    both ends at once.
    """
    import socket
    import time

    subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while any(n == name for _, n in socket.if_nameindex()):
        if time.monotonic() > deadline:
            raise LinkError(f"interface {name} is still there after {timeout:.0f} s")
        time.sleep(0.02)


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LinkError(f"{' '.join(args)}: {result.stderr.strip() or result.returncode}")


class ImpairedLink:
    """One participant's link. ``index`` (0-255) picks the subnet 10.99.index.0/30."""

    def __init__(self, index: int) -> None:
        if not 0 <= index <= 255:
            raise ValueError("index must be within 0..255")
        for tool in ("unshare", "nsenter", "ip", "tc"):
            if shutil.which(tool) is None:
                raise LinkError(f"{tool} is not installed (util-linux / iproute2)")
        self.index = index
        self.host_address = f"10.99.{index}.1"
        self.peer_address = f"10.99.{index}.2"
        self.host_if = f"pl{index}h"
        self.peer_if = f"pl{index}p"
        self._namespace: HeldNamespace | None = None
        self.down = Shape()
        self.up = Shape()

    @property
    def netns(self) -> str:
        if self._namespace is None:
            raise LinkError("the link is not started")
        return self._namespace.path

    def command(self, args: list[str]) -> list[str]:
        """``args`` wrapped to run inside the participant's namespace."""
        return ["nsenter", f"--net={self.netns}", *args]

    def start(self) -> None:
        if self._namespace is not None:
            return
        try:
            self._namespace = HeldNamespace()
        except NamespaceError as exc:
            raise LinkError(str(exc)) from None
        try:
            _run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if])
            _run(["ip", "link", "set", self.peer_if, "netns", str(self._namespace.pid)])
            _run(["ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_if])
            _run(["ip", "link", "set", self.host_if, "up"])
            inside = self.command
            _run(inside(["ip", "addr", "add", f"{self.peer_address}/30", "dev", self.peer_if]))
            _run(inside(["ip", "link", "set", self.peer_if, "up"]))
            _run(inside(["ip", "link", "set", "lo", "up"]))
        except BaseException:
            self.close()
            raise

    def shape(self, down: Shape | None = None, up: Shape | None = None) -> None:
        """Set either direction's impairment (None: leave that direction as it is)."""
        if down is not None:
            self._rate(self.host_if, down.rate_kbit, inside=False)
            self._loss("INPUT", down.loss)
            self.down = down
        if up is not None:
            self._rate(self.peer_if, up.rate_kbit, inside=True)
            self._loss("OUTPUT", up.loss)
            self.up = up

    def _rate(self, interface: str, rate_kbit: int | None, inside: bool) -> None:
        wrap = self.command if inside else (lambda args: args)
        if rate_kbit is None:
            subprocess.run(
                wrap(["tc", "qdisc", "del", "dev", interface, "root"]),
                capture_output=True,
                check=False,
            )
            return
        # burst: at least one full-size packet, about 10 ms at the rate otherwise
        burst = max(4000, rate_kbit * 1000 // 8 // 100)
        _run(
            wrap(
                [
                    "tc", "qdisc", "replace", "dev", interface, "root", "tbf",
                    "rate", f"{rate_kbit}kbit", "burst", str(burst), "latency", "200ms",
                ]
            )
        )  # fmt: skip

    def _loss(self, chain: str, loss: float) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be within [0, 1)")
        if shutil.which("iptables") is None:
            if loss:
                raise LinkError("iptables is not installed (Debian package iptables)")
            return
        _run(self.command(["iptables", "-F", chain]))
        if loss:
            _run(
                self.command(
                    [
                        "iptables", "-A", chain, "-p", "udp", "-m", "statistic",
                        "--mode", "random", "--probability", f"{loss:.4f}", "-j", "DROP",
                    ]
                )
            )  # fmt: skip

    def close(self) -> None:
        # our end first: the pair goes at once, not whenever the kernel tears the
        # namespace down after its holder dies
        remove_interface(self.host_if)
        namespace, self._namespace = self._namespace, None
        if namespace is not None:
            namespace.close()

    def __enter__(self) -> ImpairedLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ImpairedLink:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)
