"""Embedding Parley in your own aiohttp application.

Your application keeps its own routes; Parley's signaling (``/parley/ws``),
health check and page are mounted beside them with :func:`setup_parley`, and an
authorisation callback decides who may join which room. ``parley serve`` is built
on the same ``setup_parley`` call.

Run it:  python examples/embed_app.py   (http://127.0.0.1:8081/parley: loopback only, and
not ``make serve``'s 8080)
Join with a bot:  parley bot --url http://127.0.0.1:8081/parley --room demo --name me --token letmein

Stopping it (Ctrl-C, SIGTERM) sends every client ``server_shutdown`` and ends its session
at once: ``setup_parley`` registers that ``on_shutdown`` hook.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from sfu.config import IceConfig, SfuConfig
from signaling.server import JoinRequest, ServerConfig, setup_parley

TOKENS_KEY = web.AppKey("tokens", dict)


def make_authorize(app: web.Application) -> ServerConfig:
    async def authorize(join: JoinRequest) -> str | None:
        """Return None to admit the join, or a reason the user will see."""
        rooms_for_token: dict[str, set[str]] = app[TOKENS_KEY]
        if join.token is None:
            return "a token is required to join"
        rooms = rooms_for_token.get(join.token)
        if rooms is None:
            return "unknown token"
        if "*" not in rooms and join.room not in rooms:
            return f"this token does not admit you to room {join.room!r}"
        return None

    return ServerConfig(sfu=SfuConfig(ice=IceConfig(addresses=("127.0.0.1",))), authorize=authorize)


async def home(request: web.Request) -> web.Response:
    return web.Response(text="My application. Parley lives under /parley/.\n")


def create_embedding_app(tokens: dict[str, set[str]]) -> web.Application:
    app = web.Application()
    app[TOKENS_KEY] = tokens
    app.router.add_get("/", home)
    setup_parley(app, make_authorize(app), prefix="/parley")
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host", default="127.0.0.1", help="listen address (default 127.0.0.1, loopback only)"
    )
    parser.add_argument("--port", type=int, default=8081, help="HTTP port (default 8081)")
    args = parser.parse_args()
    app = create_embedding_app({"letmein": {"*"}, "demo-only": {"demo"}})
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
