"""Webhooks' pure parts: the bounded queue (fake clock), back-off, signing and verifying."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from signaling.webhooks import (
    EventQueue,
    WebhookConfig,
    WebhookError,
    backoff_delay,
    body_digest,
    sign_webhook,
    verify_webhook,
)

KEY, SECRET = "APIkey", "a-secret-of-at-least-32-bytes-long!!"


def test_queue_is_fifo() -> None:
    queue: EventQueue[int] = EventQueue(3)
    for i in range(3):
        assert queue.put(i, now=0.0) == 0
    assert [queue.pop(), queue.pop(), queue.pop(), queue.pop()] == [0, 1, 2, None]
    assert queue.dropped == 0


def test_full_queue_drops_the_oldest_counts_and_reports_once_per_interval() -> None:
    queue: EventQueue[int] = EventQueue(2, log_interval=10.0)
    queue.put(1, 0.0)
    queue.put(2, 0.0)
    assert queue.put(3, 1.0) == 1  # the first drop is reported at once
    assert queue.put(4, 2.0) == 0  # the next ones wait for the interval
    assert queue.put(5, 5.0) == 0
    assert queue.put(6, 11.0) == 3  # drops of 4, 5 and 6 together
    assert queue.dropped == 4
    assert len(queue) == 2
    assert [queue.pop(), queue.pop()] == [5, 6]  # the newest are kept
    assert queue.drops_to_report(100.0) == 0


def test_backoff_doubles_up_to_its_cap() -> None:
    config = WebhookConfig(backoff=0.5, max_backoff=3.0)
    assert [backoff_delay(config, n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_webhooks_need_a_key_and_secret_and_http_urls() -> None:
    with pytest.raises(ValueError, match="API key and secret"):
        WebhookConfig(urls=("http://127.0.0.1:1/hook",))
    with pytest.raises(ValueError, match="http"):
        WebhookConfig(urls=("ftp://x/hook",), api_key=KEY, api_secret=SECRET)
    config = WebhookConfig(urls=("http://x/hook",), api_key=KEY, api_secret=SECRET)
    assert config.urls and SECRET not in repr(config)  # configs get printed and logged


def test_signature_round_trip_and_its_claims() -> None:
    body = json.dumps({"event": "room_started", "id": "EV_1"}).encode()
    header = sign_webhook(body, KEY, SECRET, now=1_700_000_000)
    claims = jwt.decode(header, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["iss"] == KEY and claims["sha256"] == body_digest(body)
    assert claims["exp"] - claims["iat"] == 300
    now_header = sign_webhook(body, KEY, SECRET, now=time.time())
    assert verify_webhook(body, now_header, KEY, SECRET)["event"] == "room_started"
    assert verify_webhook(body, f"Bearer {now_header}", KEY, SECRET)["id"] == "EV_1"


def test_verify_refuses_what_does_not_hold() -> None:
    body = b'{"event":"room_started"}'
    header = sign_webhook(body, KEY, SECRET, time.time())
    with pytest.raises(WebhookError, match="match"):
        verify_webhook(body + b" ", header, KEY, SECRET)  # body changed
    with pytest.raises(WebhookError, match="signature"):
        verify_webhook(body, header, KEY, "another-secret-of-32-bytes-or-more!!")
    with pytest.raises(WebhookError, match="signature"):
        verify_webhook(body, header, "another-key", SECRET)
    with pytest.raises(WebhookError, match="signature"):  # expired long ago
        verify_webhook(body, sign_webhook(body, KEY, SECRET, 1_000_000), KEY, SECRET)
    with pytest.raises(WebhookError, match="Authorization"):
        verify_webhook(body, None, KEY, SECRET)
    unsigned = jwt.encode({"iss": KEY, "sha256": body_digest(body)}, None, algorithm="none")
    with pytest.raises(WebhookError):
        verify_webhook(body, unsigned, KEY, SECRET)
