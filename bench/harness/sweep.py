"""Fan-out runs and the saturation sweep (``--sweep``)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from harness.measure import measure, start_scenario, wait_for_quiet
from harness.processes import isolated
from harness.report import print_step


def server_mode(args: argparse.Namespace, target: str) -> str:
    if isolated(args, target):
        return "isolated: own network namespace, veth 10.77.0.1 <-> 10.77.0.2"
    return "loopback: same namespace as the clients, 127.0.0.1"


def fanout_pps(args: argparse.Namespace, fanout: int) -> float:
    """The publisher rate for ``fanout``: ``--pps``, capped by ``--max-forwarded-pps`` / K."""
    pps = float(args.pps)
    if args.max_forwarded_pps > 0:
        pps = min(pps, args.max_forwarded_pps / fanout)
    return round(pps)


async def run_fanout(
    args: argparse.Namespace, fanout: int, target: str = "parley"
) -> dict[str, Any]:
    """Measure ``--repeat`` windows; keep the one least disturbed by other load."""
    pps = fanout_pps(args, fanout)
    scenario = await start_scenario(args, fanout, pps, target)
    try:
        await asyncio.sleep(args.warmup)
        windows = []
        for _ in range(max(1, args.repeat)):
            await wait_for_quiet(args, scenario)
            windows.append(await measure(args, scenario, args.window))
        result = dict(min(windows, key=lambda w: w["foreign_load_pct"]["total"]))
        result["target_pps"] = pps
        result["server_mode"] = server_mode(args, target)
        result["srtp_profile_publisher"] = scenario.publish_info.get("srtp_profile")
        result["srtp_profiles_subscribers"] = sorted(
            {str(p) for p in scenario.sub_profiles.values()}
        )
        result["payload_type"] = scenario.publish_info.get("payload_type")
        result["sfu_source_digest"] = scenario.source_digest
        if target != "janus":  # whether the C loop served it (sfu/native.py)
            result["server_stats"] = await server_stats(scenario.url)
        result["windows"] = [
            {
                k: w[k]
                for k in (
                    "in_pps",
                    "forwarded_pps",
                    "sfu_us_per_in",
                    "sfu_us_per_fwd",
                    "sfu_loss_pct",
                    "foreign_load_pct",
                )
            }
            for w in windows
        ]
        return result
    finally:
        await scenario.stop()


async def server_stats(url: str) -> dict[str, Any]:
    """Parley's ``/healthz`` (rooms, forwarders, ``native_forwarding``, ``native_packets``)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(5)) as r:
                return dict(await r.json())
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def run_sweep(
    args: argparse.Namespace, fanout: int, target: str = "parley"
) -> dict[str, Any]:
    """Raise the rate step by step on one running scenario.

    Records the first rate with SFU-caused loss above ``--loss-threshold`` and goes on
    until saturation: loss above ``--sweep-stop-loss`` or the SFU at 97% of its core
    (or the load generator cannot keep up).
    """
    rate = (
        float(args.sweep_start) if args.sweep_start > 0 else max(100.0, round(4000.0 / fanout, -1))
    )
    scenario = await start_scenario(args, fanout, rate, target)
    steps: list[dict[str, Any]] = []
    verdict = "max rate reached"
    try:
        await asyncio.sleep(args.warmup)
        for _ in range(args.sweep_steps):
            await scenario.publisher.request({"cmd": "rate", "pps": rate})
            await asyncio.sleep(args.sweep_settle)
            await wait_for_quiet(args, scenario)
            step = await measure(args, scenario, args.sweep_window)
            step["target_pps"] = rate
            steps.append(step)
            print_step(step)
            loss = step["sfu_loss_pct"] or 0.0
            if loss > args.sweep_stop_loss:
                verdict = f"SFU loss above {args.sweep_stop_loss}%"
                break
            if step["sfu_core_pct"] >= 97.0:
                verdict = "SFU at 97% of its core"
                break
            if step["in_pps"] < 0.95 * rate:
                verdict = "publisher could not keep up"
                break
            if step["saturated_clients"] or step["clients_core_pct"] > 95.0:
                verdict = "client core saturated"
                break
            rate = round(rate * args.sweep_factor, -1)
            if rate > args.sweep_max:
                break
    finally:
        await scenario.stop()

    def clean(step: dict[str, Any]) -> bool:
        return (step["sfu_loss_pct"] or 0.0) <= args.loss_threshold

    first_loss = next((s for s in steps if not clean(s)), None)
    below = steps[: steps.index(first_loss)] if first_loss is not None else steps
    best = max(below, key=lambda s: s["in_pps"]) if below else None
    return {
        "target": target,
        "server_mode": server_mode(args, target),
        "fanout": fanout,
        "loss_threshold_pct": args.loss_threshold,
        "stopped_by": verdict,
        "max_clean_in_pps": best["in_pps"] if best else None,
        "max_clean_forwarded_pps": best["forwarded_pps"] if best else None,
        "max_clean_sfu_core_pct": best["sfu_core_pct"] if best else None,
        "sfu_source_digest": scenario.source_digest,
        "first_loss_in_pps": first_loss["in_pps"] if first_loss else None,
        "first_loss_sfu_core_pct": first_loss["sfu_core_pct"] if first_loss else None,
        "first_loss_pct": first_loss["sfu_loss_pct"] if first_loss else None,
        "first_loss_longest_run": first_loss["longest_loss_run"] if first_loss else None,
        "last_in_pps": steps[-1]["in_pps"] if steps else None,
        "last_forwarded_pps": steps[-1]["forwarded_pps"] if steps else None,
        "last_sfu_core_pct": steps[-1]["sfu_core_pct"] if steps else None,
        "last_loss_pct": steps[-1]["sfu_loss_pct"] if steps else None,
        "steps": steps,
    }
