"""Configuration shared by the SFU, the signaling server and the bots."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN/TURN server, as the browser's ``RTCIceServer`` describes it."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass(frozen=True, slots=True)
class IceConfig:
    """How every peer connection Parley creates finds its candidates.

    ``servers`` is empty by default: no STUN or TURN server is ever contacted unless
    configured. ``addresses`` are the local addresses ICE gathers host candidates on;
    127.0.0.1 by default, a real interface address in deployment (like Janus's
    ``interface`` or mediasoup's ``listenIps``).
    """

    servers: tuple[IceServer, ...] = ()
    addresses: tuple[str, ...] = ("127.0.0.1",)
    #: RFC 7675 consent checks: seconds between checks, and how many may fail in a row
    #: before the peer is considered gone (default 5 s x 6, as aioice: 30 s of silence).
    consent_interval: float = 5.0
    consent_failures: int = 6


@dataclass(frozen=True, slots=True)
class SfuConfig:
    ice: IceConfig = field(default_factory=IceConfig)
    #: Upper bound of the bitrate (bps) asked of a publisher's video with REMB.
    max_publish_bitrate: int = 2_500_000
    #: Lower bound of that bitrate (bps).
    min_publish_bitrate: int = 100_000
    #: Minimum interval between two keyframe requests sent to one publisher stream (s).
    keyframe_request_interval: float = 0.5
    #: Packets kept per published stream to answer NACKs.
    packet_cache_size: int = 1024
    #: A client that leaves a subscribe offer unanswered this long (s) is removed.
    subscribe_answer_timeout: float = 20.0
