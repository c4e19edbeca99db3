"""``parley admin``: the admin API (``signaling/admin.py``) from the command line.

``parley admin --url URL [--token T | --api-key K --api-secret S] ACTION ...`` prints the
server's JSON answer. With a key and secret it mints a one-minute admin token for every
room (the secret itself never goes over the wire); with ``--token`` it sends that token
(one with ``room_admin``). Exit status 1 when the server refuses, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from parley.token_cmd import GRANT_NAMES, add_key_arguments

#: how long (s) the admin token minted for one command is valid
ADMIN_TOKEN_TTL = 60.0


def build_admin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley admin",
        description="Operate a running server through its admin API; prints JSON.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the server's base URL")
    parser.add_argument("--token", default=None, help="a token with room_admin")
    add_key_arguments(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("rooms", help="list rooms")
    one = actions.add_parser("participants", help="a room's participants, tracks, layers")
    one.add_argument("room")
    remove = actions.add_parser("remove", help="remove a participant from its room")
    remove.add_argument("room")
    remove.add_argument("participant", help="participant id or token identity")
    for name, what in (("mute", "stop forwarding"), ("unmute", "resume forwarding")):
        action = actions.add_parser(name, help=f"{what} a published track")
        action.add_argument("room")
        action.add_argument("participant")
        action.add_argument("track", help="track id or mid")
    close = actions.add_parser("close", help="close a room: every participant leaves")
    close.add_argument("room")
    grants = actions.add_parser("grants", help="change a participant's grants")
    grants.add_argument("room")
    grants.add_argument("participant")
    grants.add_argument(
        "changes", nargs="+", metavar="GRANT=true|false", help="of " + ", ".join(GRANT_NAMES)
    )
    return parser


def _changes(items: list[str]) -> dict[str, bool]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in GRANT_NAMES or value.lower() not in ("true", "false"):
            raise ValueError(f"expected GRANT=true|false with GRANT one of {GRANT_NAMES}: {item}")
        out[name] = value.lower() == "true"
    return out


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, object] | None]:
    """The HTTP method, path and JSON body of the action."""
    quote = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
    if args.action == "rooms":
        return "GET", "/admin/rooms", None
    room = "/admin/rooms/" + quote(args.room)
    if args.action == "participants":
        return "GET", room, None
    if args.action == "close":
        return "DELETE", room, None
    pid = f"{room}/participants/{quote(args.participant)}"
    if args.action == "remove":
        return "DELETE", pid, None
    if args.action in ("mute", "unmute"):
        return "POST", f"{pid}/tracks/{quote(args.track)}/{args.action}", None
    return "POST", pid + "/grants", dict(_changes(args.changes))


def _credential(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if args.api_secret:
        from signaling.auth import ANY_ROOM, Grants, mint_token

        return mint_token(
            args.api_key or "",
            args.api_secret,
            room=ANY_ROOM,
            identity="parley-admin",
            grants=Grants(room_admin=True),
            ttl=ADMIN_TOKEN_TTL,
            now=time.time(),
        )
    return None  # a server without a secret answers loopback callers


def main(
    argv: list[str],
    parse: Callable[[argparse.ArgumentParser, list[str]], argparse.Namespace] | None = None,
) -> int:
    """``parse``: how to read the options (``parley.cli`` passes the config-file layer)."""
    parser = build_admin_parser()
    args = (parse or argparse.ArgumentParser.parse_args)(parser, argv)
    try:
        method, path, body = _request(args)
    except ValueError as exc:
        parser.error(str(exc))
    headers = {"Accept": "application/json"}
    credential = _credential(args)
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        args.url.rstrip("/") + path, data=data, method=method, headers=headers
    )
    status = 0
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        text, status = exc.read().decode(), 1
    except OSError as exc:
        print(f"parley admin: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(json.loads(text), indent=1))
    except ValueError:
        print(text)
    return status
