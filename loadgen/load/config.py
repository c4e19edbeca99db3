"""What a ``parley load`` run is told to do (:class:`LoadConfig`, from its flags)."""

from __future__ import annotations

from dataclasses import dataclass

#: Heights subscribers ask for in turn when publishers use simulcast.
LAYER_HEIGHTS = (180, 360, 720)


@dataclass(slots=True)
class LoadConfig:
    url: str | None
    rooms: int = 1
    publishers: int = 1
    subscribers: int = 2
    duration: float = 10.0
    simulcast: bool = False
    ramp: float = 10.0
    processes: int = 1
    server_pid: int | None = None
    json_path: str | None = None
    html_path: str | None = None
    fps: float = 15.0
    clip_seconds: float = 10.0
    ice_address: str = "127.0.0.1"
    cache_dir: str | None = None
    quiet: bool = False
    #: Glass to glass: publishers encode live, subscribers decode (loadgen/load/e2e.py).
    e2e: bool = False
    #: "parley" or "janus" (Janus's VideoRoom; ``url`` is then its websocket, ws://HOST:8188)
    target: str = "parley"
    #: How long to wait for every publisher's media before starting subscribers (s).
    publish_timeout: float = 20.0
    #: --find-capacity: add ``capacity_step`` subscribers per room every step.
    find_capacity: bool = False
    capacity_step: int = 2
    step_seconds: float = 10.0
    capacity_limit: int = 200
    slo_p99_ms: float = 50.0
    slo_loss_pct: float = 1.0
    #: service level: the longest video freeze (ms); with the two above, the exit code
    slo_freeze_ms: float = 1000.0
    #: Subscribers' receiver reports and NACKs (loadgen/load/rtcp.py).
    feedback: bool = True
    #: Subscribers read with the C reader (recvmmsg, SRTP unprotect in C: sfu/_recv.c);
    #: False (``--python-io``): the Python batch reader, as before (for comparisons).
    native_io: bool = True
    #: Per room: subscribers added behind an impaired link each (loadgen/impair/link.py).
    impaired_subscribers: int = 0
    #: Per room: the first publishers put behind an impaired link each.
    impaired_publishers: int = 0
    #: The impaired subscribers' downlink at the start: kbit/s (None: unlimited), loss %.
    link_rate: int | None = None
    link_loss: float = 0.0
    #: "SECONDS:STATE,..." changes of the subscribers' downlinks (loadgen/impair/schedule.py).
    link_schedule: str = ""
    #: The impaired publishers' uplink at the start, and its changes.
    uplink_rate: int | None = None
    uplink_loss: float = 0.0
    uplink_schedule: str = ""
    #: a server with an API secret: one token for every bot, or the key and secret to
    #: mint one per bot (its name the identity, its room the room)
    token: str | None = None
    api_key: str | None = None
    api_secret: str | None = None
    #: a bot whose websocket drops rejoins (``--reconnect``), through ``url`` or the next
    #: of ``fallback_urls`` (``--fallback-url``: other entry nodes of a cluster)
    reconnect: bool = False
    fallback_urls: tuple[str, ...] = ()

    @property
    def impaired(self) -> bool:
        return self.impaired_subscribers > 0 or self.impaired_publishers > 0
