"""``parley``: the command line (``serve``, ``bot``, ``load``).

It lives above ``signaling`` (the server), ``sfu`` and ``loadgen`` (bots, load) and imports
each only when its command runs. ``parley serve`` runs the server until SIGTERM or Ctrl-C
(SIGINT). Stopping sends every client ``server_shutdown`` and closes its session at once
(:func:`signaling.server.shutdown_sessions`), so the process is gone within about a second
even with clients connected; a second signal during that second stops it without waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from parley.token_cmd import add_auth_arguments, auth_config, exposure_error

# aiohttp, aiortc and the SFU are imported when a command runs, not with this module:
# `parley --help` answers at once, and a Ctrl-C during start-up lands in main()
if TYPE_CHECKING:
    from aiohttp import web

    from sfu.config import IceServer

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Seconds aiohttp waits for request handlers still running at shutdown. Websocket
#: sessions end in Parley's own ``on_shutdown`` hook; this only bounds a stray request.
SHUTDOWN_TIMEOUT = 0.5

#: The subcommands, with the one line ``parley --help`` shows for each.
COMMANDS: dict[str, str] = {
    "serve": "run the server: signaling, SFU and the web page",
    "bot": "a headless participant that publishes and decodes media",
    "load": "many synthetic participants: latency, loss, capacity",
    "token": "mint a join or admin token for a server with an API secret",
    "admin": "the admin API: rooms, participants, remove, mute, close, grants",
}


def _ice_server(text: str) -> IceServer:
    """``stun:host:port`` or ``turn:host:port?transport=udp,user,password``."""
    from sfu.config import IceServer

    parts = text.split(",")
    if len(parts) == 3:
        return IceServer(urls=(parts[0],), username=parts[1], credential=parts[2])
    if len(parts) == 1:
        return IceServer(urls=(parts[0],))
    raise argparse.ArgumentTypeError("expected URL or URL,USERNAME,CREDENTIAL")


def _announce(text: str) -> tuple[str, str]:
    """``PUBLIC`` (for every ICE address) or ``LOCAL=PUBLIC``: IP addresses."""
    import ipaddress

    local, _, public = text.rpartition("=")
    try:
        for address in (public, *([local] if local else [])):
            ipaddress.ip_address(address)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected PUBLIC_IP or LOCAL_IP=PUBLIC_IP: {exc}"
        ) from None
    return (local or "*", public)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, not {port}")
    return port


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def build_main_parser() -> argparse.ArgumentParser:
    """``parley``: lists the subcommands (each parses its own options)."""
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley, a WebRTC selective forwarding unit.",
        epilog="Run `parley COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def build_serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley serve",
        description="Run the Parley server until SIGTERM or Ctrl-C; stopping sends every "
        "client server_shutdown and closes its session.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="HTTP listen address (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="HTTP port (default 8080; 0 picks a free one, printed at start)",
    )
    parser.add_argument(
        "--ice-address",
        action="append",
        default=None,
        help="local address ICE gathers candidates on (repeatable; default 127.0.0.1)",
    )
    parser.add_argument(
        "--ice-announce",
        action="append",
        type=_announce,
        default=None,
        metavar="[LOCAL=]PUBLIC",
        help="behind a 1:1 NAT: announce PUBLIC in host candidates instead of the "
        "--ice-address they are bound on (LOCAL=PUBLIC for one address; repeatable)",
    )
    parser.add_argument(
        "--ice-server",
        action="append",
        type=_ice_server,
        default=None,
        help="STUN/TURN server given to clients; the server's own connections ask STUN "
        "servers but allocate no TURN relay (repeatable; default none)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=_positive_int,
        default=262_144,
        metavar="N",
        help="largest signaling frame accepted, in bytes; a larger one is refused while "
        "it is read and the websocket closed with 1009 (default 262144)",
    )
    parser.add_argument(
        "--data-max-bytes",
        type=_positive_int,
        default=16_384,
        metavar="N",
        help="largest data channel message a participant may send, in bytes; a larger one "
        "is dropped and its sender gets a data_too_large error (default 16384)",
    )
    parser.add_argument(
        "--data-rate",
        type=_positive_int,
        default=50,
        metavar="MSGS",
        help="data channel messages per second a participant may send (burst: twice "
        "that); more are dropped with a data_rate_limited error (default 50)",
    )
    parser.add_argument(
        "--data-bytes-rate",
        type=_positive_int,
        default=262_144,
        metavar="BYTES",
        help="data channel bytes per second a participant may send (burst: twice that; "
        "default 262144)",
    )
    from signaling.limits import add_limit_arguments
    from signaling.origins import add_origin_arguments
    from signaling.webhooks import add_webhook_arguments

    add_limit_arguments(parser)
    add_origin_arguments(parser)
    add_webhook_arguments(parser)
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        metavar="LEVEL",
        help="one of " + ", ".join(LOG_LEVELS) + " (default INFO)",
    )
    add_auth_arguments(parser)
    from signaling.drain import add_drain_arguments
    from signaling.oplog import add_log_arguments

    add_log_arguments(parser)
    add_drain_arguments(parser)

    from cluster.redis_node import add_redis_arguments
    from cluster.spread import add_spread_arguments
    from cluster.workers import add_worker_arguments

    add_worker_arguments(parser)
    add_spread_arguments(parser)
    add_redis_arguments(parser)
    return parser


class ListenError(Exception):
    """The server could not listen where it was asked to; the message says what to do."""


async def _listen(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, list[str]]:
    from aiohttp import web

    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"port {port} is in use; pass --port") from None
        if exc.errno == errno.EACCES:
            raise ListenError(f"no permission to listen on port {port}; pass --port") from None
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(f"cannot listen on {host!r}: {exc.strerror}; pass --host") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    urls = []
    for address in runner.addresses:  # the bound sockets: the real port when --port 0
        host_shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        urls.append(f"http://{host_shown}:{address[1]}")
    return runner, urls


async def _serve(app: web.Application, host: str, port: int, out: Callable[[str], None]) -> None:
    from signaling.drain import drain
    from signaling.server import CONFIG_KEY, SFU_KEY

    runner, urls = await _listen(app, host, port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stop_draining = asyncio.Event()
    main_task = asyncio.current_task()
    assert main_task is not None
    drain_config = app[CONFIG_KEY].drain

    def on_signal(signum: int) -> None:
        if stop.is_set() and drain_config.timeout > 0 and not stop_draining.is_set():
            out(f"{signal.Signals(signum).name}: draining stopped, shutting down")
            stop_draining.set()  # a second signal while draining: stop waiting
            return
        if stop.is_set():  # a second Ctrl-C: stop waiting for the graceful part
            main_task.cancel()
            return
        what = "draining" if drain_config.timeout > 0 else "shutting down"
        out(f"{signal.Signals(signum).name}: {what}")
        stop.set()

    def participants() -> int:
        from cluster.front import is_front, relayed_sessions

        if is_front(app):  # parley serve --workers: the clients it relays
            return relayed_sessions(app)
        return sum(len(room.participants) for room in app[SFU_KEY].rooms.values())

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        out("Parley serving on " + ", ".join(urls) + " (SIGTERM or Ctrl-C stops it)")
        await stop.wait()
        if drain_config.timeout > 0:
            await drain(app, drain_config, participants, stop_draining)
    finally:
        try:
            await runner.cleanup()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


def serve_main(argv: list[str]) -> int:
    from parley.memtrace import install_from_env

    install_from_env(os.environ)  # PARLEY_TRACEMALLOC: bench/memory.py's snapshots
    import sfu.aiortc_adapter  # noqa: F401 (before anything imports aiortc: no PyAV)

    args = parse_command_args(build_serve_parser(), argv, "serve")
    if (refusal := exposure_error(args.host, auth_config(args), args.allow_anonymous)) is not None:
        print(f"parley serve: {refusal}", file=sys.stderr)
        return 2
    from sfu.config import IceConfig, SfuConfig
    from sfu.datachannel import DataLimits
    from signaling.drain import drain_config
    from signaling.limits import with_limits
    from signaling.oplog import configure_logging
    from signaling.origins import with_origins
    from signaling.server import ServerConfig, create_app
    from signaling.webhooks import with_webhooks

    configure_logging(args.log_level, args.log_format)
    ice = IceConfig(
        servers=tuple(args.ice_server or ()),
        addresses=tuple(args.ice_address or ("127.0.0.1",)),
        announced=tuple(args.ice_announce or ()),
    )
    data = DataLimits(
        max_message_bytes=args.data_max_bytes,
        messages_per_second=args.data_rate,
        message_burst=2 * args.data_rate,
        bytes_per_second=args.data_bytes_rate,
        byte_burst=2 * max(args.data_bytes_rate, args.data_max_bytes),
    )
    config = ServerConfig(
        sfu=SfuConfig(ice=ice, data_limits=data),
        max_message_bytes=args.max_message_bytes,
        drain=drain_config(args),
    )
    config = with_limits(config, args)
    config = with_origins(config, args)
    config = with_webhooks(config, args)
    config = dataclasses.replace(config, auth=auth_config(args))
    from cluster.redis_node import redis_arguments_error, setup_redis_node
    from cluster.workers import FRONT_KEY_ENV, worker_argv, worker_count

    # a worker (started by a front, which passes its key) is never a front itself, even
    # when the config file or a PARLEY_* variable says --workers
    front_key = os.environ.get(FRONT_KEY_ENV) or None
    workers = worker_count(args.workers) if front_key is None else None
    if (problem := redis_arguments_error(args)) is not None:
        print(f"parley serve: {problem}", file=sys.stderr)
        return 2
    if workers is not None:  # the front: workers behind one address (cluster/front.py)
        from cluster.front import create_front_app
        from cluster.front_node import setup_front_redis_node

        app = create_front_app(
            config, workers, worker_argv(argv), args.spread_after, args.worker_hang_timeout
        )
        setup_front_redis_node(app, args, workers)  # with --redis: the front is the node
    else:  # one process; behind a front when it passed its key (a worker)
        if args.spread_after is not None and front_key is None:
            print("parley serve: --spread needs --workers", file=sys.stderr)
            return 2
        config = dataclasses.replace(config, front_key=front_key)
        app = create_app(config, freeze_gc=True)
        if front_key is not None:  # a worker: its front may pipe rooms to the others
            from cluster.worker_pipes import add_worker_pipe_routes

            add_worker_pipe_routes(app, front_key, srtp=args.pipe_srtp)
        if front_key is None:  # a worker never registers: its front is the node
            setup_redis_node(app, args)  # with --redis: this process is one node of a cluster
    try:
        asyncio.run(_serve(app, args.host, args.port, lambda s: print(s, flush=True)))
    except ListenError as exc:
        print(f"parley serve: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    return 0


def parse_command_args(
    parser: argparse.ArgumentParser, argv: list[str], command: str
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` under the config file and ``PARLEY_*`` variables
    (``parley/config_file.py``): ``--config``, ``--print-config``, table ``[command]``."""
    from parley.config_file import parse_args

    return parse_args(
        parser, argv, section=command, sections=COMMANDS, other_dests=_all_option_names
    )


def _all_option_names() -> set[str]:
    """Every command's option names: a shared key of the config file must be one of them."""
    from loadgen.bot.cli import build_parser as bot_parser
    from loadgen.load.cli import build_parser as load_parser
    from parley.admin_cmd import build_admin_parser
    from parley.token_cmd import build_token_parser

    names: set[str] = set()
    parsers = (build_serve_parser(), bot_parser(), load_parser())
    for parser in (*parsers, build_token_parser(), build_admin_parser()):
        names.update(a.dest for a in parser._actions if a.option_strings)
    return names


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, Callable[[list[str]], int]] = {
        "serve": serve_main,
        "bot": _bot_main,
        "load": _load_main,
        "token": _token_main,
        "admin": _admin_main,
    }
    parser = build_main_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    if argv[0] in commands:
        try:
            return commands[argv[0]](argv[1:])
        except KeyboardInterrupt:  # Ctrl-C before a command installed its own handling
            return 130
    parser.parse_args(argv)  # --help prints the commands and exits 0; anything else is an error
    parser.error(f"unknown command {argv[0]!r}")


def _bot_main(argv: list[str]) -> int:
    from loadgen.bot import main as bot_main

    return bot_main(argv, lambda parser, args: parse_command_args(parser, args, "bot"))


def _load_main(argv: list[str]) -> int:
    from loadgen.load.cli import main as load_main

    return load_main(argv, lambda parser, args: parse_command_args(parser, args, "load"))


def _token_main(argv: list[str]) -> int:
    from parley.token_cmd import main as token_main

    return token_main(argv, lambda parser, args: parse_command_args(parser, args, "token"))


def _admin_main(argv: list[str]) -> int:
    from parley.admin_cmd import main as admin_main

    return admin_main(argv, lambda parser, args: parse_command_args(parser, args, "admin"))


if __name__ == "__main__":
    sys.exit(main())
