"""``parley``: the command line (``serve``, ``bot``, ``load``)."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from sfu.config import IceConfig, IceServer, SfuConfig

from .server import ServerConfig, create_app


def _ice_server(text: str) -> IceServer:
    """``stun:host:port`` or ``turn:host:port?transport=udp,user,password``."""
    parts = text.split(",")
    if len(parts) == 3:
        return IceServer(urls=(parts[0],), username=parts[1], credential=parts[2])
    if len(parts) == 1:
        return IceServer(urls=(parts[0],))
    raise argparse.ArgumentTypeError("expected URL or URL,USERNAME,CREDENTIAL")


def serve_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="parley serve", description="Run the Parley server.")
    parser.add_argument(
        "--host", default="127.0.0.1", help="HTTP listen address (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument(
        "--ice-address",
        action="append",
        default=None,
        help="local address ICE gathers candidates on (repeatable; default 127.0.0.1)",
    )
    parser.add_argument(
        "--ice-server",
        action="append",
        type=_ice_server,
        default=None,
        help="STUN/TURN server given to every peer connection (repeatable; default none)",
    )
    parser.add_argument("--max-message-bytes", type=int, default=262_144)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ice = IceConfig(
        servers=tuple(args.ice_server or ()),
        addresses=tuple(args.ice_address or ("127.0.0.1",)),
    )
    config = ServerConfig(sfu=SfuConfig(ice=ice), max_message_bytes=args.max_message_bytes)
    web.run_app(
        create_app(config, freeze_gc=True),
        host=args.host,
        port=args.port,
        print=lambda s: print(s, flush=True),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"serve": serve_main, "bot": _bot_main, "load": _load_main}
    if not argv or argv[0] not in commands:
        print(
            "usage: parley {serve,bot,load} [options]   (parley COMMAND --help for details)",
            file=sys.stderr,
        )
        return 2
    return commands[argv[0]](argv[1:])


def _bot_main(argv: list[str]) -> int:
    from loadgen.bot import main as bot_main

    return bot_main(argv)


def _load_main(argv: list[str]) -> int:
    from loadgen.load_run import main as load_main

    return load_main(argv)


if __name__ == "__main__":
    sys.exit(main())
