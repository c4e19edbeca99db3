"""``parley token`` (mint a join or admin token) and ``parley serve``'s token options.

``parley token --api-key K --api-secret S --room R --identity I`` prints the token on its
last line; the key and secret may come from ``PARLEY_API_KEY`` / ``PARLEY_API_SECRET``.
``parley serve --api-secret S`` makes every join need such a token; without a secret the
server listens only on loopback unless ``--allow-anonymous`` (:func:`exposure_error`).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

# pyjwt is imported when a token is made or checked, not by `parley --help`
if TYPE_CHECKING:
    from signaling.auth import AuthConfig, Grants

GRANT_NAMES = ("can_publish", "can_subscribe", "can_publish_data", "room_admin", "hidden")


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def add_key_arguments(parser: argparse.ArgumentParser) -> None:
    """``--api-key`` and ``--api-secret``, defaulting to ``PARLEY_API_KEY``/``_SECRET``."""
    parser.add_argument(
        "--api-key",
        dest="api_key",
        default=_env("PARLEY_API_KEY"),
        metavar="KEY",
        help="API key: the tokens' issuer (default $PARLEY_API_KEY)",
    )
    parser.add_argument(
        "--api-secret",
        dest="api_secret",
        default=_env("PARLEY_API_SECRET"),
        metavar="SECRET",
        help="API secret the tokens are signed with (default $PARLEY_API_SECRET)",
    )


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """``parley serve``'s options: the API key and secret, ``--allow-anonymous``."""
    group = parser.add_argument_group(
        "tokens", "with an API secret every join needs a token (`parley token` mints one)"
    )
    add_key_arguments(group)  # type: ignore[arg-type]
    group.add_argument(
        "--allow-anonymous",
        dest="allow_anonymous",
        action="store_true",
        default=False,
        help="without an API secret, listen on a non-loopback address anyway: anyone who "
        "reaches the server may join any room",
    )


def auth_config(args: argparse.Namespace) -> AuthConfig:
    from signaling.auth import AuthConfig

    # without a secret the server is on loopback: its admin API answers loopback callers
    return AuthConfig(
        api_key=args.api_key, api_secret=args.api_secret, loopback_admin=not args.api_secret
    )


def _is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches loopback only ("" is every address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:  # it cannot listen there either: `parley serve` says so
        return True
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def exposure_error(host: str, auth: AuthConfig, allow_anonymous: bool) -> str | None:
    """Why ``parley serve`` must not listen on ``host``, or None when it may."""
    if auth.enabled or allow_anonymous or _is_loopback(host):
        return None
    return (
        f"refusing to listen on {host or 'every address'!r} without an API secret: anyone "
        "who reaches it could join any room. Pass --api-secret (or set PARLEY_API_SECRET) "
        "so joins need a token, or --allow-anonymous to run it open anyway."
    )


def grants_from_args(args: argparse.Namespace) -> Grants:
    from signaling.auth import Grants

    if args.grants is not None:
        named = {g.strip() for g in args.grants.split(",") if g.strip()}
        unknown = named - set(GRANT_NAMES)
        if unknown:
            raise ValueError(f"unknown grant(s) {', '.join(sorted(unknown))}")
        grants = Grants(**{name: name in named for name in GRANT_NAMES})
    else:
        grants = Grants()
    changes = {
        name: value
        for name, value in (
            ("can_publish", False if args.no_publish else None),
            ("can_subscribe", False if args.no_subscribe else None),
            ("can_publish_data", False if args.no_data else None),
            ("room_admin", True if args.admin else None),
            ("hidden", True if args.hidden else None),
        )
        if value is not None
    }
    return grants.replace(**changes)


def build_token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley token",
        description="Mint a join token (an HS256 JWT) for `parley serve --api-secret`; it is "
        "printed on the last line.",
    )
    add_key_arguments(parser)
    parser.add_argument(
        "--room", required=True, help="the room it admits ('*': every room, for admin tokens)"
    )
    parser.add_argument("--identity", required=True, help="who joins (the token's sub)")
    parser.add_argument("--name", default="", help="display name (default: the identity)")
    parser.add_argument(
        "--grants",
        default=None,
        metavar="LIST",
        help="comma-separated grants it has, the others off: "
        + ", ".join(GRANT_NAMES)
        + " (default can_publish,can_subscribe,can_publish_data)",
    )
    parser.add_argument("--no-publish", action="store_true", help="without can_publish")
    parser.add_argument("--no-subscribe", action="store_true", help="without can_subscribe")
    parser.add_argument("--no-data", action="store_true", help="without can_publish_data")
    parser.add_argument("--admin", action="store_true", help="with room_admin")
    parser.add_argument("--hidden", action="store_true", help="hidden from the others")
    parser.add_argument(
        "--ttl", default="6h", help="how long it is valid: 90 (s), 30m, 6h, 2d (default 6h)"
    )
    return parser


def main(
    argv: list[str],
    parse: Callable[[argparse.ArgumentParser, list[str]], argparse.Namespace] | None = None,
) -> int:
    """``parse``: how to read the options (``parley.cli`` passes the config-file layer)."""
    from signaling.auth import mint_token, parse_ttl

    parser = build_token_parser()
    args = (parse or argparse.ArgumentParser.parse_args)(parser, argv)
    if not args.api_secret:
        parser.error("an API secret is needed: --api-secret or PARLEY_API_SECRET")
    try:
        ttl = parse_ttl(args.ttl)
        grants = grants_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    token = mint_token(
        args.api_key or "",
        args.api_secret,
        room=args.room,
        identity=args.identity,
        name=args.name,
        grants=grants,
        ttl=ttl,
        now=time.time(),
    )
    granted = ",".join(name for name, on in grants.to_json().items() if on) or "none"
    print(
        f"room {args.room}, identity {args.identity}, grants {granted}, valid {ttl:g} s",
        file=sys.stderr,
    )
    print(token)
    sys.stdout.flush()
    return 0
