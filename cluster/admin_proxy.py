"""The admin API (``signaling/admin.py``) at the front of ``parley serve --workers``.

The caller is checked here as a worker would (the API secret or a ``room_admin`` token
admitting the room; without a secret, only a caller on loopback): a worker sees every
request from the front as coming from loopback. ``GET /admin/rooms`` lists the rooms of
every worker (each with ``worker`` and ``workers``); a request about a room on one worker
goes to it, with the caller's ``Authorization``, and its answer comes back unchanged.

A room spread over several workers (``--spread``) is asked of every worker holding part
of it: each lists its own clients and, as remote publishers, the publishers of the
others (no signaling session: ``grants`` null). The front merges the lists by
participant id, keeping the entry of the worker where the participant is connected
(``worker``); a request about one participant (remove, mute, grants) goes to that
worker (a mute reaches the other workers' copies down the pipe, a removal's ``leave``
too); closing the room closes its part on every worker.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from signaling.auth import NOT_ALLOWED, AuthConfig, admin_claims, bearer

from .placement import Target, http_base

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


Shown = tuple[str, dict[str, Any]]


async def _call(
    front: Front, request: web.Request, target: Target, method: str, path: str, body: bytes
) -> tuple[int, bytes, str]:
    """``method path`` at ``target`` with the caller's credentials: status, body, type."""
    assert front.http is not None
    headers = _headers(request)
    if body:
        headers["Content-Type"] = request.headers.get("Content-Type", "application/json")
    async with front.http.request(
        method, http_base(target.ws_url) + path, data=body or None, headers=headers,
        timeout=TIMEOUT,
    ) as response:  # fmt: skip
        text = await response.read()
        return response.status, text, response.headers.get("Content-Type", "application/json")


async def _shows(front: Front, request: web.Request, room: str) -> list[Shown]:
    """``GET /admin/rooms/{room}`` of every worker of the room that answers 200."""
    path = f"/admin/rooms/{quote(room, safe='')}"

    async def one(target: Target) -> Shown | None:
        try:
            status, text, _ = await _call(front, request, target, "GET", path, b"")
            return (target.node_id, json.loads(text)) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    answers = await asyncio.gather(*(one(t) for t in front.placement.workers_of(room)))
    return [a for a in answers if a is not None]


def merge_room(room: str, shows: list[Shown]) -> dict[str, Any]:
    """One view of a room from its workers' views: each participant once, from the
    worker it is connected to (its entry there has ``grants``; a remote publisher's
    copy on another worker has none), with ``worker``."""
    people: dict[str, dict[str, Any]] = {}
    for node_id, body in shows:
        for person in body.get("participants", []):
            entry = {**person, "worker": node_id if person.get("grants") is not None else None}
            known = people.get(person["id"])
            if known is None or (known["worker"] is None and entry["worker"] is not None):
                people[person["id"]] = entry
    merged = list(people.values())
    return {
        "room": room,
        "participants": merged,
        "published_tracks": sum(len(p.get("tracks", [])) for p in merged),
        "workers": [node_id for node_id, _ in shows],
    }


def _home(shows: list[Shown], key: str) -> str | None:
    """The worker a participant (its id, or an identity only one has) is connected to."""
    merged = merge_room("", shows)["participants"]
    found = [p for p in merged if p["id"] == key] or [p for p in merged if p.get("identity") == key]
    return found[0]["worker"] if len(found) == 1 else None


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
    by_room: dict[str, list[dict[str, Any]]] = {}
    for answer in answers:
        for room in answer if isinstance(answer, list) else []:
            by_room.setdefault(room["room"], []).append(room)
    rooms = []
    for name, parts in by_room.items():
        if len(parts) == 1:
            rooms.append({**parts[0], "workers": [parts[0]["worker"]]})
            continue
        merged = merge_room(name, await _shows(front, request, name))  # spread: counted once
        owner = front.placement.owner(name)
        rooms.append({"room": name, "participants": len(merged["participants"]),
                      "published_tracks": merged["published_tracks"],
                      "worker": owner.node_id if owner is not None else parts[0]["worker"],
                      "workers": [p["worker"] for p in parts]})  # fmt: skip
    return web.json_response({"rooms": rooms})


async def room_request(request: web.Request, front: Front) -> web.Response:
    """Anything under ``/admin/rooms/{room}``: to the room's worker, or its workers."""
    if (refusal := admin_refusal(request, front.config.auth)) is not None:
        return refusal
    room = request.match_info["room"]
    workers = front.placement.workers_of(room)
    if not workers:
        return _fail(404, "not_found", f"no room {room!r}")
    body = await request.read()
    target = workers[0]
    try:
        if len(workers) > 1:  # spread over several workers
            shows = await _shows(front, request, room)
            if not shows:
                return _fail(404, "not_found", f"no room {room!r}")
            pid = request.match_info.get("rest", "").partition("participants/")[2].split("/")[0]
            if pid:
                home = _home(shows, pid)  # match_info is decoded already
                if home is None:
                    return _fail(404, "not_found", f"no participant {pid!r} in {room!r}")
                target = next(t for t in workers if t.node_id == home)
            elif request.method == "GET":
                return web.json_response(merge_room(room, shows))
            elif request.method == "DELETE":
                count = len(merge_room(room, shows)["participants"])
                path = request.rel_url.path_qs
                await asyncio.gather(
                    *(_call(front, request, t, "DELETE", path, b"") for t in workers),
                    return_exceptions=True,
                )
                return web.json_response({"room": room, "closed": True, "removed": count})
        status, text, kind = await _call(
            front, request, target, request.method, request.rel_url.path_qs, body
        )
        return web.Response(status=status, body=text, headers={"Content-Type": kind})
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
