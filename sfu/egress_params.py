"""What a subscriber's m-line negotiated, as its forwarder writes packets for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EgressParams:
    """What the subscriber's m-line negotiated."""

    mid: str
    payload_type: int
    ssrc: int
    rtx_payload_type: int | None
    rtx_ssrc: int | None
    extensions: dict[str, int]
