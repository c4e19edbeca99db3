"""``parley serve`` as a child process: the one home of starting a server for a load run
or a benchmark and knowing when it answers.

:func:`serve_command` is the command line, :func:`start_server` runs it on a free port
and waits for ``/healthz``, :func:`stop_server` ends it. :func:`wait_for_healthz` and
:func:`wait_for_port` tell when a server started some other way (its own namespace, a
benchmark worker, Janus) is ready.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable


class ServerStartError(RuntimeError):
    """The server exited at start or did not answer in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_command(
    host: str, port: int, ice_addresses: Iterable[str], log_level: str = "WARNING"
) -> list[str]:
    """``python -m parley serve`` listening on ``host:port``, ICE on ``ice_addresses``.

    The limits against abuse that a load run trips by design are off: every synthetic
    participant comes from one address, joining faster than ``--join-rate`` allows, and
    capacity runs may put more in a room than ``--max-participants-per-room``."""
    ice = [arg for address in ice_addresses for arg in ("--ice-address", address)]
    # a test server reachable over impaired links' host ends (inside scripts/in_netns.py)
    anonymous = ["--allow-anonymous"] if host not in ("127.0.0.1", "localhost", "::1") else []
    return [
        sys.executable, "-m", "parley", "serve", "--host", host, "--port", str(port),
        *ice, "--log-level", log_level, "--join-rate", "0", "--max-participants-per-room", "0",
        *anonymous,
    ]  # fmt: skip


def wait_for_healthz(url: str, running: Callable[[], bool], timeout: float) -> None:
    """Poll ``{url}/healthz`` until it answers 200; raise :class:`ServerStartError` when
    ``running()`` turns false or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running():
            raise ServerStartError("the server exited at start")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise ServerStartError(f"the server did not answer /healthz within {timeout:g} s")


def wait_for_port(host: str, port: int, running: Callable[[], bool], timeout: float) -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running():
            raise ServerStartError("the server exited at start")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise ServerStartError(f"nothing listens on {host}:{port} after {timeout:g} s")


def start_server(
    ice_address: str,
    timeout: float = 20.0,
    extra_ice_addresses: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> tuple[subprocess.Popen[bytes], str]:
    """``parley serve`` on a free port (answering at 127.0.0.1); returns (process, base
    URL). ``extra_ice_addresses``: more addresses ICE gathers on (impaired links' host
    ends), ``host``: where it listens (``0.0.0.0`` to be reachable over them too)."""
    port = free_port()
    proc = subprocess.Popen(
        serve_command(host, port, (ice_address, *extra_ice_addresses)),
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_healthz(url, lambda: proc.poll() is None, timeout)
    except ServerStartError:
        if proc.poll() is not None:
            raise ServerStartError(f"parley serve exited with {proc.returncode}") from None
        stop_server(proc)
        raise ServerStartError("parley serve did not answer /healthz in time") from None
    return proc, url


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
