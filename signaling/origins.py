"""Which web pages may open Parley's websocket: the ``Origin`` allow-list.

A browser sends the page's origin with every websocket handshake; a page elsewhere must
not drive a user's browser into a call on this server (cross-site websocket hijacking).
By default the allowed origin is the server's own: ``http://`` or ``https://`` with the
``Host`` the request came to (so the page Parley serves, directly or behind a TLS
reverse proxy that keeps the ``Host`` header). ``--allowed-origin`` replaces that with an
explicit list (``*`` allows any). A handshake without an ``Origin`` header (bots, native
clients, ``parley load``) is allowed: only browsers send one, and they always do.
A refused handshake is answered ``403 Forbidden`` before the upgrade.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .server import ServerConfig

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    #: origins allowed (``scheme://host[:port]``; ``*`` for any); empty: the server's own
    allowed: tuple[str, ...] = ()


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, without a default port; None if not one."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if not scheme or not host or parts.path not in ("", "/") or parts.query:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def origin_refusal(origin: str | None, host: str | None, policy: OriginPolicy) -> str | None:
    """Why a handshake from ``origin`` to ``host`` (the ``Host`` header) is refused, or None."""
    if origin is None:
        return None
    if "*" in policy.allowed:
        return None
    seen = normalize_origin(origin)
    if policy.allowed:
        allowed = {normalize_origin(o) for o in policy.allowed}
    else:
        allowed = {normalize_origin(f"{s}://{host}") for s in ("http", "https")} if host else set()
    if seen is not None and seen in allowed:
        return None
    return (
        f"websocket from origin {origin!r} refused: it is not on this server's allow-list "
        "(parley serve --allowed-origin)"
    )


def add_origin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="a web origin (scheme://host[:port]) whose pages may open the websocket; "
        "repeatable, '*' for any (default: the server's own origin; clients that send no "
        "Origin, like bots, are always allowed)",
    )


def with_origins(config: ServerConfig, args: argparse.Namespace) -> ServerConfig:
    allowed = tuple(args.allowed_origins or ())
    for origin in allowed:
        if origin != "*" and normalize_origin(origin) is None:
            raise SystemExit(
                f"parley serve: --allowed-origin {origin!r} is not scheme://host[:port]"
            )
    return dataclasses.replace(config, origins=OriginPolicy(allowed=allowed))
