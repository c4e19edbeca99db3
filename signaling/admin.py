"""The admin API: HTTP + JSON under ``{prefix}/admin/`` for the operator.

Every request carries ``Authorization: Bearer <credential>``: the API secret (every
room), or a token with the ``room_admin`` grant (its room only; ``room: "*"`` for
every room). Without a configured secret the API answers nobody, except callers on
loopback when ``AuthConfig.loopback_admin`` (``parley serve`` without a secret, which
listens on loopback unless ``--allow-anonymous``).

=======  ===========================================================  ======================
GET      ``/admin/rooms``                                             rooms and their counts
GET      ``/admin/rooms/{room}``                                      participants, tracks,
                                                                      layers, estimates
DELETE   ``/admin/rooms/{room}``                                      close the room
DELETE   ``/admin/rooms/{room}/participants/{pid}``                   remove a participant
POST     ``/admin/rooms/{room}/participants/{pid}/tracks/{t}/mute``   stop forwarding a track
POST     ``/admin/rooms/{room}/participants/{pid}/tracks/{t}/unmute`` forward it again
POST     ``/admin/rooms/{room}/participants/{pid}/grants``            change grants (JSON
                                                                      object of booleans)
=======  ===========================================================  ======================

``{pid}`` is a participant id or its token identity; ``{t}`` a track id or its mid.
Errors answer ``{"error": <code>, "message": <text>}`` with 401 (``unauthorized``),
403 (``not_allowed``), 404 (``not_found``) or 400 (``invalid_field``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from sfu.participant import Participant, PublishedTrack
from sfu.room import Room, Sfu

from . import messages as m
from .auth import NOT_ALLOWED, Claims, Grants, admin_claims, bearer
from .server import CONFIG_KEY, SFU_KEY, Session, apply_grants, is_hidden, session_of

#: the reason a removed participant's ``left`` message gives
REMOVED_REASON = "removed by the server's operator"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _fail(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    body = json.dumps({"error": code, "message": message})
    return status(text=body, content_type="application/json")


def _is_loopback(request: web.Request) -> bool:
    peer = request.remote
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def _caller(request: web.Request) -> Claims:
    """The caller's admin claims; raises 401 when it has none."""
    auth = request.app[CONFIG_KEY].auth
    now = time.time()
    if not auth.enabled:
        if auth.loopback_admin and _is_loopback(request):
            return Claims("", "", "*", now, Grants(room_admin=True))
        raise _fail(web.HTTPUnauthorized, "unauthorized", "set an API secret to use the admin API")
    credential = bearer(request.headers.get("Authorization"))
    claims = admin_claims(credential, auth, now=now) if credential else None
    if claims is None:
        raise _fail(
            web.HTTPUnauthorized,
            "unauthorized",
            "needs Authorization: Bearer <API secret or token with room_admin>",
        )
    return claims


def _room(request: web.Request) -> Room:
    name = request.match_info["room"]
    if not _caller(request).admits(name):
        raise _fail(web.HTTPForbidden, NOT_ALLOWED, f"the token does not admit room {name!r}")
    room = request.app[SFU_KEY].rooms.get(name)
    if room is None:
        raise _fail(web.HTTPNotFound, "not_found", f"no room {name!r}")
    return room


def _participant(request: web.Request) -> Participant:
    room = _room(request)
    pid = request.match_info["pid"]
    found = room.participants.get(pid)
    if found is None:
        by_identity = [p for p in room.participants.values() if p.identity == pid]
        found = by_identity[0] if len(by_identity) == 1 else None
    if found is None or found.closed:
        raise _fail(web.HTTPNotFound, "not_found", f"no participant {pid!r} in {room.id!r}")
    return found


def _track(request: web.Request, participant: Participant) -> PublishedTrack:
    key = request.match_info["track"]
    for track in participant.tracks.values():
        if key in (track.id, track.mid):
            return track
    raise _fail(web.HTTPNotFound, "not_found", f"{participant.id} publishes no track {key!r}")


# ------------------------------------------------------------------ views


def _track_json(track: PublishedTrack) -> dict[str, object]:
    return {
        "id": track.id,
        "kind": track.kind,
        "mid": track.mid,
        "layers": list(track.rids) if track.rids else None,
        "muted": track.muted,
    }


def participant_json(p: Participant, now: float) -> dict[str, object]:
    session = session_of(p)
    subscriptions = []
    for track_id, sub in p.subscriptions.items():
        current = sub.forwarder.current
        subscriptions.append(
            {
                "track": track_id,
                "publisher": sub.publisher.id,
                "kind": sub.track.kind,
                "layer": None
                if current is None
                else {"rid": current.rid, "width": current.width, "height": current.height},
                "paused": current is None,
                "temporal": sub.forwarder.temporal_layer if current is not None else None,
            }
        )
    estimate = p.bwe.estimate(now)
    return {
        "id": p.id,
        "identity": p.identity,
        "name": p.name,
        "hidden": is_hidden(p),
        "grants": session.grants.to_json() if session is not None else None,
        "address": p.remote_address,
        "tracks": [_track_json(t) for t in p.tracks.values()],
        "subscriptions": subscriptions,
        "estimate_bps": round(estimate) if estimate is not None else None,
        "remb_bps": p.remb_bitrate,
        "egress_bps": round(p.egress_bitrate),
    }


def room_json(room: Room) -> dict[str, object]:
    participants = list(room.participants.values())
    return {
        "room": room.id,
        "participants": len(participants),
        "published_tracks": sum(len(p.tracks) for p in participants),
    }


# ------------------------------------------------------------------ handlers


async def list_rooms(request: web.Request) -> web.Response:
    caller = _caller(request)
    sfu: Sfu = request.app[SFU_KEY]
    rooms = [room_json(r) for r in sfu.rooms.values() if caller.admits(r.id)]
    return web.json_response({"rooms": rooms})


async def show_room(request: web.Request) -> web.Response:
    room = _room(request)
    now = asyncio.get_running_loop().time()  # the participants' clock
    people = [participant_json(p, now) for p in room.participants.values() if not p.closed]
    return web.json_response({**room_json(room), "participants": people})


async def close_room(request: web.Request) -> web.Response:
    room = _room(request)
    count = len(room.participants)
    for p in room.participants.values():
        if (session := session_of(p)) is not None:
            session.final = True
    await room.close()
    return web.json_response({"room": room.id, "closed": True, "removed": count})


async def remove_participant(request: web.Request) -> web.Response:
    participant = _participant(request)
    if (session := session_of(participant)) is not None:
        session.final = True
    await participant.close(REMOVED_REASON)
    return web.json_response({"id": participant.id, "removed": True})


def _mute_handler(muted: bool) -> Handler:
    async def mute(request: web.Request) -> web.Response:
        participant = _participant(request)
        track = _track(request, participant)
        set_muted(participant, track, muted)
        return web.json_response(
            {"participant": participant.id, "track": track.id, "muted": track.muted}
        )

    return mute


def set_muted(publisher: Participant, track: PublishedTrack, muted: bool) -> None:
    """Stop (or resume) forwarding ``track`` to everyone, and tell the room."""
    if track.muted == muted:
        return
    track.muted = muted
    now = asyncio.get_running_loop().time()  # the participants' clock
    message = m.TrackMuted(participant=publisher.id, track=track.id, muted=muted)
    for p in list(publisher.room.participants.values()):
        if p.closed:
            continue
        if p is not publisher:
            p.update_layers(now)
        session = session_of(p)
        if session is not None:
            session.send(message)


async def update_grants(request: web.Request) -> web.Response:
    participant = _participant(request)
    session = session_of(participant)
    if session is None:
        raise _fail(web.HTTPNotFound, "not_found", "participant has no signaling session")
    try:
        changes = await request.json()
        grants = Grants.from_json({**session.grants.to_json(), **changes})
    except (ValueError, TypeError) as exc:
        raise _fail(web.HTTPBadRequest, "invalid_field", f"grants: {exc}") from None
    change_grants(participant, session, grants)
    return web.json_response({"id": participant.id, "grants": grants.to_json()})


def change_grants(participant: Participant, session: Session, grants: Grants) -> None:
    """Apply new grants to a participant in its room now.

    Losing the right to publish (or becoming hidden) unpublishes its tracks; becoming
    hidden tells the others it left, becoming visible that it joined.
    """
    was_hidden = session.grants.hidden
    others = [p for p in participant.room.participants.values() if p is not participant]
    if grants.hidden and not was_hidden:  # told while it is still visible
        for other in others:
            other.listener.participant_left(participant)
    session.grants = grants
    if not grants.may_publish:
        for track in list(participant.tracks.values()):
            participant.publish_side.remove_track(track)
            session.track_unpublished(participant, track)
    if was_hidden and not grants.hidden:
        for other in others:
            other.listener.participant_joined(participant)
    apply_grants(participant, grants)


def add_admin_routes(app: web.Application, prefix: str = "") -> None:
    base = f"{prefix}/admin/rooms"
    pid = base + "/{room}/participants/{pid}"
    app.router.add_get(base, list_rooms)
    app.router.add_get(base + "/{room}", show_room)
    app.router.add_delete(base + "/{room}", close_room)
    app.router.add_delete(pid, remove_participant)
    app.router.add_post(pid + "/tracks/{track}/mute", _mute_handler(True))
    app.router.add_post(pid + "/tracks/{track}/unmute", _mute_handler(False))
    app.router.add_post(pid + "/grants", update_grants)
