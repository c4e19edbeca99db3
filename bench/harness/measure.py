"""One fan-out step: start the scenario (server, publisher, subscribers), wait for quiet,
measure packets, loss and CPU per process and per core over a window."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.common import CLIENT_CPU, SERVER_CPU
from harness.processes import (
    BenchError,
    IsolatedHandle,
    Worker,
    isolated,
    janus_server_module,
    start_isolated_server,
    start_server,
)
from harness.report import source_digest
from loadgen import procfs, server_process


@dataclass
class Scenario:
    """One server, one publisher and K subscribers, connected and forwarding."""

    fanout: int
    server: Worker | IsolatedHandle
    publisher: Worker
    sub_workers: list[Worker]
    target: str = "parley"
    #: the server's pid when it runs in a namespace of its own (its sockets are there)
    netns_pid: int | None = None
    publish_info: dict[str, Any] = field(default_factory=dict)
    sub_profiles: dict[str, str | None] = field(default_factory=dict)
    source_digest: str = ""
    #: the server's signaling URL
    url: str = ""

    @property
    def workers(self) -> list[Worker | IsolatedHandle]:
        return [self.server, self.publisher, *self.sub_workers]

    async def stop(self) -> None:
        for worker in [self.publisher, *self.sub_workers]:
            if worker is not None:
                await worker.stop()
        await self.server.stop()


async def _expect(
    worker: Worker, want: str, timeout: float, on: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """The next event ``want`` of ``worker`` (other events go to ``on``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise BenchError(f"{worker.name}: no {want!r} within {timeout} s")
        try:
            event = await asyncio.wait_for(worker.events.get(), remaining)
        except TimeoutError:
            raise BenchError(f"{worker.name}: no {want!r} within {timeout} s") from None
        if event.get("event") == want:
            return event
        if event.get("event") in ("error", "exited"):
            raise BenchError(f"{worker.name}: {event}")
        if on is not None:
            on(event)


async def start_scenario(
    args: argparse.Namespace, fanout: int, pps: float, target: str = "parley"
) -> Scenario:
    """Start the server, the subscribers and the publisher; return once all receive media.

    Parley: the subscribers join first and get offers when the publisher publishes.
    Janus: subscribers join as subscribers to a feed, so the publisher comes first.
    """
    room = f"bench-{fanout}"
    digest = source_digest()
    server: Worker | IsolatedHandle
    if isolated(args, target):
        server = await start_isolated_server(args, target)
        url, ice_address = server.url, janus_server_module().CLIENT_ADDRESS
        netns_pid: int | None = server.pid
    else:
        port = server_process.free_port()
        server = await start_server(args, port, target)
        url, ice_address, netns_pid = f"http://127.0.0.1:{port}", "127.0.0.1", None
    common = [] if args.batch_reads else ["--no-batch-reads"]
    common += [
        "--protocol",
        "janus" if target == "janus" else "parley",
        "--ice-address",
        ice_address,
        "--url",
        url,
        "--room",
        room,
        "--srtp",
        args.srtp,
        "--client-rcvbuf",
        str(args.client_rcvbuf),
    ]
    if args.pin:
        common += ["--cpu", str(CLIENT_CPU)]
    scenario = Scenario(fanout, server, None, [], target, netns_pid)  # type: ignore[arg-type]
    scenario.url = url
    procs = max(1, min(args.client_procs, fanout))
    sizes = [fanout // procs + (1 if i < fanout % procs else 0) for i in range(procs)]

    async def spawn_subscribers() -> None:
        for i, size in enumerate(sizes):
            worker = await Worker.spawn(
                f"subs{i}",
                [
                    "--worker",
                    "subscribers",
                    "--count",
                    str(size),
                    "--name-prefix",
                    f"sub{i}",
                    *common,
                ],
            )
            scenario.sub_workers.append(worker)

    async def spawn_publisher() -> None:
        scenario.publisher = await Worker.spawn(
            "publisher",
            [
                "--worker",
                "publisher",
                "--pps",
                str(pps),
                "--frame-packets",
                str(args.frame_packets),
                *common,
            ],
        )
        scenario.publish_info = await _expect(scenario.publisher, "publishing", 40)

    try:
        if target == "janus":
            await spawn_publisher()
            await spawn_subscribers()
        else:
            await spawn_subscribers()
            for worker in scenario.sub_workers:
                await _expect(worker, "joined", 30)
            await spawn_publisher()
        for worker, size in zip(scenario.sub_workers, sizes, strict=True):
            receiving = 0
            connected: dict[str, Any] = {}

            def on_event(event: dict[str, Any], connected: dict[str, Any] = connected) -> None:
                if event.get("event") == "connected":
                    connected[event["who"]] = event.get("srtp_profile")

            while receiving < size:
                await _expect(worker, "receiving", 40 + 2 * size, on_event)
                receiving += 1
            # "connected" events precede media; drain any left in the queue
            while not worker.events.empty():
                on_event(worker.events.get_nowait())
            scenario.sub_profiles.update(connected)
        scenario.source_digest = digest
        return scenario
    except BaseException:
        await scenario.stop()
        raise


def _pids(scenario: Scenario, extra: dict[str, int] | None = None) -> dict[str, int]:
    pids = {w.name: w.pid for w in scenario.workers}
    pids["bench"] = os.getpid()
    pids.update(extra or {})
    return pids


def _foreign(
    cores0: dict[int, tuple[float, float]],
    cores1: dict[int, tuple[float, float]],
    ours_by_core: dict[int, float],
    ours_total: float,
    elapsed: float,
) -> dict[str, float]:
    """CPU used by processes that are not ours, in % of one core (per core when pinned)."""
    busy = {c: cores1[c][0] - cores0[c][0] for c in cores1 if c in cores0}
    out = {"total": round(100 * (sum(busy.values()) - ours_total) / elapsed, 1)}
    for c, value in sorted(busy.items()):
        if c in ours_by_core:
            out[f"core{c}"] = round(100 * (value - ours_by_core[c]) / elapsed, 1)
    return out


def _ours_by_core(args: argparse.Namespace, deltas: dict[str, float]) -> dict[int, float]:
    if not args.pin:
        return {}
    server = deltas.get("server", 0.0)
    return {SERVER_CPU: server, CLIENT_CPU: sum(v for k, v in deltas.items() if k != "server")}


async def wait_for_quiet(args: argparse.Namespace, scenario: Scenario) -> dict[str, float]:
    """Wait (bounded) until other processes on the machine use little CPU."""
    deadline = time.monotonic() + args.quiet_timeout
    said = False
    while True:
        pids = _pids(scenario)
        cpu0 = {n: sum(procfs.process_cpu_times(p)) for n, p in pids.items()}
        cores0 = procfs.core_busy()
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        cpu1 = {n: sum(procfs.process_cpu_times(p)) for n, p in pids.items()}
        cores1 = procfs.core_busy()
        deltas = {n: cpu1[n] - cpu0[n] for n in pids}
        foreign = _foreign(
            cores0, cores1, _ours_by_core(args, deltas), sum(deltas.values()), time.monotonic() - t0
        )
        if foreign["total"] <= args.max_foreign or time.monotonic() > deadline:
            if said:
                print(f"  other load now {foreign['total']}% of a core", flush=True)
            return foreign
        if not said:
            print(
                f"  waiting for other processes to calm down ({foreign['total']}% of a core) ...",
                flush=True,
            )
            said = True


async def measure(
    args: argparse.Namespace,
    scenario: Scenario,
    window: float,
    extra_pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One measurement window on a running scenario."""
    pids = _pids(scenario, extra_pids)
    inodes = {name: procfs.socket_inodes(pid) for name, pid in pids.items()}
    ns = scenario.netns_pid

    def drops_now() -> dict[int, int]:
        """Ours, and those of the server's namespace when it has one (inodes are global)."""
        out = procfs.udp_drops()
        if ns is not None:
            out.update(procfs.udp_drops(f"/proc/{ns}/net/udp"))
        return out

    def server_snmp() -> dict[str, int]:
        return procfs.udp_snmp(f"/proc/{ns}/net/snmp") if ns is not None else {}

    cpu0 = {name: procfs.process_cpu_times(pid) for name, pid in pids.items()}
    cores0 = procfs.core_busy()
    drops0 = drops_now()
    snmp0 = procfs.udp_snmp()
    server_snmp0 = server_snmp()
    mark0 = await scenario.publisher.request({"cmd": "mark"})
    t0 = time.monotonic()
    await asyncio.sleep(window)
    cpu1 = {name: procfs.process_cpu_times(pid) for name, pid in pids.items()}
    cores1 = procfs.core_busy()
    mark1 = await scenario.publisher.request({"cmd": "mark"})
    t1 = time.monotonic()
    drops1 = drops_now()
    snmp1 = procfs.udp_snmp()
    server_snmp1 = server_snmp()
    await asyncio.sleep(args.drain)
    counts: dict[str, int] = {}
    fast_path: dict[str, bool] = {}
    runs: dict[str, list[int]] = {}
    for worker in scenario.sub_workers:
        reply = await worker.request(
            {"cmd": "count", "start": mark0["index"], "end": mark1["index"]}
        )
        counts.update(reply["counts"])
        fast_path.update(reply["fast_path"])
        runs.update(reply["loss_runs"])
    elapsed = t1 - t0
    sent = mark1["index"] - mark0["index"]
    received = sum(counts.values())
    expected = sent * scenario.fanout
    lost = max(0, expected - received)

    def drops_of(names: list[str]) -> int:
        total = 0
        for name in names:
            for inode in inodes[name]:
                total += drops1.get(inode, 0) - drops0.get(inode, 0)
        return total

    server_drops = drops_of(["server"])
    client_drops = drops_of([w.name for w in scenario.sub_workers] + ["publisher"])
    cpu: dict[str, dict[str, float]] = {}
    deltas: dict[str, float] = {}
    for name in pids:
        user = cpu1[name][0] - cpu0[name][0]
        system = cpu1[name][1] - cpu0[name][1]
        deltas[name] = user + system
        cpu[name] = {
            "user_s": round(user, 3),
            "system_s": round(system, 3),
            "core_pct": round(100 * (user + system) / elapsed, 1),
        }
    server_cpu = deltas["server"]
    clients = [w.name for w in scenario.workers if w.name != "server"]
    cores = {
        str(c): round(
            100 * (cores1[c][0] - cores0[c][0]) / max(1e-9, cores1[c][1] - cores0[c][1]), 1
        )
        for c in cores1
        if c in cores0
    }
    foreign = _foreign(cores0, cores1, _ours_by_core(args, deltas), sum(deltas.values()), elapsed)
    # Loss at the clients' own sockets is theirs; everything else lost between the
    # publisher's sendto and the subscribers' callbacks is the SFU's (its socket, its
    # processing, its sends).
    sfu_lost = max(0, lost - client_drops)
    per_sub_loss = {
        name: round(100 * (sent - n) / sent, 3) if sent else None
        for name, n in sorted(counts.items())
    }
    return {
        "target": scenario.target,
        "fanout": scenario.fanout,
        "window_s": round(elapsed, 3),
        "target_pps": mark1.get("pps"),
        "sent": sent,
        "received": received,
        "expected": expected,
        "in_pps": round(sent / elapsed, 1),
        "forwarded_pps": round(received / elapsed, 1),
        "sfu_cpu_s": round(server_cpu, 3),
        "sfu_core_pct": cpu["server"]["core_pct"],
        "sfu_us_per_in": round(1e6 * server_cpu / sent, 2) if sent else None,
        "sfu_us_per_fwd": round(1e6 * server_cpu / received, 2) if received else None,
        "lost": lost,
        "loss_pct": round(100 * lost / expected, 4) if expected else None,
        "sfu_lost": sfu_lost,
        "sfu_loss_pct": round(100 * sfu_lost / expected, 4) if expected else None,
        "per_subscriber_loss_pct": per_sub_loss,
        # bursts (few long runs) mean the SFU stalled and its socket overflowed
        "loss_runs": sum(r[0] for r in runs.values()),
        "longest_loss_run": max((r[1] for r in runs.values()), default=0),
        "udp_drops_server_sockets": server_drops,
        "udp_drops_client_sockets": client_drops,
        "udp_rcvbuf_errors_ns": snmp1.get("RcvbufErrors", 0) - snmp0.get("RcvbufErrors", 0),
        "udp_rcvbuf_errors_server_ns": (
            server_snmp1.get("RcvbufErrors", 0) - server_snmp0.get("RcvbufErrors", 0)
            if ns is not None
            else None
        ),
        "publisher_skipped": mark1["skipped"] - mark0["skipped"],
        "publisher_send_failures": mark1["send_failures"] - mark0["send_failures"],
        "cpu": cpu,
        "core_busy_pct": cores,
        "foreign_load_pct": foreign,
        "clients_core_pct": round(sum(cpu[n]["core_pct"] for n in clients), 1),
        "saturated_clients": [n for n in clients if cpu[n]["core_pct"] > 90.0],
        "subscribers_fast_path": all(fast_path.values()),
    }
