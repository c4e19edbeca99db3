"""What a bot is told to do (:class:`BotConfig`, the options of ``parley bot``)."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.bot.verdict import (
    MAX_FREEZE_MS,
    MAX_LOSS_PCT,
)

#: A track must have been published this long (s) before the end to count for ``ok``.
DEFAULT_GRACE = 3.0
#: Gaps between decoded video frames at least this long (s) are kept (``TrackStats.gaps``).
GAP_RECORD_S = 0.2


# ---------------------------------------------------------------------- config


@dataclass(slots=True)
class BotConfig:
    url: str
    room: str
    name: str
    duration: float = 10.0
    json_path: str | None = None
    publish: bool = True
    ice_address: str = "127.0.0.1"
    token: str | None = None
    join_timeout: float = 10.0
    #: Seconds between two receive-statistics samples.
    stats_interval: float = 1.0
    grace: float = DEFAULT_GRACE
    #: How long to wait for ``left`` after sending ``leave``.
    leave_timeout: float = 1.0
    #: Publish video as three VP8 simulcast encodings (q/h/f), like Chromium.
    simulcast: bool = False
    #: The published video's codec: "vp8" or "h264" (``loadgen/bot/codecs.py``).
    codec: str = "vp8"
    #: Ask the server for at most this height of every remote video track (``set_layer``).
    max_height: int | None = None
    #: Amplitude of the published tone, 0 (silence) to 1.
    volume: float = 0.25
    #: Opus bitrate of the published audio (bit/s): a browser's, not aiortc's 96 kbit/s.
    audio_bitrate: int = 32_000
    #: Frame rate of the published video (both paths).
    fps: float = 15.0
    #: Rejoin (with backoff) when the connection drops or the server shuts down.
    reconnect: bool = False
    #: ``ok`` needs no gap longer than this between decoded frames of a video track (ms).
    max_freeze_ms: float = MAX_FREEZE_MS
    #: ``ok`` needs each remote track to lose at most this share of its packets (%).
    max_loss_pct: float = MAX_LOSS_PCT
    #: Keep transport-cc in subscribe answers and send its feedback (the server then
    #: estimates with ``sfu/gcc/``); False: aiortc's answer, REMB only (``sfu/bwe.py``).
    transport_cc: bool = True
    #: Send a data channel message every this many seconds (None: never); the
    #: ``"parley"`` channel is opened on the publish connection either way
    #: (``loadgen/bot/data.py``).
    data_every: float | None = None
    #: Participant names or ids those messages go to (empty: the whole room).
    data_to: tuple[str, ...] = ()
    #: Bytes of padding in each of those messages.
    data_bytes: int = 0
    #: Other entry URLs of the same cluster (``parley serve --redis``): a join whose
    #: entry cannot be reached goes through the next one (``url`` first).
    fallback_urls: tuple[str, ...] = ()

    @property
    def ws_url(self) -> str:
        return self.url.rstrip("/") + "/ws"


class JoinFailed(Exception):
    """The server refused the join, or it did not answer in time."""
