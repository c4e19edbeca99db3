"""Run Janus (Debian package ``janus``, VideoRoom) or Parley in a network namespace of its own.

Janus skips loopback when it gathers ICE candidates, so it runs in a namespace created
here, joined to the caller's namespace by a veth pair: the server side is
``SERVER_ADDRESS`` (10.77.0.2), the bots' side ``CLIENT_ADDRESS`` (10.77.0.1). The
caller's namespace must be one with only ``lo`` (run under ``scripts/in_netns.py``;
the CLI re-executes itself that way), so nothing reaches any other network. Parley can
run in the same kind of namespace, for a side-by-side comparison on equal terms
(``bench/compare.py``).

    .venv/bin/python bench/janus_server.py            # Janus until Ctrl-C; prints the load command
    .venv/bin/python bench/janus_server.py -- .venv/bin/parley load --target janus --url {url} \
        --server-pid {pid} --ice-address 10.77.0.1 --json janus.json   # one run, then stop

Needs: ``apt-get install -y janus`` (and iproute2, util-linux).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from loadgen.netns import HeldNamespace, ensure_loopback_namespace, only_loopback  # noqa: E402
from loadgen.server_process import serve_command, wait_for_port  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: its harness package
from harness.common import SERVER_ENV  # noqa: E402

SERVER_ADDRESS = "10.77.0.2"
CLIENT_ADDRESS = "10.77.0.1"
_PREFIX = 24
JANUS_WS_PORT = 8188
_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
_OTHER_PLUGINS = (
    "audiobridge duktape echotest lua nosip recordplay sip streaming textroom videocall voicemail"
)
_OTHER_TRANSPORTS = "http mqtt nanomsg pfunix rabbitmq"
_EVENT_HANDLERS = "gelfevh mqttevh nanomsgevh rabbitmqevh sampleevh wsevh"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def _running(interface: str) -> bool:
    """IFF_RUNNING of an interface of this namespace (the link has carrier)."""
    siocgifflags, iff_running = 0x8913, 0x40
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", interface.encode(), 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s.fileno(), siocgifflags, ifreq))[1]
    return bool(flags & iff_running)


class Namespace:
    """A network namespace (held by a sleeping process) joined to ours by a veth pair."""

    def __init__(self, name: str = "pj") -> None:
        if not only_loopback():
            raise RuntimeError("run inside a namespace that has only lo (scripts/in_netns.py)")
        self.held = HeldNamespace()
        ours, theirs = f"{name}0", f"{name}1"
        self._ours = ours
        self.interface = theirs
        try:
            path = self.netns = self.held.path
            _run("ip", "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", path)
            _run("ip", "addr", "add", f"{CLIENT_ADDRESS}/{_PREFIX}", "dev", ours)
            _run("ip", "link", "set", ours, "up")
            for cmd in (
                ("ip", "addr", "add", f"{SERVER_ADDRESS}/{_PREFIX}", "dev", theirs),
                ("ip", "link", "set", theirs, "up"),
                ("ip", "link", "set", "lo", "up"),
            ):
                _run(*self.enter(*cmd))
            self._wait_running(ours, theirs)
        except BaseException:
            self.close()
            raise

    def _wait_running(self, ours: str, theirs: str, timeout: float = 10.0) -> None:
        """Wait until the veth carries traffic (a moment after both ends are up).

        Until then the server's end is still DOWN, and Janus, which looks for the
        addresses to gather ICE candidates on when a peer connection starts, finds none
        ("Error gathering candidates", API error 490).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            peer = subprocess.run(
                self.enter("ip", "-o", "link", "show", "dev", theirs),
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if _running(ours) and "LOWER_UP" in peer and "state UP" in peer:
                return
            time.sleep(0.02)
        raise RuntimeError(f"the veth pair {ours}/{theirs} did not come up within {timeout} s")

    def enter(self, *cmd: str) -> list[str]:
        """``cmd`` to run inside the namespace (nsenter execs it: the pid stays the same)."""
        return self.held.enter(*cmd)

    def close(self) -> None:
        from loadgen.impair.link import remove_interface

        try:
            remove_interface(self._ours)  # at once, not when the namespace is torn down
        finally:
            self.held.close()


def write_janus_config(folder: Path, interface: str, event_loops: int = 0) -> Path:
    """Minimal Janus configuration: VideoRoom and the websocket transport only."""
    folder.mkdir(parents=True, exist_ok=True)
    disable = ",".join(f"libjanus_{p}.so" for p in _OTHER_PLUGINS.split())
    transports = ",".join(f"libjanus_{p}.so" for p in _OTHER_TRANSPORTS.split())
    events = ",".join(f"libjanus_{p}.so" for p in _EVENT_HANDLERS.split())
    (folder / "janus.jcfg").write_text(
        f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{_LIB}/plugins"
    transports_folder = "{_LIB}/transports"
    events_folder = "{_LIB}/events"
    loggers_folder = "{_LIB}/loggers"
    debug_level = 3
    log_to_stdout = true
    server_name = "parley-bench"
    session_timeout = 60
    event_loops = {event_loops}
}}
media: {{
    rtp_port_range = "20000-40000"
}}
nat: {{
    ice_enforce_list = "{interface}"
    full_trickle = false
}}
plugins: {{
    disable = "{disable}"
}}
transports: {{
    disable = "{transports}"
}}
events: {{
    broadcast = false
    disable = "{events}"
}}
loggers: {{
    disable = "libjanus_jsonlog.so"
}}
""",
        encoding="utf-8",
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n", encoding="utf-8")
    (folder / "janus.transport.websockets.jcfg").write_text(
        f"""general: {{
    json = "plain"
    ws = true
    ws_port = {JANUS_WS_PORT}
    ws_ip = "{SERVER_ADDRESS}"
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
""",
        encoding="utf-8",
    )
    return folder / "janus.jcfg"


class IsolatedServer:
    """Janus or Parley in its own namespace. ``url``, ``pid``; ``close()`` stops it.

    ``kind``: "janus", "parley", or a Parley variant of ``harness.common.SERVER_ENV``
    ("parley-py": ``PARLEY_NATIVE=0``, its Python forwarding path instead of the C one;
    "parley-pyingress", "parley-nosendmmsg", "parley-norecvmmsg"). ``event_loops`` is Janus's
    ``event_loops`` (0: Janus's default, a thread per handle).
    ``cpu`` pins the server to that core from its start (``taskset``, so every thread
    Janus creates inherits it). ``config_files`` holds the text of the configuration
    written for Janus (file name -> text).
    """

    def __init__(
        self, kind: str, event_loops: int = 0, log: Path | None = None, cpu: int | None = None
    ) -> None:
        if kind != "janus" and kind != "parley" and kind not in SERVER_ENV:
            raise ValueError(kind)
        self.kind = kind
        self.event_loops = event_loops
        self.cpu = cpu
        self.config_files: dict[str, str] = {}
        self.namespace = Namespace()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"parley-{kind}-"))
        output = open(log or self._tmp / "server.log", "wb")  # noqa: SIM115 - closed in close()
        self._log = output
        try:
            if kind == "janus":
                if shutil.which("janus") is None:
                    raise RuntimeError("janus is not installed: apt-get install -y janus")
                config = write_janus_config(
                    self._tmp / "conf", self.namespace.interface, event_loops
                )
                cmd = ["janus", "-C", str(config), "-F", str(config.parent), "-N"]
                self.config_files = {
                    f.name: f.read_text(encoding="utf-8") for f in sorted(config.parent.iterdir())
                }
                port = JANUS_WS_PORT
                self.url = f"ws://{SERVER_ADDRESS}:{port}"
            else:
                port = 8080
                cmd = serve_command(SERVER_ADDRESS, port, (SERVER_ADDRESS,))
                self.url = f"http://{SERVER_ADDRESS}:{port}"
            if cpu is not None:  # taskset execs the server: the pid stays the same
                cmd = ["taskset", "--cpu-list", str(cpu), *cmd]
            env = dict(os.environ)
            # the Parley variants: without its C fast path, its ingress or its batching
            env.update(SERVER_ENV.get(kind, {}))
            self.proc = subprocess.Popen(
                self.namespace.enter(*cmd),
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            )
            wait_for_port(SERVER_ADDRESS, port, lambda: self.proc.poll() is None, 20)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.namespace.close()
        self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def reexec_in_netns() -> None:
    """Re-run this script inside a fresh loopback-only namespace unless already in one."""
    ensure_loopback_namespace(who="janus_server")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("janus", "parley"), default="janus")
    parser.add_argument(
        "--event-loops", type=int, default=0, help="Janus event_loops (0: one per handle)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="run this, then stop the server")
    args = parser.parse_args()
    reexec_in_netns()
    server = IsolatedServer(args.server, args.event_loops)
    try:
        target = "janus" if args.server == "janus" else "parley"
        print(
            f"{args.server} (pid {server.pid}) at {server.url}; e.g.\n"
            f"  parley load --target {target} --url {server.url} --server-pid {server.pid} "
            f"--ice-address {CLIENT_ADDRESS} --json run.json",
            flush=True,
        )
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if command:  # {pid} and {url} are replaced by the server's
            return subprocess.call(
                [c.replace("{pid}", str(server.pid)).replace("{url}", server.url) for c in command]
            )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
        return 0
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
