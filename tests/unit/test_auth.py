"""Join tokens (``signaling/auth.py``): minting, verifying, the refusal codes, ``--ttl``."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from signaling.auth import (
    AuthConfig,
    Grants,
    TokenError,
    admin_claims,
    bearer,
    may_see_load,
    mint_token,
    parse_ttl,
    verify_token,
)

KEY, SECRET = "key1", "a-secret-long-enough-for-hs256-and-hs512-0123456789-0123456789-xyz"
AUTH = AuthConfig(api_key=KEY, api_secret=SECRET)
NOW = 1_800_000_000.0


def mint(**kw: object) -> str:
    args: dict[str, object] = {"room": "r1", "identity": "ada", "name": "Ada", "now": NOW}
    args.update(kw)
    return mint_token(KEY, SECRET, **args)  # type: ignore[arg-type]


def code_of(token: str | None, *, now: float = NOW, room: str | None = "r1") -> str:
    with pytest.raises(TokenError) as caught:
        verify_token(token, AUTH, now=now, room=room)
    return caught.value.code


def test_a_minted_token_has_the_shared_claims_layout() -> None:
    token = mint(grants=Grants(can_publish=False, hidden=True), ttl=600)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}  # no kid
    claims = jwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False}
    )
    assert claims == {
        "iss": KEY,
        "sub": "ada",
        "name": "Ada",
        "room": "r1",
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
        "grants": {
            "can_publish": False,
            "can_subscribe": True,
            "can_publish_data": True,
            "room_admin": False,
            "hidden": True,
        },
    }


def test_verify_returns_identity_name_room_and_grants() -> None:
    claims = verify_token(mint(grants=Grants(can_subscribe=False)), AUTH, now=NOW + 10, room="r1")
    assert (claims.identity, claims.display_name, claims.room) == ("ada", "Ada", "r1")
    assert claims.grants == Grants(can_subscribe=False)
    assert claims.expires == NOW + 6 * 3600
    assert verify_token(mint(name=""), AUTH, now=NOW).display_name == "ada"


def test_refusals_have_their_codes() -> None:
    assert code_of(None) == "token_required"
    assert code_of("") == "token_required"
    assert code_of("not a token") == "token_invalid"
    assert code_of("a.b.c") == "token_invalid"
    assert code_of(mint_token(KEY, "another-secret-of-enough-length-0123456789", room="r1",
                              identity="ada", now=NOW)) == "token_invalid"  # fmt: skip
    assert code_of(mint_token("other-key", SECRET, room="r1", identity="ada", now=NOW)) == (
        "token_invalid"
    )
    assert code_of(mint(ttl=60), now=NOW + 120) == "token_expired"
    assert code_of(mint(), now=NOW - 60) == "token_expired"  # before nbf
    assert code_of(mint(room="r2")) == "token_wrong_room"


def test_unsigned_and_other_algorithms_are_invalid() -> None:
    payload = jwt.decode(
        mint(), SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False}
    )
    assert code_of(jwt.encode(payload, None, algorithm="none")) == "token_invalid"
    assert code_of(jwt.encode(payload, SECRET, algorithm="HS512")) == "token_invalid"
    # the HS256 header with the signature cut off
    head, body, _ = mint().split(".")
    assert code_of(f"{head}.{body}.") == "token_invalid"
    # a payload changed after signing (room r2 -> r1 with r2's signature)
    head, _, sig = mint(room="r2").split(".")
    forged = base64.urlsafe_b64encode(json.dumps({**payload}).encode()).rstrip(b"=").decode()
    assert code_of(f"{head}.{forged}.{sig}") == "token_invalid"


def test_malformed_claims_are_invalid() -> None:
    base = {"iss": KEY, "sub": "ada", "room": "r1", "exp": NOW + 60}
    for broken in (
        {k: v for k, v in base.items() if k != "sub"},
        {k: v for k, v in base.items() if k != "room"},
        {k: v for k, v in base.items() if k != "exp"},
        {**base, "grants": {"can_publish": "yes"}},
        {**base, "grants": {"fly": True}},
        {**base, "grants": []},
    ):
        assert code_of(jwt.encode(broken, SECRET, algorithm="HS256")) == "token_invalid", broken
    # grants absent: the defaults (publish, subscribe, data; not admin, not hidden)
    token = jwt.encode(base, SECRET, algorithm="HS256")
    assert verify_token(token, AUTH, now=NOW, room="r1").grants == Grants()


def test_wildcard_room_admits_every_room() -> None:
    token = mint(room="*")
    assert verify_token(token, AUTH, now=NOW, room="anything").room == "*"


def test_hidden_may_not_publish_media_or_data() -> None:
    hidden = Grants(hidden=True)
    assert not hidden.may_publish and not hidden.may_publish_data
    assert Grants().may_publish and Grants().may_publish_data


def test_admin_credentials() -> None:
    assert admin_claims(SECRET, AUTH, now=NOW) is not None
    assert admin_claims(SECRET + "x", AUTH, now=NOW) is None
    assert admin_claims(mint(), AUTH, now=NOW) is None  # no room_admin
    claims = admin_claims(mint(grants=Grants(room_admin=True)), AUTH, now=NOW)
    assert claims is not None and claims.admits("r1") and not claims.admits("r2")
    assert bearer("Bearer abc") == "abc" and bearer("Basic abc") is None and bearer(None) is None


def test_healthz_load_needs_the_operator_only_with_a_secret() -> None:
    assert may_see_load(AuthConfig(), None, now=NOW)
    assert not may_see_load(AUTH, None, now=NOW)
    assert not may_see_load(AUTH, f"Bearer {mint()}", now=NOW)
    assert may_see_load(AUTH, f"Bearer {SECRET}", now=NOW)
    assert may_see_load(AUTH, f"Bearer {mint(grants=Grants(room_admin=True))}", now=NOW)


def test_parse_ttl() -> None:
    assert parse_ttl("90") == 90
    assert parse_ttl("30m") == 1800
    assert parse_ttl("6h") == 21600
    assert parse_ttl("2d") == 172800
    for bad in ("", "0", "h", "-5m", "6w"):
        with pytest.raises(ValueError):
            parse_ttl(bad)


def test_parley_load_mints_a_token_per_bot() -> None:
    from loadgen.load.bots import BotSpec
    from loadgen.load.config import LoadConfig
    from loadgen.load.run import LoadRun

    spec = BotSpec(role="subscriber", room="room-3", name="sub-7", index=7, start_at=0.0)
    run = LoadRun(LoadConfig(url="http://127.0.0.1:1", api_key=KEY, api_secret=SECRET))
    minted = run._token(spec)
    claims = verify_token(minted, AUTH, now=time.time(), room="room-3")
    assert claims.identity == "sub-7" and claims.grants == Grants()
    assert run._config_json()["api_secret"] == "(set)"  # reports carry no credentials
    assert LoadRun(LoadConfig(url="x", token="given"))._token(spec) == "given"
    assert LoadRun(LoadConfig(url="x"))._token(spec) is None
