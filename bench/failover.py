"""Time from a node's death to media back for its clients, over several trials.

Two ``parley serve --redis`` nodes, each in its own network namespace behind a veth pair
(``loadgen/impair/link.py``, unshaped), one ``redis-server`` in this namespace, two
``parley bot --reconnect`` processes in one room (one entering through each node, the
other node as fallback). Each trial: wait until the owner forwards both bots' tracks,
1.5 s more, SIGKILL the owner, and read from the bots' summaries when the first frames
of the other bot's audio and video arrived on their new connection; the later of those
minus the kill is "media back". The killed node is started again for the next trial.
The script re-executes itself in a loopback-only namespace (``loadgen/netns.py``).

    .venv/bin/python bench/failover.py [--trials 10]

Prints one line per trial and the p50 and max, and writes
``bench/results/failover.json``. See docs/scaling.md.

With ``--drain`` the owner is not killed but drained: the nodes run with
``--drain-timeout 20`` and the owner gets SIGTERM, so it moves its clients to the other
node before it exits; "media back" counts from the SIGTERM, and the time the node took
to exit is kept too (``bench/results/failover-drain.json``).

With ``--workers N`` each node is a front with N workers (``parley serve --workers N
--redis ...``, cluster/front_node.py): the SIGKILL goes to the front, whose workers die
with it (``bench/results/failover-workers.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen.impair.link import ImpairedLink  # noqa: E402
from loadgen.netns import ensure_loopback_namespace  # noqa: E402

PARLEY = [sys.executable, "-m", "parley"]
PORT = 8080
RESULTS = Path(__file__).resolve().parent / "results" / "failover.json"


def healthz(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1.0) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except OSError:
        return None


def wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"failover: {what}: not within {timeout} s")
        time.sleep(0.1)
    return value


def redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


class Node:
    def __init__(
        self, name: str, link: ImpairedLink, redis_port: int, extra: tuple[str, ...] = ()
    ) -> None:
        self.name, self.link, self.redis_port, self.extra = name, link, redis_port, extra
        self.url = f"http://{link.peer_address}:{PORT}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        link = self.link
        self.proc = subprocess.Popen(
            link.command([
                *PARLEY, "serve", "--host", link.peer_address, "--port", str(PORT),
                "--ice-address", link.peer_address, "--allow-anonymous",
                "--redis", f"redis://{link.host_address}:{self.redis_port}/0",
                "--node-url", f"ws://{link.peer_address}:{PORT}/ws", "--node-id", self.name,
                "--log-level", "WARNING", *self.extra,
            ]),
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait(f"node {self.name} answers", lambda: healthz(self.url), 40)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def trial(
    index: int, nodes: dict[str, Node], redis_port: int, tmp: Path, drain: bool = False
) -> dict[str, Any]:
    room = f"trial-{index}"
    bots = []
    for name, entry, other in (("ada", "a", "b"), ("bob", "b", "a")):
        bots.append(
            subprocess.Popen(
                [
                    *PARLEY, "bot", "--url", nodes[entry].url, "--fallback-url", nodes[other].url,
                    "--room", room, "--name", name, "--duration", "10", "--reconnect",
                    "--ice-address", nodes["a"].link.host_address,
                    "--json", str(tmp / f"{name}-{index}.json"),
                ],
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    owner = wait("room placed", lambda: redis_cli(redis_port, "GET", f"parley:room:{room}"), 30)
    dead = nodes[owner]
    wait("forwarding", lambda: (healthz(dead.url) or {}).get("forwarders", 0) >= 4, 30)
    time.sleep(1.5)
    exited_after = None
    if drain and dead.proc is not None:
        dead.proc.send_signal(signal.SIGTERM)
        killed_at = time.time()
        dead.proc.wait(30)
        exited_after = round(time.time() - killed_at, 3)
    else:
        dead.kill()
        killed_at = time.time()
    for bot in bots:
        bot.wait(60)
    backs = {}
    for name, other in (("ada", "bob"), ("bob", "ada")):
        summary = json.loads((tmp / f"{name}-{index}.json").read_text())
        firsts = [
            summary["started_unix"] + t["first_frame_ms"] / 1000
            for t in summary["tracks"]
            if t["session"] == 1 and t["participant_name"] == other and t["frames_decoded"] > 0
        ]
        backs[name] = round(max(firsts) - killed_at, 3) if len(firsts) == 2 else None
    dead.start()  # for the next trial
    result: dict[str, Any] = {"trial": index, "killed": owner, "media_back_s": backs}
    if drain:
        result["exited_after_s"] = exited_after
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument(
        "--drain", action="store_true", help="SIGTERM a node with --drain-timeout, not SIGKILL"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="each node a front with N workers"
    )
    args = parser.parse_args()
    ensure_loopback_namespace(who="failover")
    if shutil.which("redis-server") is None:
        raise SystemExit("failover: redis-server is not installed (apt-get install redis-server)")
    links = [ImpairedLink(i) for i in (181, 182)]
    redis_port = 6390
    redis = None
    nodes: dict[str, Node] = {}
    results = []
    try:
        for link in links:
            link.start()
            subprocess.run(
                link.command(["ip", "route", "add", "default", "via", link.host_address]),
                check=True,
            )
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "0.0.0.0", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait("redis answers", lambda: redis_cli(redis_port, "PING") == "PONG", 10)
        for name, link in zip("ab", links, strict=True):
            extra: tuple[str, ...] = ("--drain-timeout", "20") if args.drain else ()
            if args.workers:
                extra += ("--workers", str(args.workers))
            nodes[name] = Node(name, link, redis_port, extra)
            nodes[name].start()
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.trials):
                result = trial(i, nodes, redis_port, Path(tmp), args.drain)
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        for node in nodes.values():
            node.kill()
        if redis is not None:
            redis.kill()
            redis.wait()
        for link in links:
            link.close()
    backs = [b for r in results for b in r["media_back_s"].values()]
    missing = sum(b is None for b in backs)
    values = sorted(b for b in backs if b is not None)
    summary = {
        "trials": len(results),
        "clients": len(backs),
        "not_back": missing,
        "p50_s": round(statistics.median(values), 3) if values else None,
        "max_s": values[-1] if values else None,
        "results": results,
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    if args.drain:
        exits = sorted(r["exited_after_s"] for r in results)
        summary["mode"] = "drain (SIGTERM with --drain-timeout 20)"
        summary["exited_after_s"] = {"p50": statistics.median(exits), "max": exits[-1]}
    if args.workers:
        summary["workers_per_node"] = args.workers
    out = RESULTS.with_name("failover-drain.json") if args.drain else RESULTS
    if args.workers:
        out = out.with_name(out.stem + "-workers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"media back after a node's {'drain' if args.drain else 'death'}: p50 {summary['p50_s']} s, max {summary['max_s']} s, "
          f"{missing} of {len(backs)} clients not back")  # fmt: skip
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
