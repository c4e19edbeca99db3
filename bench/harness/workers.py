"""The worker processes (``bench/forwarding.py --worker ...``): the server, the
publisher and the subscribers, each driven by JSON-lines commands on stdin."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from harness.clients import Publisher, Subscriber
from harness.common import emit_json, log_stderr


def die_with_parent() -> None:
    """Workers get SIGTERM when the orchestrator dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def pin_to_cpu(cpu: int | None) -> None:
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _worker_loop(handle: Callable[[dict[str, Any]], Any]) -> None:
    reader = await _stdin_lines()
    while True:
        line = await reader.readline()
        if not line:
            return  # the orchestrator is gone
        command = json.loads(line)
        if command.get("cmd") == "quit":
            emit_json({"id": command.get("id"), "ok": True})
            return
        reply = handle(command)
        if asyncio.iscoroutine(reply):
            reply = await reply
        emit_json({"id": command.get("id"), **(reply or {})})


async def run_publisher(args: argparse.Namespace) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        publisher = Publisher(args)
        try:
            await publisher.start(session)

            def handle(command: dict[str, Any]) -> dict[str, Any]:
                if command["cmd"] == "rate":
                    publisher.set_rate(command["pps"])
                return {
                    "index": publisher.index,
                    "pps": publisher.pps,
                    "send_failures": publisher.send_failures,
                    "skipped": publisher.skipped,
                    "tx_errors": publisher.port.tx_errors,
                }

            await _worker_loop(handle)
        except Exception as exc:
            emit_json(
                {"event": "error", "who": "publisher", "message": f"{type(exc).__name__}: {exc}"}
            )
            raise
        finally:
            await publisher.close()


async def run_subscribers(args: argparse.Namespace) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        subs = [Subscriber(f"{args.name_prefix}-{i}", args) for i in range(args.count)]
        try:
            for sub in subs:
                await sub.signaling.connect(session)
            emit_json({"event": "joined", "count": len(subs)})

            def handle(command: dict[str, Any]) -> dict[str, Any]:
                if command["cmd"] == "count":
                    start, end = command["start"], command["end"]
                    return {
                        "counts": {s.name: s.count(start, end) for s in subs},
                        "loss_runs": {s.name: s.loss_runs(start, end) for s in subs},
                        "received": {s.name: s.received for s in subs},
                        "rx_errors": {s.name: s.port.rx_errors if s.port else 0 for s in subs},
                        "fast_path": {s.name: bool(s.port and s.port.fast_path) for s in subs},
                    }
                return {}

            await _worker_loop(handle)
        except Exception as exc:
            emit_json(
                {
                    "event": "error",
                    "who": args.name_prefix,
                    "message": f"{type(exc).__name__}: {exc}",
                }
            )
            raise
        finally:
            for sub in subs:
                await sub.close()


def _log_gc_pauses(threshold: float = 0.005) -> None:
    """Diagnostics: print garbage-collector pauses longer than ``threshold`` seconds."""
    import gc

    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause = time.perf_counter() - started[0]
            if pause >= threshold:
                log_stderr(f"server gc gen{info.get('generation')} pause {pause * 1000:.1f} ms")

    gc.callbacks.append(callback)


def run_server(args: argparse.Namespace) -> None:
    import logging

    from aiohttp import web

    from sfu.config import IceConfig, SfuConfig
    from signaling.server import ServerConfig, create_app

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = ServerConfig(sfu=SfuConfig(ice=IceConfig(addresses=(args.ice_address,))))
    if args.gc_log:
        _log_gc_pauses()
    web.run_app(
        create_app(config, freeze_gc=True), host=args.ice_address, port=args.port, print=None
    )


def worker_main(args: argparse.Namespace) -> int:
    die_with_parent()
    pin_to_cpu(args.cpu)
    if args.worker == "server":
        run_server(args)
        return 0
    import logging

    logging.basicConfig(level=logging.ERROR)
    runner = run_publisher if args.worker == "publisher" else run_subscribers
    try:
        asyncio.run(runner(args))
    except Exception as exc:
        log_stderr(f"{args.worker} failed: {type(exc).__name__}: {exc}")
        return 1
    return 0
