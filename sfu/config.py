"""Configuration shared by the SFU, the signaling server and the bots."""

from __future__ import annotations

from dataclasses import dataclass, field

from .datachannel import DataLimits


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
    #: Addresses written into host candidates instead of the bound ones, for a server
    #: behind a 1:1 NAT (a cloud VM's public address; mediasoup's ``announcedIp``):
    #: ``(local, public)`` pairs, ``local`` ``"*"`` for every address. Sockets stay
    #: bound on ``addresses``; only what peers are told changes.
    announced: tuple[tuple[str, str], ...] = ()
    #: Gather only relay candidates (TURN; ``iceTransportPolicy: "relay"``): for clients
    #: (bots, tests) that must reach the server through a TURN server, never directly.
    relay_only: bool = False
    #: RFC 7675 consent freshness. A check goes out every ``consent_interval`` seconds
    #: (randomised to 0.8-1.2x, as RFC 7675 asks); consent expires, and the peer
    #: connection closes, when no check has been answered for ``consent_interval x
    #: consent_failures`` seconds. Default 1 s x 6: a frozen or vanished peer is gone
    #: after about 6 s (browsers: about 5 s; aioice's own default is 5 s x 6 = 30 s),
    #: while a stall of up to about 4 s is survived (``sfu/aiortc_adapter/ice.py``).
    consent_interval: float = 1.0
    consent_failures: int = 6

    def announced_address(self, local: str) -> str | None:
        """The address to announce for a host candidate bound on ``local``, if any."""
        for bound, public in self.announced:
            if bound in (local, "*"):
                return public
        return None

    @property
    def consent_timeout(self) -> float:
        """Seconds without an answered consent check after which the peer is gone."""
        return self.consent_interval * self.consent_failures


@dataclass(frozen=True, slots=True)
class SfuConfig:
    ice: IceConfig = field(default_factory=IceConfig)
    #: Upper bound of the bitrate (bps) asked of a publisher's video with REMB.
    max_publish_bitrate: int = 2_500_000
    #: Lower bound of that bitrate (bps).
    min_publish_bitrate: int = 100_000
    #: Minimum interval between two keyframe requests sent to one publisher stream (s).
    keyframe_request_interval: float = 0.5
    #: Packets kept per published stream to answer NACKs: at most this many, and about
    #: ``packet_cache_seconds`` of the stream at its packet rate (``sfu/cache_window.py``).
    packet_cache_size: int = 1024
    packet_cache_seconds: float = 2.0
    #: A client that leaves a subscribe offer unanswered this long (s) is removed.
    subscribe_answer_timeout: float = 20.0
    #: The signaling websocket's heartbeat (s): after this long without a frame from the
    #: client the server pings, and closes the websocket (the participant leaves) when
    #: no pong comes within half of it. 10 s: a pong is awaited for 5 s, about as long
    #: as ICE consent waits (``IceConfig.consent_failures``), so a stall shorter than
    #: that never costs anyone their seat, and a frozen client without media is gone
    #: within 15 s (one with media is gone with its ICE consent, after about 6 s).
    websocket_heartbeat: float = 10.0
    #: Malformed RTP/RTCP from a peer is dropped and counted; at most one log line per
    #: participant per this many seconds says how many and why (``sfu/rtp/malformed.py``).
    malformed_log_interval: float = 10.0
    #: What each participant may send on its data channel (``sfu/datachannel.py``).
    data_limits: DataLimits = field(default_factory=DataLimits)
