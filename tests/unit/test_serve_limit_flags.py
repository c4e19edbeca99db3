"""``parley serve`` flags of limits, origins and webhooks land in ServerConfig."""

from __future__ import annotations

import pytest

from parley.cli import build_serve_parser
from signaling.limits import Limits, with_limits
from signaling.origins import OriginPolicy, with_origins
from signaling.server import ServerConfig
from signaling.webhooks import WebhookConfig, with_webhooks


def _config(*argv: str) -> ServerConfig:
    args = build_serve_parser().parse_args(list(argv))
    return with_webhooks(with_origins(with_limits(ServerConfig(), args), args), args)


def test_defaults() -> None:
    config = _config()
    assert config.limits == Limits()
    assert config.origins == OriginPolicy()
    assert config.webhooks == WebhookConfig()
    assert config.sfu.subscribe_answer_timeout == 20.0


def test_flags() -> None:
    config = _config(
        "--max-participants-per-room", "3", "--max-rooms", "0", "--max-tracks-per-participant",
        "2", "--join-rate", "1.5", "--join-burst", "4", "--message-rate", "0",
        "--message-burst", "7", "--max-refused-messages", "9", "--subscribe-answer-timeout",
        "5", "--allowed-origin", "https://app.example", "--allowed-origin", "http://x:81",
        "--webhook-url", "http://127.0.0.1:9/a", "--webhook-url", "https://hooks.example/b",
        "--api-key", "K", "--api-secret", "S",
    )  # fmt: skip
    assert config.limits == Limits(
        max_participants_per_room=3,
        max_rooms=0,
        max_tracks_per_participant=2,
        join_rate=1.5,
        join_burst=4,
        message_rate=0.0,
        message_burst=7,
        max_refused_messages=9,
    )
    assert config.sfu.subscribe_answer_timeout == 5.0
    assert config.origins.allowed == ("https://app.example", "http://x:81")
    assert config.webhooks.urls == ("http://127.0.0.1:9/a", "https://hooks.example/b")
    assert (config.webhooks.api_key, config.webhooks.api_secret) == ("K", "S")


@pytest.mark.parametrize(
    "argv",
    [
        ("--webhook-url", "http://127.0.0.1:9/a"),
        ("--webhook-url", "http://127.0.0.1:9/a", "--api-key", "K"),
        ("--webhook-url", "ftp://x/a", "--api-key", "K", "--api-secret", "S"),
        ("--allowed-origin", "not an origin"),
    ],
)
def test_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit, match="parley serve"):
        _config(*argv)
