"""Forwarding benchmark: one VP8 publisher, K subscribers, SFU CPU per packet.

    python bench/forwarding.py --fanouts 1,4,16 --json out.json
    python bench/forwarding.py --sweep --fanouts 1,4,16       # also find saturation
    python bench/forwarding.py --profile --fanouts 4,16       # also py-spy the SFU
    python bench/forwarding.py --target parley,janus --isolated --fanouts 4,16   # vs Janus

Runs everything itself, inside a network namespace that has only ``lo`` (it re-executes
itself under ``unshare --net --map-root-user`` unless it already is in one): the Parley
server (``create_app``, as ``parley serve`` runs it) in its own process, pinned to core 0,
and the load clients in other processes, pinned to core 1 (``--no-pin`` to let the
scheduler place them).

The clients never encode or decode media. The publisher is an aiortc peer connection
whose track-less video sender is hooked (``sfu.aiortc_adapter.hook_sender``) so aiortc
sends nothing; the script writes its own 1000-byte RTP packets through a ``MediaPort``
on the connection's DTLS transport: the negotiated VP8 payload type, the SSRC announced
in the offer, a one-byte header extension with the MID, a VP8 payload descriptor
(15-bit picture id) and filler. Every frame is a keyframe (its first packet starts a VP8
key frame), so the SFU never gates anything. The last 4 bytes of each payload are a
packet index, which the SFU forwards untouched: subscribers mark the indexes they get,
so loss is counted exactly over the packets the publisher sent in the window, whatever
the SFU does to sequence numbers.

Subscribers are aiortc peer connections that answer the server's subscribe offers with
hooked receivers (no decoder thread, no RTCP task) and count packets in a ``MediaPort``
callback. They live in ``--client-procs`` processes (the publisher in its own).

Per fan-out K: wait until every subscriber receives media, warm up, then measure over a
fixed window: packets sent, packets received per subscriber, CPU time (utime + stime
from /proc/PID/stat) of the SFU and of every client process, and per-socket UDP drops
from /proc/net/udp (to tell drops at the SFU's sockets from drops at the clients').
Results go to a table on stdout and to JSON (``--json``).

``--target janus`` drives Janus's VideoRoom (Debian ``janus``) with the same publisher,
subscribers, packets, pinning, windows and formulas; ``--target parley,janus`` measures
both, fan-out by fan-out, and reports the Parley / Janus ratios. Janus skips loopback when
it gathers ICE candidates, so it runs in a network namespace of its own joined to the
bench's by a veth pair (``bench/janus_server.py``: server 10.77.0.2, clients 10.77.0.1);
its CPU is read from /proc/PID/stat of the janus process (all threads), its socket drops
from /proc/PID/net/udp. ``--isolated`` runs Parley the same way (``parley serve`` in its
own namespace over the veth), so both servers pay the same network path.

This is a benchmark, not a test: it is not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):  # run as a script from anywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from harness.calibrate import calibrate  # noqa: E402
from harness.common import CLIENT_CPU, PACKET_SIZE, SERVER_CPU, SRTP_PROFILE_NAMES, TARGETS  # noqa: E402
from harness.processes import BenchError  # noqa: E402
from harness.profile import run_profile  # noqa: E402
from harness.report import git_state, janus_info, machine_info, print_table, ratios, source_digest  # noqa: E402
from harness.sweep import fanout_pps, run_fanout, run_sweep, server_mode  # noqa: E402
from harness.workers import pin_to_cpu, worker_main  # noqa: E402

from loadgen import netns  # noqa: E402

# =============================================================== namespace


def ensure_loopback_namespace() -> None:
    """Re-exec under ``unshare -rn`` unless only ``lo`` exists; then bring ``lo`` up."""
    netns.ensure_loopback_namespace(
        [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
        who="forwarding bench",
        strict=True,
    )


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    fanouts = [int(x) for x in args.fanouts.split(",") if x.strip()]
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    out_dir = Path(args.json).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "forwarding",
        "command": " ".join(
            [
                os.path.relpath(sys.argv[0], REPO)
                if sys.argv[0].startswith(str(REPO))
                else sys.argv[0],
                *sys.argv[1:],
            ]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "targets": targets,
        "server_mode": {t: server_mode(args, t) for t in targets},
        "machine": machine_info(args),
        "git": git_state(),
        "sfu_source_digest_at_start": source_digest(),
        "load": {
            "packet_bytes": PACKET_SIZE,
            "packets_per_frame": args.frame_packets,
            "every_frame_keyframe": True,
            "codec": "VP8 (payload descriptor with 15-bit picture id; no decoding anywhere)",
            "header_extensions": "MID (one-byte form)",
            "pps": args.pps,
            "warmup_s": args.warmup,
            "window_s": args.window,
            "windows_per_fanout": args.repeat,
            "client_procs": args.client_procs,
            "srtp_requested": args.srtp,
        },
        "results": [],
    }
    if args.pin:
        pin_to_cpu(CLIENT_CPU)
    print(
        f"forwarding bench ({', '.join(f'{t}: {server_mode(args, t)}' for t in targets)}): "
        f"{len(os.sched_getaffinity(0)) if not args.pin else os.cpu_count()} CPUs; "
        + (
            f"SFU pinned to core {SERVER_CPU}, clients (and this script) to core {CLIENT_CPU}"
            if args.pin
            else "no pinning"
        ),
        flush=True,
    )
    if args.calibrate and "parley" in targets:
        if args.pin:
            pin_to_cpu(SERVER_CPU)
        report["calibration_us_per_packet"] = calibrate()
        pin_to_cpu(CLIENT_CPU if args.pin else None)
        print("per-packet cost of each step in isolation (no event loop; us):", flush=True)
        for k, v in report["calibration_us_per_packet"].items():
            print(f"  {k:<52} {v:>6.2f}", flush=True)
    profiles: set[str] = set()
    for fanout in fanouts:
        for target in targets:
            print(
                f"{target} fan-out {fanout}: {fanout_pps(args, fanout):.0f} pps, "
                f"warm-up {args.warmup} s, window {args.window} s ...",
                flush=True,
            )
            result = await run_fanout(args, fanout, target)
            report["results"].append(result)
            profiles.add(str(result["srtp_profile_publisher"]))
            profiles.update(result["srtp_profiles_subscribers"])
            print(
                f"  in {result['in_pps']:.0f} pps, fwd {result['forwarded_pps']:.0f} pps, "
                f"SFU {result['sfu_us_per_in']} us/in, {result['sfu_us_per_fwd']} us/fwd, "
                f"SFU loss {result['sfu_loss_pct']}%",
                flush=True,
            )
    report["machine"]["srtp_profile_negotiated"] = sorted(profiles)
    if args.sweep:
        report["sweep"] = []
        sweep_fanouts = [
            int(x) for x in (args.sweep_fanouts or args.fanouts).split(",") if x.strip()
        ]
        for fanout in sweep_fanouts:
            for target in targets:
                print(
                    f"sweep {target} fan-out {fanout} (x{args.sweep_factor} per step) ...",
                    flush=True,
                )
                sweep = await run_sweep(args, fanout, target)
                report["sweep"].append(sweep)
                print(
                    f"  no SFU loss up to {sweep['max_clean_in_pps']} pps in "
                    f"({sweep['max_clean_forwarded_pps']} forwarded); first loss at "
                    f"{sweep['first_loss_in_pps']} pps; stopped by: {sweep['stopped_by']}",
                    flush=True,
                )
    if args.profile and "parley" in targets:
        report["profile"] = []
        profile_fanouts = [
            int(x) for x in (args.profile_fanouts or args.fanouts).split(",") if x.strip()
        ]
        for fanout in profile_fanouts:
            print(f"profiling the SFU at fan-out {fanout} with py-spy ...", flush=True)
            report["profile"].append(await run_profile(args, fanout, out_dir))
    if args.profile and "parley" not in targets:
        print("--profile samples Parley with py-spy: nothing to profile for Janus", flush=True)
    if "janus" in targets:
        report["janus"] = janus_info(args)
    print()
    print_table(report["results"])
    print(f"SRTP profile negotiated: {', '.join(sorted(profiles))}")
    others = ("janus", "parley-py", "parley-pyingress", "parley-nosendmmsg", "parley-norecvmmsg")
    for other, label in ((o, "Janus" if o == "janus" else o) for o in others):
        if "parley" not in targets or other not in targets:
            continue
        suffix = other.replace("-", "_")
        key_name = f"ratios_parley_over_{suffix}"
        report[key_name] = ratios(report, other)
        for key, value in report[key_name].items():
            if key.startswith("fanout_"):
                print(
                    f"Parley / {label} at K={key[7:]}: {value['us_per_fwd']} "
                    f"({value['parley_us_per_fwd']} / "
                    f"{value[suffix + '_us_per_fwd']} us per forwarded packet)"
                )
            else:
                print(
                    f"Parley / {label} sweep K={key[13:]}: max clean forwarded pps ratio "
                    f"{value['max_clean_forwarded_pps']} (stopped by: {' / '.join(value['stopped_by'])})"
                )
    for p in report.get("profile", []):
        if "error" in p:
            print(f"profile K={p['fanout']}: {p['error']}")
            continue
        print(
            f"where the time goes at K={p['fanout']} (us per incoming packet, {p['samples']} samples):"
        )
        for k, v in sorted(p["us_per_incoming_packet"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<46} {v:>7.2f} us  ({p['share_of_cpu_pct'][k]:.1f}%)")
    digests = {r.get("sfu_source_digest") for r in report["results"]}
    digests |= {r.get("sfu_source_digest") for r in report.get("sweep", [])}
    digests |= {r.get("sfu_source_digest") for r in report.get("profile", [])}
    digests.discard(None)
    report["sfu_source_changed_during_run"] = len(digests) > 1
    if len(digests) > 1:
        print("WARNING: sfu/ or signaling/ changed during the run; figures mix versions")
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--target",
        default="parley",
        help="server(s) to measure, comma-separated: parley, parley-py (Parley with "
        "PARLEY_NATIVE=0: forwarding in Python, not C), parley-pyingress (PARLEY_NATIVE_INGRESS=0: the C loop, the ingress in Python), janus; e.g. parley,janus (each "
        "fan-out runs against each in turn; the JSON has Parley / Janus and Parley / "
        "parley-py ratios where both ran)",
    )
    p.add_argument(
        "--isolated",
        action="store_true",
        help="run Parley in a network namespace of its own over a veth pair, as Janus always "
        "is (bench/janus_server.py), so both servers pay the same network path",
    )
    p.add_argument(
        "--janus-event-loops",
        type=int,
        default=0,
        help="Janus's event_loops setting (default 0: Janus's default, a thread per handle)",
    )
    p.add_argument(
        "--fanouts", default="1,4,16", help="comma-separated subscriber counts (default 1,4,16)"
    )
    p.add_argument(
        "--pps", type=float, default=5000, help="publisher packets per second (default 5000)"
    )
    p.add_argument(
        "--max-forwarded-pps",
        type=float,
        default=12000.0,
        help="cap the publisher rate at this / K so the SFU stays below saturation (0: no cap)",
    )
    p.add_argument(
        "--frame-packets", type=int, default=10, help="packets per (key)frame (default 10)"
    )
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds after all subscribers get media"
    )
    p.add_argument(
        "--window", type=float, default=8.0, help="measurement window in seconds (default 8)"
    )
    p.add_argument(
        "--repeat", type=int, default=2, help="windows per fan-out; the least disturbed is kept"
    )
    p.add_argument(
        "--max-foreign",
        type=float,
        default=10.0,
        help="wait before a window until other processes use at most this %% of a core",
    )
    p.add_argument(
        "--quiet-timeout", type=float, default=60.0, help="longest wait for that, seconds"
    )
    p.add_argument("--drain", type=float, default=0.3, help="seconds to let in-flight packets land")
    p.add_argument(
        "--client-procs", type=int, default=2, help="processes for the subscribers (default 2)"
    )
    p.add_argument(
        "--client-rcvbuf",
        type=int,
        default=4 << 20,
        help="SO_RCVBUF of client sockets (0: default)",
    )
    p.add_argument(
        "--srtp",
        choices=[*SRTP_PROFILE_NAMES, "any"],
        default="aes256gcm",
        help="DTLS-SRTP profile the clients accept (default aes256gcm)",
    )
    p.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin the SFU/clients to cores 0/1"
    )
    p.add_argument(
        "--json",
        default=str(REPO / "bench" / "results" / "forwarding.json"),
        help="output JSON path",
    )
    p.add_argument(
        "--sweep", action="store_true", help="also raise the rate until SFU loss appears"
    )
    p.add_argument("--sweep-fanouts", default=None, help="fan-outs to sweep (default: --fanouts)")
    p.add_argument(
        "--sweep-start", type=float, default=0.0, help="first sweep rate (default 4000/K pps)"
    )
    p.add_argument("--sweep-factor", type=float, default=1.25)
    p.add_argument("--sweep-max", type=float, default=60000.0)
    p.add_argument("--sweep-steps", type=int, default=20)
    p.add_argument("--sweep-settle", type=float, default=1.0)
    p.add_argument("--sweep-window", type=float, default=4.0)
    p.add_argument(
        "--sweep-stop-loss",
        type=float,
        default=1.0,
        help="sweep stops once SFU loss exceeds this %% (default 1)",
    )
    p.add_argument(
        "--loss-threshold", type=float, default=0.1, help="SFU loss %% that counts as saturation"
    )
    p.add_argument("--profile", action="store_true", help="also sample the SFU with py-spy")
    p.add_argument(
        "--profile-fanouts", default=None, help="fan-outs to profile (default: --fanouts)"
    )
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument(
        "--profile-blocking",
        action="store_true",
        help="let py-spy pause the SFU for each sample (default --nonblocking, which matched "
        "the measured CPU time here; blocking mode over-counted syscalls)",
    )
    p.add_argument(
        "--no-batch-reads",
        dest="batch_reads",
        action="store_false",
        help="subscribers read one datagram per event-loop turn (asyncio default)",
    )
    p.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="skip timing each step of the SFU path in isolation",
    )
    p.add_argument("--gc-log", action="store_true", help="server prints GC pauses >= 5 ms")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="hard bound on the whole run")
    # worker-side (internal)
    p.add_argument(
        "--worker", choices=["server", "publisher", "subscribers"], help=argparse.SUPPRESS
    )
    p.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--protocol", choices=TARGETS, default="parley", help=argparse.SUPPRESS)
    p.add_argument("--ice-address", default="127.0.0.1", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--room", default="bench", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--name-prefix", default="sub", help=argparse.SUPPRESS)
    return p


async def _main_async(args: argparse.Namespace) -> int:
    task = asyncio.ensure_future(orchestrate(args))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await asyncio.wait_for(task, args.max_seconds)
    except (asyncio.CancelledError, TimeoutError):
        print("forwarding bench: interrupted or out of time", file=sys.stderr)
        return 1
    except BenchError as exc:
        print(f"forwarding bench failed: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    if not targets or any(t not in TARGETS for t in targets) or len(set(targets)) != len(targets):
        parser.error(f"--target: one or more of {', '.join(TARGETS)}, comma-separated")
    needs = ["ip", "nsenter", "taskset"] if "janus" in targets or args.isolated else []
    needs += ["janus"] if "janus" in targets else []
    missing = [tool for tool in needs if shutil.which(tool) is None]
    if missing:
        parser.error(f"not installed: {', '.join(missing)} (janus: apt-get install -y janus)")
    ensure_loopback_namespace()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        print("forwarding bench: fewer than 2 CPUs available, not pinning", file=sys.stderr)
        args.pin = False
    if args.pin and not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        args.pin = False
    return asyncio.run(_main_async(args))


if __name__ == "__main__":
    sys.exit(main())
