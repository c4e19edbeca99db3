"""Three bots in one room on loopback: does anyone lose video with no network cause?

Each run starts a Parley server (in this process, so the subscribers' estimators can be
sampled every 0.25 s) and three ``parley bot`` processes (320x240, 15 fps, no
simulcast) in one room for ``--duration`` seconds. Scenarios:

* ``plain``: nothing else happens. Nobody may be paused.
* ``stalled``: the third bot's process is stopped (SIGSTOP) for 300 ms every second
  from 3 s after it started until 2 s before it leaves, so its receiver reports and
  REMB arrive late and bunched. The other two must keep all their video; the stalled
  one may degrade briefly, and must recover.

Per receiver and publisher: ``layer`` messages with ``paused: true``, the decoded frame
rate over the run (full seconds from one second after the first frame to the last full
second, as a fraction of the publisher's 15 fps), and the longest freeze; per
subscriber, from the server: the lowest REMB, the lowest cap of the estimate and the
acknowledged (delivered) rate. Tests and the server run in a loopback-only network
namespace: the script re-executes itself under ``scripts/in_netns.py``.

    .venv/bin/python bench/three_bots.py [--runs 10] [--duration 60] [--only plain,stalled]
                                         [--cpus 0] [--burn 0.6] [--remb]

``--cpus 0`` pins the server and the bots to one core: a busy machine on demand;
``--burn 0.6`` adds a process on that core busy 300 ms of every 500 ms. The bots
send transport-cc feedback (the server's send-side estimator, ``sfu/gcc/``); ``--remb``
makes them answer as plain aiortc (``--no-transport-cc``: the REMB estimator).

It prints one line per run and receiver and a summary, and writes
``bench/results/three_bots.json``. See ``docs/congestion.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadgen.netns import ensure_loopback_namespace  # noqa: E402

FPS = 15.0
NAMES = ("ann", "bob", "cy")
STALL_ON = 0.3
STALL_PERIOD = 1.0


def reexec_in_netns() -> None:
    """Run again inside a fresh loopback-only namespace unless already there."""
    ensure_loopback_namespace(who="three_bots")


async def stall(proc: asyncio.subprocess.Process, start: float, stop: float) -> int:
    """SIGSTOP ``proc`` for STALL_ON s every STALL_PERIOD s between ``start`` and ``stop``
    (seconds from now); returns how many times it was stopped."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.sleep(start)
    stops = 0
    try:
        while loop.time() - t0 < stop and proc.returncode is None:
            proc.send_signal(signal.SIGSTOP)
            stops += 1
            try:
                await asyncio.sleep(STALL_ON)
            finally:
                proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(STALL_PERIOD - STALL_ON)
    except ProcessLookupError:
        pass
    return stops


def sample(
    sfu: Any,
    room: str,
    now: float,
    t: float,
    samples: dict[str, list[list[float | None]]],
    events: dict[str, list[list[Any]]],
) -> None:
    """One row per subscriber at ``t`` s into the run (``now`` on the loop's clock):
    (t, remb, cap, acknowledged bit/s, sent bit/s, loss, share acknowledged); and the
    estimator's cap changes (t, reason, cap)."""
    r = sfu.rooms.get(room)
    if r is None:
        return
    for p in r.participants.values():
        bwe = p.bwe
        acked = bwe.acked(now)
        row = [round(t, 2), p.remb_bitrate, bwe.cap, round(bwe.sent)]
        if acked is None:
            row[3:3] = [None]
            row += [None, None]
        else:
            share = acked.acked_share
            row[3:3] = [round(acked.rate)]
            row += [round(acked.loss, 3), None if share is None else round(share, 3)]
        samples.setdefault(p.name, []).append(row)
        events[p.name] = [[round(at - now + t, 2), why, cap] for at, why, cap in bwe.events]


def track_figures(summary: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for t in summary["tracks"]:
        if t["kind"] != "video":
            continue
        fps = t["frames_per_second"]
        first = t["first_frame_ms"]
        start = int((first or 0) / 1000) + 1
        end = len(fps) - 1  # the last second is partial (the others are leaving)
        seconds = max(0, end - start)
        rate = sum(fps[start:end]) / seconds if seconds > 0 else 0.0
        paused = [
            e["t_ms"]
            for e in summary["events"]
            if e["type"] == "layer" and e.get("track") == t["track"] and e.get("paused")
        ]
        out.append(
            {
                "receiver": summary["name"],
                "publisher": names.get(t["participant"], t["participant"]),
                "frames_decoded": t["frames_decoded"],
                "fps": round(rate, 2),
                "fps_ratio": round(rate / FPS, 3),
                "max_freeze_ms": t["max_freeze_ms"],
                "paused_at_ms": paused,
                "packets_lost": t["packets_lost"],
            }
        )
    return out


async def one_run(
    scenario: str, duration: float, index: int, tmp: Path, remb: bool = False
) -> dict[str, Any]:
    from aiohttp import web

    from signaling.server import SFU_KEY, ServerConfig, create_app

    app = create_app(ServerConfig())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    room = f"{scenario}{index}"
    loop = asyncio.get_running_loop()
    samples: dict[str, list[list[float | None]]] = {}
    events: dict[str, list[list[Any]]] = {}
    procs = []
    paths = []
    try:
        for name in NAMES:
            path = tmp / f"{room}-{name}.json"
            paths.append(path)
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "parley", "bot", "--url", url, "--room", room,
                    "--name", name, "--duration", str(duration), "--json", str(path),
                    *(["--no-transport-cc"] if remb else []), cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )
            )  # fmt: skip
        stalls = None
        if scenario == "stalled":
            stalls = asyncio.ensure_future(stall(procs[2], 3.0, duration - 1.0))
        t0 = loop.time()
        sfu = app[SFU_KEY]
        while any(p.returncode is None for p in procs):
            sample(sfu, room, loop.time(), loop.time() - t0, samples, events)
            waits = [asyncio.ensure_future(p.wait()) for p in procs if p.returncode is None]
            await asyncio.wait(waits, timeout=0.25)
            for w in waits:
                w.cancel()
        stopped = await stalls if stalls is not None else 0
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                await p.wait()
        await runner.cleanup()
    summaries = [json.loads(p.read_text()) for p in paths if p.exists()]
    names = {s["id"]: s["name"] for s in summaries}
    tracks = [row for s in summaries for row in track_figures(s, names)]
    estimator = {}
    for name, rows in samples.items():
        rembs = [r[1] for r in rows if r[1] is not None]
        caps = [r[2] for r in rows if r[2] is not None]
        acks = [r[3] for r in rows if r[3] is not None]
        estimator[name] = {
            "min_remb": min(rembs, default=None),
            "min_cap": min(caps, default=None),
            "capped_s": round(0.25 * len(caps), 2),
            "median_acked": sorted(acks)[len(acks) // 2] if acks else None,
            "cap_changes": events.get(name, []),
        }
    return {
        "scenario": scenario,
        "run": index,
        "duration_s": duration,
        "bots": len(summaries),
        "exit_codes": [p.returncode for p in procs],
        "stops": stopped,
        "tracks": tracks,
        "estimator": estimator,
        "samples": samples,
    }


def verdict(run: dict[str, Any]) -> dict[str, Any]:
    """Whether the run was good: every receiver (the stalled one excepted in ``stalled``)
    unpaused, >= 90 % of the frame rate, no freeze over 1 s."""
    stalled = NAMES[2] if run["scenario"] == "stalled" else None
    failed = []
    if run["bots"] != len(NAMES):
        failed.append("a bot wrote no summary")
    for t in run["tracks"]:
        if t["receiver"] == stalled:
            continue
        who = f"{t['publisher']}->{t['receiver']}"
        if t["paused_at_ms"]:
            failed.append(f"{who} paused")
        if t["fps_ratio"] < 0.9:
            failed.append(f"{who} {t['fps']} fps")
        if (t["max_freeze_ms"] or 0) > 1000:
            failed.append(f"{who} froze {t['max_freeze_ms']} ms")
    return {"ok": not failed, "failed": failed}


async def main_async(args: argparse.Namespace) -> int:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.only.split(","):
            for i in range(args.runs):
                started = time.monotonic()
                run = await one_run(scenario, args.duration, i, Path(tmp), args.remb)
                run["wall_s"] = round(time.monotonic() - started, 1)
                run["verdict"] = verdict(run)
                results.append(run)
                print(f"{scenario} run {i}: {'ok' if run['verdict']['ok'] else 'FAILED'} "
                      f"{run['verdict']['failed']}", flush=True)  # fmt: skip
                for t in run["tracks"]:
                    est = run["estimator"].get(t["receiver"], {})
                    print(
                        f"  {t['publisher']:>4} -> {t['receiver']:<4} fps {t['fps']:5.2f} "
                        f"({100 * t['fps_ratio']:5.1f} %) freeze {t['max_freeze_ms']} ms "
                        f"paused {len(t['paused_at_ms'])}x lost {t['packets_lost']} | "
                        f"min remb {est.get('min_remb')} min cap {est.get('min_cap')} "
                        f"capped {est.get('capped_s')} s acked~{est.get('median_acked')}",
                        flush=True,
                    )
    summary: dict[str, Any] = {}
    for scenario in args.only.split(","):
        runs = [r for r in results if r["scenario"] == scenario]
        stalled = NAMES[2] if scenario == "stalled" else None
        clean = [t for r in runs for t in r["tracks"] if t["receiver"] != stalled]
        starved = [t for r in runs for t in r["tracks"] if t["receiver"] == stalled]
        summary[scenario] = {
            "runs": len(runs),
            "runs_ok": sum(r["verdict"]["ok"] for r in runs),
            "clean_receivers": {
                "paused": sum(bool(t["paused_at_ms"]) for t in clean),
                "min_fps_ratio": min((t["fps_ratio"] for t in clean), default=None),
                "max_freeze_ms": max((t["max_freeze_ms"] or 0 for t in clean), default=None),
            },
            "stalled_receiver": {
                "paused": sum(bool(t["paused_at_ms"]) for t in starved),
                "min_fps_ratio": min((t["fps_ratio"] for t in starved), default=None),
                "max_freeze_ms": max((t["max_freeze_ms"] or 0 for t in starved), default=None),
            }
            if starved
            else None,
        }
    print(json.dumps(summary, indent=1))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in results:
        if not args.keep_samples:
            r.pop("samples", None)
    setup = {
        "runs": args.runs,
        "duration_s": args.duration,
        "cpus": args.cpus,
        "burn": args.burn,
        "estimator": "remb" if args.remb else "transport-cc",
        "cores": os.cpu_count(),
        "loadavg_end": list(os.getloadavg()),
    }
    out.write_text(
        json.dumps({"setup": setup, "summary": summary, "runs": results}, indent=1) + "\n"
    )
    print(f"written {out}")
    return 0 if all(r["verdict"]["ok"] for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run (default 60)")
    parser.add_argument(
        "--only", default="plain,stalled", help="scenarios, comma-separated (plain,stalled)"
    )
    parser.add_argument(
        "--json",
        default=str(REPO / "bench" / "results" / "three_bots.json"),
        help="where to write the results (default bench/results/three_bots.json)",
    )
    parser.add_argument(
        "--cpus",
        default=None,
        help="run the server and the bots on these CPUs only, e.g. 0 (a busy machine: "
        "three bots and the server sharing one core)",
    )
    parser.add_argument(
        "--remb",
        action="store_true",
        help="bots answer without transport-cc (--no-transport-cc): the REMB estimator",
    )
    parser.add_argument(
        "--keep-samples",
        action="store_true",
        help="keep the estimator's samples (every 0.25 s) in the JSON",
    )
    parser.add_argument(
        "--burn",
        type=float,
        default=0.0,
        help="also run a process on the same CPUs that burns this share of each 0.5 s "
        "(e.g. 0.6: busy 300 ms, idle 200 ms): a machine busy with other work",
    )
    args = parser.parse_args()
    reexec_in_netns()
    if args.cpus is not None:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})  # bots inherit it
    burner = _start_burner(args.burn) if args.burn > 0 else None
    try:
        return asyncio.run(main_async(args))
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()


def _start_burner(share: float) -> subprocess.Popen[bytes]:
    """A process that keeps a CPU busy ``share`` of every 0.5 s (inherits the affinity)."""
    busy, idle = 0.5 * share, 0.5 * (1 - share)
    code = (
        "import time\n"
        "while True:\n"
        "    t = time.monotonic()\n"
        f"    while time.monotonic() - t < {busy}: pass\n"
        f"    time.sleep({idle})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


if __name__ == "__main__":
    raise SystemExit(main())
