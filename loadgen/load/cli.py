"""``parley load``: the command line (:func:`main`): flags, checks, the run, the report files."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadgen.impair.schedule import parse_schedule
from loadgen.load.config import LoadConfig
from loadgen.load.nodes import nodes_table, reconnects_line
from loadgen.load.run import LoadRun, capacity_summary
from loadgen.report.build import summary_table

# ------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley load",
        description="Synthetic participants against a server: latency, join time, loss, "
        "freezes, layer switches and server cost.",
    )
    parser.add_argument("--url", help="server base URL; without it a parley server is started")
    parser.add_argument(
        "--target",
        choices=("parley", "janus"),
        default="parley",
        help="the server's protocol: parley, or janus (VideoRoom over ws://HOST:PORT)",
    )
    parser.add_argument(
        "--rooms", type=int, default=1, help="rooms, each with its own bots (default 1)"
    )
    parser.add_argument("--publishers", type=int, default=1, help="per room (default 1)")
    parser.add_argument("--subscribers", type=int, default=2, help="per room (default 2)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds after the last bot started"
    )
    parser.add_argument("--simulcast", action="store_true", help="publish three VP8 layers")
    parser.add_argument(
        "--ramp",
        type=float,
        default=10.0,
        metavar="PER_SECOND",
        help="bots started per second (default 10)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, metavar="K", help="worker processes (default 1)"
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        metavar="PID",
        help="with --url: the server's process id, to report its CPU and memory "
        "(a server started by parley load is measured without it)",
    )
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the report here")
    parser.add_argument(
        "--html", dest="html_path", metavar="PATH", help="write an HTML report with plots"
    )
    parser.add_argument(
        "--e2e",
        action="store_true",
        help="glass to glass: publishers encode live frames stamped with their capture time, "
        "subscribers decode them and read it back",
    )
    parser.add_argument(
        "--fps", type=float, default=15.0, help="publishers' video frame rate (default 15)"
    )
    parser.add_argument(
        "--ice-address",
        default="127.0.0.1",
        help="local address the bots' ICE gathers candidates on (default 127.0.0.1)",
    )
    parser.add_argument("--cache-dir", default=None, help="where encoded clips are cached")
    parser.add_argument(
        "--find-capacity",
        action="store_true",
        help="add subscribers step by step until the service level breaks",
    )
    parser.add_argument("--step", type=int, default=2, help="subscribers per room added per step")
    parser.add_argument(
        "--step-seconds", type=float, default=10.0, help="measured seconds per step"
    )
    parser.add_argument(
        "--max-subscribers", type=int, default=200, help="per room; the search stops there"
    )
    parser.add_argument(
        "--slo-p99-ms",
        type=float,
        default=50.0,
        help="service level: p99 one-way latency of each kind, ms (default 50)",
    )
    parser.add_argument(
        "--slo-loss-pct",
        type=float,
        default=1.0,
        help="service level: loss of each kind, %% (default 1)",
    )
    parser.add_argument(
        "--slo-freeze-ms",
        type=float,
        default=1000.0,
        help="service level: the longest video freeze, ms (default 1000). The exit code is "
        "0 when the run met its service levels and every bot joined, 1 otherwise",
    )
    parser.add_argument(
        "--no-feedback",
        dest="feedback",
        action="store_false",
        help="subscribers send no receiver reports and no NACKs",
    )
    parser.add_argument(
        "--python-io",
        dest="native_io",
        action="store_false",
        help="subscribers read their sockets in Python (recvfrom, SRTP in Python) instead "
        "of the C reader (recvmmsg, SRTP unprotect in C); for comparisons",
    )
    links = parser.add_argument_group(
        "impaired links",
        "participants in their own network namespace behind a veth pair with a tbf rate "
        "limit and iptables random loss (needs CAP_NET_ADMIN: run under "
        "scripts/in_netns.py); STATE is none, KBIT, P% or KBIT+P%",
    )
    links.add_argument(
        "--impaired-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="per room: N more subscribers, each behind its own link (asking for the top layer)",
    )
    links.add_argument(
        "--impaired-publishers",
        type=int,
        default=0,
        metavar="N",
        help="per room: the first N publishers are each behind their own link",
    )
    links.add_argument(
        "--link-rate", type=int, default=None, metavar="KBIT", help="subscribers' downlink rate"
    )
    links.add_argument(
        "--link-loss", type=float, default=0.0, metavar="PCT", help="subscribers' downlink loss %%"
    )
    links.add_argument(
        "--link-schedule",
        default="",
        metavar="T:STATE,...",
        help='downlink changes, seconds after the last subscriber started (e.g. "8:300,20:none")',
    )
    links.add_argument(
        "--uplink-rate", type=int, default=None, metavar="KBIT", help="publishers' uplink rate"
    )
    links.add_argument(
        "--uplink-loss", type=float, default=0.0, metavar="PCT", help="publishers' uplink loss %%"
    )
    links.add_argument(
        "--uplink-schedule", default="", metavar="T:STATE,...", help="uplink changes"
    )
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="a bot whose websocket drops (its server or node died or drained) rejoins, with a "
        "capped backoff; each rejoin is in the report (bots.list[].reconnects, reconnects)",
    )
    parser.add_argument(
        "--fallback-url",
        action="append",
        default=[],
        metavar="URL",
        help="another entry URL of the same cluster (parley serve --redis), repeatable: "
        "rejoins go through --url and these in turn",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    tokens = parser.add_argument_group("tokens", "for a server started with --api-secret")
    tokens.add_argument("--token", default=None, help="one join token for every bot")
    tokens.add_argument(
        "--api-key",
        default=os.environ.get("PARLEY_API_KEY") or None,
        help="with --api-secret: mint a token per bot (default $PARLEY_API_KEY)",
    )
    tokens.add_argument(
        "--api-secret",
        default=os.environ.get("PARLEY_API_SECRET") or None,
        help="mint a token per bot, its name the identity (default $PARLEY_API_SECRET)",
    )
    return parser


def write_json(path: str, report: dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(target)


def _check_links(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.impaired_subscribers < 0 or args.impaired_publishers < 0:
        parser.error("--impaired-subscribers and --impaired-publishers must be >= 0")
    if args.impaired_publishers > args.publishers:
        parser.error("--impaired-publishers must be at most --publishers")
    for name in ("link_schedule", "uplink_schedule"):
        try:
            parse_schedule(getattr(args, name))
        except ValueError as exc:
            parser.error(f"--{name.replace('_', '-')}: {exc}")
    for name in ("link_loss", "uplink_loss"):
        if not 0.0 <= getattr(args, name) < 100.0:
            parser.error(f"--{name.replace('_', '-')} is a percentage within [0, 100)")
    for name in ("link_rate", "uplink_rate"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.impaired_subscribers or args.impaired_publishers:
        if args.target != "parley":
            parser.error("impaired links work with --target parley only")
        if args.find_capacity:
            parser.error("impaired links and --find-capacity do not mix")


def main(
    argv: list[str] | None = None,
    parse: Callable[[argparse.ArgumentParser, list[str]], argparse.Namespace] | None = None,
) -> int:
    """``parse``: how to parse (``parley/cli.py`` passes its config-file layer)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = (parse or argparse.ArgumentParser.parse_args)(parser, argv)
    for name in ("rooms", "publishers", "processes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.subscribers < 0 or args.duration <= 0 or args.ramp <= 0 or args.fps <= 0:
        parser.error("--subscribers must be >= 0; --duration, --ramp and --fps positive")
    if args.slo_p99_ms <= 0 or args.slo_freeze_ms <= 0 or not 0 <= args.slo_loss_pct <= 100:
        parser.error(
            "--slo-p99-ms and --slo-freeze-ms must be positive, --slo-loss-pct in [0, 100]"
        )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = LoadConfig(
        url=args.url,
        rooms=args.rooms,
        publishers=args.publishers,
        subscribers=args.subscribers,
        duration=args.duration,
        simulcast=args.simulcast,
        ramp=args.ramp,
        processes=args.processes,
        server_pid=args.server_pid,
        json_path=args.json_path,
        html_path=args.html_path,
        fps=args.fps,
        ice_address=args.ice_address,
        cache_dir=args.cache_dir,
        quiet=args.quiet,
        target=args.target,
        e2e=args.e2e,
        find_capacity=args.find_capacity,
        capacity_step=args.step,
        step_seconds=args.step_seconds,
        capacity_limit=args.max_subscribers,
        slo_p99_ms=args.slo_p99_ms,
        slo_loss_pct=args.slo_loss_pct,
        slo_freeze_ms=args.slo_freeze_ms,
        feedback=args.feedback,
        native_io=args.native_io,
        impaired_subscribers=args.impaired_subscribers,
        impaired_publishers=args.impaired_publishers,
        link_rate=args.link_rate,
        link_loss=args.link_loss,
        link_schedule=args.link_schedule,
        uplink_rate=args.uplink_rate,
        uplink_loss=args.uplink_loss,
        uplink_schedule=args.uplink_schedule,
        token=args.token,
        api_key=args.api_key,
        api_secret=args.api_secret,
        reconnect=args.reconnect,
        fallback_urls=tuple(args.fallback_url),
    )
    _check_links(parser, args)
    if args.find_capacity and (
        args.subscribers < 1 or args.step < 1 or args.max_subscribers < args.subscribers
    ):
        parser.error(
            "--find-capacity needs --subscribers >= 1, --step >= 1, --max-subscribers >= --subscribers"
        )
    report = LoadRun(config).run()
    if args.json_path:
        write_json(args.json_path, report)
    if args.html_path:
        from loadgen.report.html import write_html

        write_html(args.html_path, report)
    print(summary_table(report))
    if report.get("nodes"):
        print(nodes_table(report["nodes"]))
    if report.get("reconnects", {}).get("count"):
        print(reconnects_line(report["reconnects"]))
    if "capacity" in report:
        print(capacity_summary(report["capacity"]))
    print(f"parley load: {report['verdict']}", file=sys.stderr)
    return 0 if report["ok"] else 1
