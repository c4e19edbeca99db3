"""What a pipe hop costs (sfu/pipe.py): latency added, and CPU per piped packet.

**Latency** (one run): two Parley servers as two processes (``--node``, each an aiohttp
app with its SFU and a ``PipeTransport`` on loopback; A exports the room to B), one
``parley load`` simulcast publisher on A (tagged RTP: the send time rides in every
payload, ``docs/loadgen.md``), one load subscriber on A and one on B, both in this
process (same clock, same event loop: the load generator's own delay is the same for
both). One-way latency per packet, publisher → subscriber, on A (no hop) and on B (one
hop): p50/p99 of each and the difference.

**CPU per piped packet** (in this process, synthetic VP8 packets, no peer connection):
an origin Source with a tap (the export side: SSRC rewrite and ``sendto``) and, on the
far side, the pipe's receive path (parse, demux by pipe SSRC, ``Source.on_rtp``: the
packet cache, receive statistics, NACK tracking, no subscriber). Export cost is
measured as the process CPU of N packets through the Source with the tap attached
minus without; receive cost as the CPU spent in ``datagram_received``.

    .venv/bin/python bench/pipe.py [--duration 20] [--packets 50000]

Runs in a loopback-only network namespace (re-executes itself under
``scripts/in_netns.py``); writes ``bench/results/pipe.json``. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ROOM = "bench"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ a node


async def run_node(http_port: int, pipe_port: int, peer_port: int, export: bool) -> None:
    from aiohttp import web

    from sfu.pipe import PipeTransport
    from signaling.server import SFU_KEY, ServerConfig, create_app

    app = create_app(ServerConfig())
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    pipe = await PipeTransport.open(app[SFU_KEY], ("127.0.0.1", pipe_port), timeout=60.0)
    pipe.connect(("127.0.0.1", peer_port))
    if export:
        await pipe.export_room(ROOM)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent says when
    stats = pipe.stats()
    cpu = os.times()
    stats["cpu_s"] = cpu.user + cpu.system
    print(json.dumps(stats), flush=True)
    await pipe.close()
    await runner.cleanup()


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def latency_run(duration: float) -> dict[str, Any]:
    from loadgen.load.bots import BotSpec, WorkerMetrics
    from loadgen.load.publisher import LoadPublisher
    from loadgen.load.subscriber import LoadSubscriber
    from loadgen.media.prepared import prepare_media

    http = [free_port(socket.SOCK_STREAM) for _ in range(2)]
    udp = [free_port(socket.SOCK_DGRAM) for _ in range(2)]
    script = str(Path(__file__).resolve())
    nodes = []
    for i in range(2):
        args = [sys.executable, script, "--node", str(http[i]), str(udp[i]), str(udp[1 - i])]
        nodes.append(
            subprocess.Popen(
                args + (["--export"] if i == 0 else []),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for node in nodes:
            assert node.stdout is not None
            if node.stdout.readline().strip() != "ready":
                raise RuntimeError("a node did not start")
        media = prepare_media()
        url_a, url_b = (f"http://127.0.0.1:{p}" for p in http)
        start = time.monotonic()
        pub = LoadPublisher(
            BotSpec("publisher", ROOM, "pub", 0, start, simulcast=True),
            url_a,
            WorkerMetrics(),
            media,
        )
        metrics = {"A": WorkerMetrics(), "B": WorkerMetrics()}
        subs = {
            "A": LoadSubscriber(
                BotSpec("subscriber", ROOM, "sa", 0, start + 1), url_a, metrics["A"]
            ),
            "B": LoadSubscriber(
                BotSpec("subscriber", ROOM, "sb", 1, start + 1), url_b, metrics["B"]
            ),
        }
        for name, sub in subs.items():
            metrics[name].subscribers.append(sub)
        tasks = [asyncio.ensure_future(b.run()) for b in (pub, *subs.values())]
        await asyncio.sleep(4.0)  # joined, keyframes through: measure from here
        for m in metrics.values():
            m.total = type(m.total)()
        cpu0 = [cpu_of(n.pid) for n in nodes]
        await asyncio.sleep(duration)
        cpu1 = [cpu_of(n.pid) for n in nodes]
        result: dict[str, Any] = {}
        for name, m in metrics.items():
            m.finish_counters()
            result[name] = {k: m.total.latency[k].summary() for k in ("audio", "video")}
        for b in (pub, *subs.values()):
            b.stop()
        await asyncio.gather(*tasks)
        stats = []
        for node in nodes:
            out, _ = node.communicate("stop\n", timeout=20)
            stats.append(json.loads(out.strip().splitlines()[-1]))
        result["pipe_A"], result["pipe_B"] = stats
        result["node_cpu_s"] = {"A": cpu1[0] - cpu0[0], "B": cpu1[1] - cpu0[1]}
        result["window_s"] = duration
        result["errors"] = [e for b in (pub, *subs.values()) for e in b.errors]
        return result
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()


# ------------------------------------------------------------------ CPU per packet


async def cpu_run(packets: int) -> dict[str, Any]:
    from sfu.pipe import PipeTransport
    from sfu.ports import NullListener
    from sfu.room import Sfu
    from sfu.rtp.packet import RtpView
    from sfu.source import Source, SourceParams
    from sfu.tracks import PublishedTrack
    from tests.fakes import rtp, vp8_payload

    sfu_a, sfu_b = Sfu(), Sfu()
    pipe_a = await PipeTransport.open(sfu_a)
    pipe_b = await PipeTransport.open(sfu_b)
    pipe_a.connect(pipe_b.local_address)
    pipe_b.connect(pipe_a.local_address)
    pub = sfu_a.join(ROOM, "synthetic", NullListener())
    params = SourceParams("t", "video", "vp8", 90000, 96, 0x1234, 97, 0x5678, mid="0")
    source = Source(params, pub.publish_side)
    pub.publish_side.add_track(PublishedTrack("t", "video", "0", (source,)), 0.0)
    body = bytes(1100)

    def packet(i: int) -> bytes:
        payload = vp8_payload(i % 500 == 0, picture_id=i & 0x7FFF, body=body)
        return rtp(i, 3000 * (i // 5), ssrc=0x1234, payload=payload)

    loop = asyncio.get_running_loop()
    received = {"n": 0, "cpu": 0.0}
    inner = pipe_b.datagram_received

    def timed(payload: bytes, addr: tuple[str, int]) -> None:
        t0 = time.process_time()
        inner(payload, addr)
        received["cpu"] += time.process_time() - t0
        received["n"] += 1

    pipe_b.datagram_received = timed  # type: ignore[method-assign,assignment]

    async def push(offset: int) -> float:
        cpu = 0.0
        for start in range(offset, offset + packets, 25):  # bursts: the far side reads
            burst = [packet(i) for i in range(start, start + 25)]
            t0 = time.process_time()
            for data in burst:
                source.on_rtp(RtpView(data), loop.time())
            cpu += time.process_time() - t0
            await asyncio.sleep(0.001)
        return cpu

    # what the two process_time() reads around each datagram cost by themselves
    t0 = time.process_time()
    for _ in range(20_000):
        time.process_time()
    clock_cost = (time.process_time() - t0) / 20_000
    bare = await push(0)  # no tap: the Source's own ingress cost
    await pipe_a.export_track(ROOM, pub.id, "0")
    received["n"], received["cpu"] = 0, 0.0
    tapped = await push(packets)
    await asyncio.sleep(0.5)
    from sfu.native import NATIVE

    out = {
        "native_forwarding": NATIVE,
        "packets": packets,
        "payload_bytes": len(body),
        "origin_ingress_us": bare / packets * 1e6,
        "export_us": (tapped - bare) / packets * 1e6,
        "far_receive_us": (received["cpu"] / max(1, received["n"]) - clock_cost) * 1e6,
        "far_received": received["n"],
    }
    await pipe_a.close()
    await pipe_b.close()
    await sfu_a.close()
    await sfu_b.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--packets", type=int, default=40_000)
    parser.add_argument("--node", nargs=3, type=int, metavar=("HTTP", "PIPE", "PEER"))
    parser.add_argument("--export", action="store_true")
    args = parser.parse_args()
    if args.node:
        http, pipe, peer = args.node
        asyncio.run(run_node(http, pipe, peer, export=args.export))
        return 0
    from loadgen.netns import ensure_loopback_namespace

    ensure_loopback_namespace(who="pipe")
    os.environ.setdefault("PYTHONPATH", str(REPO))
    results = {
        "latency": asyncio.run(latency_run(args.duration)),
        "cpu": asyncio.run(cpu_run(args.packets)),
    }
    lat = results["latency"]
    for kind in ("audio", "video"):
        a, b = lat["A"][kind], lat["B"][kind]
        print(
            f"{kind}: publisher -> subscriber on A p50 {a['p50']:.2f} ms p99 {a['p99']:.2f} ms"
            f" ({a['count']} packets); on B (one pipe hop) p50 {b['p50']:.2f} ms"
            f" p99 {b['p99']:.2f} ms ({b['count']}); hop adds p50 {b['p50'] - a['p50']:+.2f} ms"
            f" p99 {b['p99'] - a['p99']:+.2f} ms"
        )
    piped = lat["pipe_B"]["rtp_in"]
    print(
        f"node CPU over {lat['window_s']:g} s: A {lat['node_cpu_s']['A']:.2f} s,"
        f" B {lat['node_cpu_s']['B']:.2f} s; piped packets received by B: {piped}"
    )
    cpu = results["cpu"]
    print(
        f"CPU per piped packet ({cpu['payload_bytes']} B payload): export {cpu['export_us']:.2f} us"
        f" on the origin (its ingress alone {cpu['origin_ingress_us']:.2f} us),"
        f" receive {cpu['far_receive_us']:.2f} us on the far side"
    )
    out = REPO / "bench" / "results" / "pipe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
