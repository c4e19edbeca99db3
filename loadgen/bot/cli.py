"""``parley bot``: the command line (:func:`main`), behind an impaired link if asked, and
:func:`run_bot` for tests and other programs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadgen.bot.codecs import VIDEO_CODECS
from loadgen.bot.config import BotConfig
from loadgen.bot.participant import Bot, write_summary
from loadgen.bot.verdict import (
    MAX_FREEZE_MS,
    MAX_LOSS_PCT,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ entry points


async def run_bot(config: BotConfig) -> dict[str, Any]:
    """Run one bot to completion and return its summary."""
    bot = Bot(config)
    try:
        return await bot.run()
    finally:
        await bot.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley bot", description="A synthetic participant for load and end-to-end tests."
    )
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--fallback-url",
        action="append",
        default=[],
        metavar="URL",
        help="another entry URL of the same cluster (parley serve --redis), repeatable: a "
        "join whose entry cannot be reached goes through the next one",
    )
    parser.add_argument("--room", required=True, help="room to join (letters, digits, _ . -)")
    parser.add_argument("--name", required=True, help="display name the others see")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="write the summary here")
    parser.add_argument("--no-publish", dest="publish", action="store_false", help="only subscribe")
    parser.add_argument(
        "--ice-address",
        default="127.0.0.1",
        help="local address ICE gathers host candidates on (default 127.0.0.1)",
    )
    parser.add_argument("--token", default=None, help="join token, if the server wants one")
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the websocket and for joined (default 10)",
    )
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="when the connection drops or the server shuts down, rejoin the room with "
        "backoff (0.3 s doubling to 2 s, with jitter) until the duration ends",
    )
    parser.add_argument(
        "--max-freeze-ms",
        type=float,
        default=MAX_FREEZE_MS,
        metavar="MS",
        help="ok needs no video freeze (gap between decoded frames) longer than this "
        f"(default {MAX_FREEZE_MS:g})",
    )
    parser.add_argument(
        "--max-loss",
        type=float,
        default=MAX_LOSS_PCT,
        metavar="PCT",
        help=f"ok needs every remote track to lose at most PCT %% of its packets "
        f"(default {MAX_LOSS_PCT:g})",
    )
    parser.add_argument(
        "--simulcast",
        action="store_true",
        help="publish video as three VP8 encodings q/h/f (320x180, 640x360, 1280x720)",
    )
    parser.add_argument(
        "--codec",
        choices=sorted(VIDEO_CODECS),
        default="vp8",
        help="codec of the published video: vp8 (default) or h264 (libx264, "
        "packetization-mode 1); not with --simulcast, which is VP8",
    )
    parser.add_argument(
        "--max-height",
        type=int,
        default=None,
        metavar="H",
        help="ask the server for at most H pixels of height of every remote video track",
    )
    parser.add_argument(
        "--fps", type=float, default=15.0, help="frame rate of the published video (default 15)"
    )
    parser.add_argument(
        "--volume",
        type=float,
        default=0.25,
        help="amplitude of the published tone, 0 (silent) to 1 (default 0.25)",
    )
    parser.add_argument(
        "--audio-bitrate",
        type=int,
        default=32_000,
        help="Opus bitrate of the published audio, bit/s (default 32000, as a browser; "
        "aiortc's own is 96000)",
    )
    parser.add_argument(
        "--no-transport-cc",
        dest="transport_cc",
        action="store_false",
        help="answer subscribe offers as aiortc does, without transport-cc feedback: the "
        "server estimates this bot's downlink from REMB only (default: keep transport-cc "
        "and send its feedback every 100 ms)",
    )
    parser.add_argument(
        "--data-every",
        type=float,
        default=None,
        metavar="S",
        help="send a message on the data channel every S seconds (JSON with seq, name and "
        "--data-bytes of padding); the summary's 'data' counts what was sent and received",
    )
    parser.add_argument(
        "--data-to",
        action="append",
        default=[],
        metavar="NAME",
        help="send those messages only to this participant (name or id; repeatable; "
        "default: the whole room)",
    )
    parser.add_argument(
        "--data-bytes", type=int, default=0, metavar="N", help="padding per message (default 0)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (default: warnings only)"
    )
    link = parser.add_argument_group(
        "impaired link",
        "run the bot in a network namespace of its own behind a veth pair (10.99.N.2; the "
        "server is reached at 10.99.N.1 on the URL's port, and must gather ICE there: "
        "parley serve --host 0.0.0.0 --allow-anonymous --ice-address 127.0.0.1 "
        "--ice-address 10.99.N.1). "
        "Needs CAP_NET_ADMIN: root, or scripts/in_netns.py.",
    )
    link.add_argument("--link", type=int, default=None, metavar="N", help="link number 0-255")
    link.add_argument(
        "--link-rate", type=int, default=None, metavar="KBIT", help="server to bot (tbf)"
    )
    link.add_argument(
        "--link-loss", type=float, default=0.0, metavar="PCT", help="server to bot, random %%"
    )
    link.add_argument(
        "--uplink-rate", type=int, default=None, metavar="KBIT", help="bot to server (tbf)"
    )
    link.add_argument(
        "--uplink-loss", type=float, default=0.0, metavar="PCT", help="bot to server, random %%"
    )
    return parser


_LINK_OPTIONS = ("--link", "--link-rate", "--link-loss", "--uplink-rate", "--uplink-loss")


def _without_link_options(argv: list[str]) -> list[str]:
    """``argv`` less the impaired-link options and their values."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _LINK_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in _LINK_OPTIONS)):
            out.append(arg)
    return out


def run_behind_link(args: argparse.Namespace, argv: list[str]) -> int:
    """Make impaired link ``args.link``, run this bot inside its namespace, remove it.

    The summary gets a ``link`` key: the addresses and both directions' impairment."""
    from urllib.parse import urlsplit

    from loadgen.impair.link import ImpairedLink, LinkError, Shape

    index = args.link or 0
    url = urlsplit(args.url)
    if url.port is None:
        print("parley bot: --link needs a URL with a port", file=sys.stderr)
        return 2
    down = Shape(args.link_rate, args.link_loss / 100)
    up = Shape(args.uplink_rate, args.uplink_loss / 100)
    link = ImpairedLink(index)
    try:
        link.start()
        link.shape(down=down, up=up)
    except (LinkError, OSError, ValueError) as exc:
        link.close()
        print(
            "parley bot: an impaired link needs CAP_NET_ADMIN (a network namespace, a veth "
            f"pair, tc and iptables): run as root or under scripts/in_netns.py. ({exc})",
            file=sys.stderr,
        )
        return 2
    try:
        child = [
            *link.command([sys.executable, "-m", "parley", "bot"]),
            *_without_link_options(argv),
            "--url", f"{url.scheme}://{link.host_address}:{url.port}",
            "--ice-address", link.peer_address,
        ]  # fmt: skip
        code = subprocess.run(child, check=False).returncode
    except KeyboardInterrupt:
        code = 130
    finally:
        link.close()
    if args.json_path and Path(args.json_path).exists():
        summary = json.loads(Path(args.json_path).read_text())
        summary["link"] = {
            "index": index,
            "server_address": link.host_address,
            "bot_address": link.peer_address,
            "down": {"rate_kbit": down.rate_kbit, "loss_pct": args.link_loss},
            "up": {"rate_kbit": up.rate_kbit, "loss_pct": args.uplink_loss},
        }
        write_summary(args.json_path, summary)
    return code


#: Parses a command's arguments (``parley/cli.py`` passes its config-file layer).
ParseArgs = Callable[[argparse.ArgumentParser, list[str]], argparse.Namespace]


def main(argv: list[str] | None = None, parse: ParseArgs | None = None) -> int:
    """``parley bot``: exit code 0 when the summary is ``ok``, 1 otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    args = (parse or argparse.ArgumentParser.parse_args)(build_parser(), argv)
    if args.duration < 0:
        build_parser().error("--duration must not be negative")
    if args.max_height is not None and args.max_height <= 0:
        build_parser().error("--max-height must be positive")
    if args.fps <= 0:
        build_parser().error("--fps must be positive")
    if not 0.0 <= args.volume <= 1.0:
        build_parser().error("--volume must be within [0, 1]")
    if not 6_000 <= args.audio_bitrate <= 510_000:
        build_parser().error("--audio-bitrate must be within [6000, 510000] (Opus)")
    if args.max_freeze_ms <= 0:
        build_parser().error("--max-freeze-ms must be positive")
    if not 0.0 <= args.max_loss <= 100.0:
        build_parser().error("--max-loss must be within [0, 100]")
    linked = args.link is not None or any(
        v for v in (args.link_rate, args.link_loss, args.uplink_rate, args.uplink_loss)
    )
    if linked:
        if args.link is not None and not 0 <= args.link <= 255:
            build_parser().error("--link must be within 0-255")
        if not (0 <= args.link_loss < 100 and 0 <= args.uplink_loss < 100):
            build_parser().error("--link-loss and --uplink-loss must be within [0, 100)")
        if any(r is not None and r <= 0 for r in (args.link_rate, args.uplink_rate)):
            build_parser().error("--link-rate and --uplink-rate must be positive")
        return run_behind_link(args, list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.simulcast and args.codec != "vp8":
        build_parser().error("--simulcast publishes VP8: it takes no --codec h264")
    config = BotConfig(
        url=args.url,
        room=args.room,
        name=args.name,
        duration=args.duration,
        json_path=args.json_path,
        publish=args.publish,
        ice_address=args.ice_address,
        token=args.token,
        join_timeout=args.join_timeout,
        simulcast=args.simulcast,
        codec=args.codec,
        max_height=args.max_height,
        fps=args.fps,
        volume=args.volume,
        audio_bitrate=args.audio_bitrate,
        reconnect=args.reconnect,
        max_freeze_ms=args.max_freeze_ms,
        max_loss_pct=args.max_loss,
        transport_cc=args.transport_cc,
        data_every=args.data_every,
        data_to=tuple(args.data_to),
        data_bytes=args.data_bytes,
        fallback_urls=tuple(args.fallback_url),
    )
    summary = asyncio.run(run_bot(config))
    if not args.json_path:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    print(f"parley bot {args.name}: {summary['verdict']}", file=sys.stderr)
    return 0 if summary["ok"] else 1
