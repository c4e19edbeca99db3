"""Join and admin tokens: HS256 JWTs signed with the server's API secret (``pyjwt``).

A token names who joins (``sub``: identity, ``name``), where (``room``; ``"*"`` for an
admin token valid in every room), until when (``exp``; ``nbf``) and what it may do
(``grants``, like LiveKit's ``VideoGrant``)::

    {"iss": <api key>, "sub": <identity>, "name": <display name>, "room": <room or "*">,
     "exp": <unix s>, "nbf": <unix s>,
     "grants": {"can_publish": bool, "can_subscribe": bool, "can_publish_data": bool,
                "room_admin": bool, "hidden": bool}}

:func:`mint_token` makes one, :func:`verify_token` checks one against ``now`` (passed in)
and raises :class:`TokenError` whose ``code`` is the protocol's error code
(``token_required``, ``token_invalid``, ``token_expired``, ``token_wrong_room``);
``not_allowed`` is the code of an action a grant does not allow (:data:`NOT_ALLOWED`).
Only HS256 is accepted: an unsigned token (``alg: none``) or one signed otherwise is
``token_invalid``.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Final

import jwt

ALGORITHM: Final = "HS256"
#: ``room`` of a token valid in every room (admin tokens)
ANY_ROOM: Final = "*"
#: seconds of clock difference tolerated on ``exp`` and ``nbf``
LEEWAY: Final = 5.0

TOKEN_REQUIRED: Final = "token_required"
TOKEN_INVALID: Final = "token_invalid"
TOKEN_EXPIRED: Final = "token_expired"
TOKEN_WRONG_ROOM: Final = "token_wrong_room"
NOT_ALLOWED: Final = "not_allowed"

#: ``--ttl`` values: seconds, or a number with s, m, h or d
_TTL = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenError(Exception):
    """A token was refused; ``code`` is the protocol error code, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Grants:
    """What a token's holder may do. A grant absent from a token takes these defaults."""

    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    #: use the admin API (for the token's room, or every room with ``room: "*"``)
    room_admin: bool = False
    #: others are not told of this participant; it may not publish media or data
    hidden: bool = False

    @property
    def may_publish(self) -> bool:
        return self.can_publish and not self.hidden

    @property
    def may_publish_data(self) -> bool:
        return self.can_publish_data and not self.hidden

    def to_json(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Grants:
        """Grants from a token's or an admin request's ``grants`` object; ValueError if bad."""
        if not isinstance(data, dict):
            raise ValueError("grants must be an object")
        names = {f.name for f in fields(cls)}
        values: dict[str, bool] = {}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"unknown grant {key!r}")
            if not isinstance(value, bool):
                raise ValueError(f"grant {key!r} must be true or false")
            values[key] = value
        return cls(**values)

    def replace(self, **changes: bool) -> Grants:
        return Grants(**{**asdict(self), **changes})


NO_GRANTS: Final = Grants(
    can_publish=False, can_subscribe=False, can_publish_data=False, room_admin=False
)


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token's content."""

    identity: str
    name: str
    room: str
    expires: float
    grants: Grants = field(default_factory=Grants)
    issuer: str = ""

    @property
    def display_name(self) -> str:
        return self.name or self.identity

    def admits(self, room: str) -> bool:
        return self.room in (room, ANY_ROOM)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``ServerConfig.auth``: the API key and secret (None: no tokens, loopback only)."""

    api_key: str | None = None
    api_secret: str | None = field(default=None, repr=False)
    #: without a secret, answer the admin API for callers on loopback (``parley serve``,
    #: which then listens on loopback only); off for embedders, whose application may
    #: sit behind a reverse proxy on the same host
    loopback_admin: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.api_secret)


def parse_ttl(text: str) -> float:
    """``"6h"``, ``"30m"``, ``"90"`` (seconds) ... -> seconds; ValueError if not one."""
    match = _TTL.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (e.g. 90, 30m, 6h, 2d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def mint_token(
    api_key: str,
    api_secret: str,
    *,
    room: str,
    identity: str,
    name: str = "",
    grants: Grants | None = None,
    ttl: float = 6 * 3600,
    now: float,
) -> str:
    """A token for ``identity`` in ``room`` (``"*"``: any room), valid ``ttl`` s from ``now``."""
    if not api_secret:
        raise ValueError("an API secret is needed to mint a token")
    if not identity:
        raise ValueError("a token needs an identity")
    claims = {
        "iss": api_key,
        "sub": identity,
        "name": name,
        "room": room,
        "nbf": int(now),
        "exp": int(now + ttl),
        "grants": (grants or Grants()).to_json(),
    }
    return jwt.encode(claims, api_secret, algorithm=ALGORITHM)


def verify_token(
    token: str | None,
    config: AuthConfig,
    *,
    now: float,
    room: str | None = None,
) -> Claims:
    """Check ``token``'s signature, key, times and (when given) ``room``; return its claims.

    Raises :class:`TokenError`: ``token_required`` (none given), ``token_invalid`` (not a
    JWT, not HS256 with this secret, wrong issuer, malformed claims), ``token_expired``
    (``exp`` passed, or ``nbf`` not reached), ``token_wrong_room`` (for another room).
    """
    secret = config.api_secret
    if secret is None:
        raise ValueError("no API secret configured")
    if not token:
        raise TokenError(TOKEN_REQUIRED, "this server needs a token: ask its operator for one")
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise TokenError(TOKEN_INVALID, f"token must be signed with {ALGORITHM}")
        data = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            # times are checked below against `now`, not the library's clock
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except TokenError:
        raise
    except jwt.InvalidSignatureError:
        raise TokenError(TOKEN_INVALID, "token signature does not match this server") from None
    except jwt.PyJWTError as exc:
        raise TokenError(TOKEN_INVALID, f"token is not valid: {exc}") from None
    claims = _claims(data)
    if config.api_key and claims.issuer != config.api_key:
        raise TokenError(TOKEN_INVALID, "token was issued for another API key")
    if now > claims.expires + LEEWAY:
        raise TokenError(TOKEN_EXPIRED, "token has expired")
    nbf = data.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and now + LEEWAY < nbf:
        raise TokenError(TOKEN_EXPIRED, "token is not valid yet")
    if room is not None and not claims.admits(room):
        raise TokenError(TOKEN_WRONG_ROOM, f"token is for room {claims.room!r}, not {room!r}")
    return claims


def _claims(data: dict[str, object]) -> Claims:
    identity, name, room, exp = (
        data.get("sub"),
        data.get("name", ""),
        data.get("room"),
        data.get("exp"),
    )
    if not isinstance(identity, str) or not identity:
        raise TokenError(TOKEN_INVALID, "token has no identity (sub)")
    if not isinstance(name, str):
        raise TokenError(TOKEN_INVALID, "token's name must be a string")
    if not isinstance(room, str) or not room:
        raise TokenError(TOKEN_INVALID, "token has no room")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenError(TOKEN_INVALID, "token has no expiry (exp)")
    issuer = data.get("iss", "")
    try:
        grants = Grants.from_json(data.get("grants", {}))
    except ValueError as exc:
        raise TokenError(TOKEN_INVALID, f"token's {exc}") from None
    return Claims(
        identity=identity,
        name=name,
        room=room,
        expires=float(exp),
        grants=grants,
        issuer=issuer if isinstance(issuer, str) else "",
    )


def bearer(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, if one."""
    if header is None:
        return None
    scheme, _, credential = header.partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def is_secret(credential: str, config: AuthConfig) -> bool:
    """Whether ``credential`` is the API secret itself (compared in constant time)."""
    secret = config.api_secret
    return bool(secret) and hmac.compare_digest(credential.encode(), (secret or "").encode())


def admin_claims(credential: str, config: AuthConfig, *, now: float) -> Claims | None:
    """What an admin credential may reach: the secret (every room) or a ``room_admin``
    token; None when it is neither."""
    if is_secret(credential, config):
        return Claims(
            identity="", name="", room=ANY_ROOM, expires=now, grants=Grants(room_admin=True)
        )
    try:
        claims = verify_token(credential, config, now=now)
    except TokenError:
        return None
    return claims if claims.grants.room_admin else None


def may_see_load(config: AuthConfig, authorization: str | None, *, now: float) -> bool:
    """Whether a ``/healthz`` caller gets counts and load: anyone when the server has no
    secret (it is open, on loopback unless told otherwise); else the secret or an admin
    token (of any room)."""
    if not config.enabled:
        return True
    credential = bearer(authorization)
    if credential is None:
        return False
    return admin_claims(credential, config, now=now) is not None
