"""What transport-cc feedback says about one packet the SFU sent (pure data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PacketResult:
    """One packet the SFU sent on a subscriber's transport, as its receiver's transport-cc
    feedback reports it.

    ``seq`` is the transport-wide sequence number unwrapped (it never wraps: 65535 is
    followed by 65536). ``send_time`` is when the SFU sent it (s, the SFU's clock),
    ``size`` its RTP size in bytes. ``arrival`` is when the receiver got it (s, on the
    receiver's clock: only differences between arrivals mean anything), or None when the
    feedback reports it lost.
    """

    seq: int
    send_time: float
    size: int
    arrival: float | None

    @property
    def received(self) -> bool:
        return self.arrival is not None
