"""The admin API (``signaling/admin.py``) at the front of ``parley serve --workers``.

The caller is checked here as a worker would (the API secret or a ``room_admin`` token
admitting the room; without a secret, only a caller on loopback): a worker sees every
request from the front as coming from loopback. ``GET /admin/rooms`` lists the rooms of
every worker (each with ``worker``); a request about one room goes to its worker, with
the caller's ``Authorization``, and its answer comes back unchanged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from signaling.auth import NOT_ALLOWED, AuthConfig, admin_claims, bearer

from .placement import http_base

if TYPE_CHECKING:
    from .front import Front

TIMEOUT = aiohttp.ClientTimeout(total=5.0)


def _fail(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def admin_refusal(request: web.Request, auth: AuthConfig) -> web.Response | None:
    """Why the caller may not use the admin API (for the room in the path), or None."""
    if not auth.enabled:
        if auth.loopback_admin and _loopback(request.remote):
            return None
        return _fail(401, "unauthorized", "set an API secret to use the admin API")
    credential = bearer(request.headers.get("Authorization"))
    claims = admin_claims(credential, auth, now=time.time()) if credential else None
    if claims is None:
        return _fail(
            401, "unauthorized", "needs Authorization: Bearer <API secret or token with room_admin>"
        )
    room = request.match_info.get("room")
    if room is not None and not claims.admits(room):
        return _fail(403, NOT_ALLOWED, f"the token does not admit room {room!r}")
    return None


def _headers(request: web.Request) -> dict[str, str]:
    auth = request.headers.get("Authorization")
    return {"Authorization": auth} if auth else {}


async def list_rooms(request: web.Request, front: Front) -> web.Response:
    if (refusal := admin_refusal(request, front.config.auth)) is not None:
        return refusal
    assert front.http is not None
    http = front.http

    async def one(node_id: str, base: str) -> list[dict[str, Any]]:
        url = base + "/admin/rooms"
        async with http.get(url, headers=_headers(request), timeout=TIMEOUT) as response:
            body = await response.json()
        return [{**room, "worker": node_id} for room in body.get("rooms", [])]

    live = [(t.node_id, http_base(t.ws_url)) for t in front.placement.live]
    answers = await asyncio.gather(*(one(n, b) for n, b in live), return_exceptions=True)
    rooms = [room for answer in answers if isinstance(answer, list) for room in answer]
    return web.json_response({"rooms": rooms})


async def room_request(request: web.Request, front: Front) -> web.Response:
    """Anything under ``/admin/rooms/{room}``: to the room's worker."""
    if (refusal := admin_refusal(request, front.config.auth)) is not None:
        return refusal
    room = request.match_info["room"]
    owner = front.placement.owner(room)
    if owner is None:
        return _fail(404, "not_found", f"no room {room!r}")
    assert front.http is not None
    url = http_base(owner.ws_url) + request.rel_url.path_qs
    body = await request.read()
    headers = _headers(request)
    if body:
        headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
    try:
        async with front.http.request(
            request.method, url, data=body or None, headers=headers, timeout=TIMEOUT
        ) as response:
            text = await response.read()
            kind = response.headers.get("Content-Type", "application/json")
            return web.Response(status=response.status, body=text, headers={"Content-Type": kind})
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _fail(502, "worker_unavailable", f"the room's worker did not answer: {exc!r}")


def add_admin_proxy_routes(app: web.Application, front: Front) -> None:
    async def rooms(request: web.Request) -> web.Response:
        return await list_rooms(request, front)

    async def one_room(request: web.Request) -> web.Response:
        return await room_request(request, front)

    app.router.add_get("/admin/rooms", rooms)
    app.router.add_route("*", "/admin/rooms/{room}", one_room)
    app.router.add_route("*", "/admin/rooms/{room}/{rest:.*}", one_room)
