"""Issue 14's congestion scenario with real Chromium pages as subscribers.

One run (:func:`run_case`): the real server in this process (its ``Sfu`` is sampled),
a ``parley bot --simulcast`` publisher in its own process, and two headless Chromium
pages running the bundled web page (``web/``) with ``camera=0&mic=0`` at 1920x1080 (the
tile asks for 720p):

* the **slow** page's Chromium runs inside an :class:`~loadgen.impair.link.ImpairedLink`
  namespace (launched through a wrapper that ``nsenter``s it there, so playwright drives
  it over its pipe as usual); it reaches the server at the veth's ``10.99.N.1``, so all
  it receives crosses the shaped veth;
* the **clean** page's Chromium runs in this namespace and reaches the server on
  ``127.0.0.1``.

Timeline: both pages decode 720p, ``clean_s`` seconds later (from the slow page's
join, and at least 3 s of 720p) the server-to-page direction is impaired for
``limit_s`` seconds (``tbf`` at the case's rate, burst 15 kB, latency 150 ms, on the
server's veth end; or random loss with ``iptables`` in the namespace), then lifted for
``lifted_s`` seconds. Each page samples its subscribe connection's ``getStats()``
every 200 ms and records the server's ``layer`` messages; the server side is sampled
every 200 ms too (estimate, acknowledged rate, REMB, what is sent, layer forwarded).
:mod:`loadgen.congestion_figures` turns that into the table's figures.

Needs CAP_NET_ADMIN (``scripts/in_netns.py``), ``/usr/bin/chromium`` and playwright
(the ``test`` extra). Loopback and veth only: nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from loadgen import congestion_figures as figures
from loadgen.impair.link import ImpairedLink, Shape
from loadgen.loop_stalls import Stall, StallMonitor
from sfu.config import IceConfig, SfuConfig
from sfu.forwarder import Forwarder
from sfu.participant import Participant
from sfu.room import Sfu
from signaling.server import SFU_KEY, ServerConfig, create_app

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_PATH = "/usr/bin/chromium"
#: Debian's Chromium and its flags, for every page the tests and this harness drive
#: (docs/browser-client.md says why each).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: three tiles (the bot, the other page, itself): each about 900x500, asking for 720p
VIEWPORT = {"width": 1920, "height": 1080}
SAMPLE_S = 0.2
#: tbf on the server's veth end, as the issue says
TBF_BURST = 15_000
TBF_LATENCY_MS = 150


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the table: a rate limit (kbit/s) or a random loss, server to page."""

    name: str
    rate_kbit: int | None = None
    loss: float = 0.0


CASES: dict[str, Case] = {
    "300k": Case("300k", rate_kbit=300),
    "1m": Case("1m", rate_kbit=1000),
    "loss5": Case("loss5", loss=0.05),
}


@dataclass(frozen=True, slots=True)
class Timeline:
    clean_s: float = 10.0
    limit_s: float = 25.0
    lifted_s: float = 25.0
    #: the longest wait for the publisher and for both pages to decode 720p
    setup_timeout_s: float = 40.0


@dataclass(slots=True)
class Run:
    """What one run recorded (wall-clock seconds throughout)."""

    case: str
    started_at: float
    joined_at: float | None = None
    #: both pages decoding the top layer: the clean subscriber is judged from here
    steady_at: float | None = None
    limited_at: float | None = None
    lifted_at: float | None = None
    ended_at: float | None = None
    slow_samples: list[dict[str, Any]] = field(default_factory=list)
    slow_layers: list[dict[str, Any]] = field(default_factory=list)
    clean_samples: list[dict[str, Any]] = field(default_factory=list)
    clean_layers: list[dict[str, Any]] = field(default_factory=list)
    server: list[dict[str, Any]] = field(default_factory=list)
    #: late ticks of the SFU's event loop (``loadgen.loop_stalls``): when it did not run
    stalls: list[Stall] = field(default_factory=list)
    #: where the SFU sends the slow page's media (its ICE peer), and where it must
    slow_address: str | None = None
    link_address: str | None = None
    #: the end of what the publisher bot printed
    publisher_log: str = ""
    notes: list[str] = field(default_factory=list)


#: Installed in every page before its scripts: samples the subscribe connection's
#: getStats() every 200 ms into window.__parleySamples (``video``/``audio``: the
#: inbound-rtp entry that received the most, ``videos``: every video one with its
#: ``mid``, ``sent``: the publish connection's video outbound-rtp per ``rid``) and
#: records the client's ``layer`` events into window.__parleyLayers; ``t`` in
#: wall-clock seconds.
SAMPLER_JS = """
(() => {
  const samples = [], layers = [];
  window.__parleySamples = samples;
  window.__parleyLayers = layers;
  const V = ["frameHeight", "frameWidth", "framesDecoded", "framesReceived", "framesDropped",
    "freezeCount", "totalFreezesDuration", "pauseCount", "totalPausesDuration",
    "framesPerSecond", "packetsLost", "packetsReceived", "bytesReceived", "nackCount",
    "pliCount", "firCount", "keyFramesDecoded"];
  const A = ["packetsLost", "packetsReceived", "packetsDiscarded", "concealedSamples",
    "silentConcealedSamples", "totalSamplesReceived", "concealmentEvents", "bytesReceived",
    "jitterBufferDelay", "jitterBufferEmittedCount"];
  const pick = (r, keys) => { const o = {}; for (const k of keys) if (r[k] !== undefined) o[k] = r[k]; return o; };
  let hooked = null, busy = false;
  setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const client = window.parleyApp && window.parleyApp.client;
      const pc = client && client.subscribeConnection;
      if (!pc) return;
      if (hooked !== client) {
        hooked = client;
        client.addEventListener("layer", (e) => layers.push({t: Date.now() / 1000, ...e.detail}));
      }
      const stats = await pc.getStats();
      const s = {t: Date.now() / 1000, video: null, audio: null, pair: null, videos: [], sent: []};
      for (const r of stats.values()) {
        if (r.type === "inbound-rtp" && r.kind === "video") {
          s.videos.push({mid: r.mid, ...pick(r, V)});
          if (!s.video || (r.bytesReceived || 0) > (s.video.bytesReceived || 0)) s.video = pick(r, V);
        } else if (r.type === "inbound-rtp" && r.kind === "audio") {
          if (!s.audio || (r.bytesReceived || 0) > (s.audio.bytesReceived || 0)) s.audio = pick(r, A);
        } else if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
          s.pair = pick(r, ["availableIncomingBitrate", "currentRoundTripTime", "bytesReceived"]);
        }
      }
      const out = client.publishConnection;
      if (out) {
        for (const r of (await out.getStats()).values()) {
          if (r.type === "outbound-rtp" && r.kind === "video") {
            s.sent.push(pick(r, ["rid", "framesEncoded", "framesSent", "frameHeight", "framesPerSecond"]));
          }
        }
      }
      samples.push(s);
    } catch (e) {
      console.warn("sampler", e);
    } finally {
      busy = false;
    }
  }, 200);
})();
"""


# ------------------------------------------------------------------------ the server


async def serve(addresses: tuple[str, ...]) -> tuple[web.AppRunner, Sfu, int]:
    """The real server on every address of this namespace (lo and the veth ends), ICE
    gathered on ``addresses``; returns its runner, its SFU and its port."""
    config = ServerConfig(sfu=SfuConfig(ice=IceConfig(addresses=addresses)))
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, app[SFU_KEY], port


def participant(sfu: Sfu, room: str, name: str) -> Participant | None:
    found = sfu.rooms.get(room)
    if found is None:
        return None
    return next((p for p in found.participants.values() if p.name == name), None)


def _video_forwarder(p: Participant) -> Forwarder | None:
    """The forwarder of the (only) remote video track ``p`` receives."""
    return next((s.forwarder for s in p.subscriptions.values() if s.forwarder.is_video), None)


def _video_layer(p: Participant) -> str | None:
    """The spatial layer forwarded of the remote video track, "paused", or None."""
    f = _video_forwarder(p)
    if f is None:
        return None
    return f.current.rid if f.current is not None else "paused"


def _layer_rates(p: Participant) -> dict[str, int] | None:
    """Bit/s the SFU measures of each layer of the remote video track (the allocation's
    input)."""
    f = _video_forwarder(p)
    return None if f is None else {s.rid or "": int(s.bitrate) for s in f.layers}


def server_sample(p: Participant, now: float) -> dict[str, Any]:
    """What the SFU knows of one subscriber's link now (``now``: its event loop's
    clock). The one place that reads the SFU's congestion state: a field this version
    of the SFU does not have is None rather than an error."""

    def read(get: Callable[[], Any]) -> Any:
        try:
            return get()
        except (AttributeError, TypeError):
            return None

    delivery = read(lambda: p.bwe.acked(now))
    return {
        "layer": read(lambda: _video_layer(p)),
        "tid": read(lambda: getattr(_video_forwarder(p), "temporal_layer", None)),
        "layer_rates": read(lambda: _layer_rates(p)),
        "red": read(lambda: any(s.forwarder.redundant for s in p.subscriptions.values())),
        "estimate": read(p.layer_budget),
        "remb": read(lambda: p.remb_bitrate),
        "sent": read(lambda: p.egress_bitrate),
        "acked": getattr(delivery, "rate", None),
        "loss": getattr(delivery, "loss", None),
        "acked_share": getattr(delivery, "acked_share", None),
        "probing": read(lambda: p.bwe.probe is not None),
        # the estimator's last change of the cap (time, why, cap) and its delay state
        "event": read(lambda: p.bwe.events[-1] if p.bwe.events else None),  # type: ignore[attr-defined]
        "delay_state": read(lambda: p.bwe.delay_state),  # type: ignore[attr-defined]
        "queue_s": read(lambda: p.bwe.queue_delay(now)),  # type: ignore[attr-defined]
    }


# ------------------------------------------------------------------------ the link


def _limit(link: ImpairedLink, case: Case) -> None:
    if case.rate_kbit is not None:
        subprocess.run(
            [
                "tc", "qdisc", "replace", "dev", link.host_if, "root", "tbf",
                "rate", f"{case.rate_kbit}kbit", "burst", str(TBF_BURST),
                "latency", f"{TBF_LATENCY_MS}ms",
            ],
            check=True, capture_output=True,
        )  # fmt: skip
    if case.loss:
        link.shape(down=Shape(loss=case.loss))


def _lift(link: ImpairedLink) -> None:
    link.shape(down=Shape())


def _wrapper(link: ImpairedLink, directory: Path) -> Path:
    """An executable that starts Chromium inside the link's namespace: playwright
    launches it as the browser and talks to it over the inherited pipes."""
    path = directory / "chromium-in-netns"
    path.write_text(f'#!/bin/sh\nexec nsenter --net={link.netns} {CHROMIUM_PATH} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# ------------------------------------------------------------------------ the pages


async def _open_page(browser: Any, url: str) -> Any:
    context = await browser.new_context(viewport=VIEWPORT)
    await context.add_init_script(SAMPLER_JS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.parley_errors = errors
    await page.goto(url)
    return page


async def _page_data(page: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data = await page.evaluate("() => [window.__parleySamples, window.__parleyLayers]")
    return list(data[0] or []), list(data[1] or [])


async def _last_decoded_height(page: Any) -> int:
    height: int = await page.evaluate(
        """() => { const s = window.__parleySamples; const n = s.length;
          if (n < 2 || !s[n-1].video || !s[n-2].video) return 0;
          return s[n-1].video.framesDecoded > s[n-2].video.framesDecoded
            ? (s[n-1].video.frameHeight || 0) : 0; }"""
    )
    return height


# ------------------------------------------------------------------------ one run


async def run_case(
    case: Case,
    workdir: Path,
    *,
    timeline: Timeline | None = None,
    link_index: int = 40,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``case`` once; returns ``{"case", "figures": {"slow", "clean"}, "failed",
    "run": every sample}``. ``failed`` lists what of issue 14's table the run missed."""
    from playwright.async_api import async_playwright  # the test extra

    tl = timeline or Timeline()
    workdir.mkdir(parents=True, exist_ok=True)
    room = f"cc-{case.name}"
    run = Run(case=case.name, started_at=time.time())
    link = ImpairedLink(link_index)
    await asyncio.to_thread(link.start)
    publisher: asyncio.subprocess.Process | None = None
    runner: web.AppRunner | None = None
    cam_log = (workdir / f"{case.name}-cam.log").open("wb")
    monitor = StallMonitor()
    monitor.start()
    try:
        runner, sfu, port = await serve(("127.0.0.1", link.host_address))
        total = tl.setup_timeout_s + tl.clean_s + tl.limit_s + tl.lifted_s + 10
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "parley", "bot", "--url", f"http://127.0.0.1:{port}",
            "--room", room, "--name", "cam", "--simulcast", "--duration", f"{total:.0f}",
            "--json", str(workdir / f"{case.name}-cam.json"),
            cwd=REPO, stdout=cam_log, stderr=cam_log,
        )  # fmt: skip
        async with async_playwright() as playwright:
            clean_browser = await playwright.chromium.launch(
                executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS, headless=True
            )
            slow_browser = await playwright.chromium.launch(
                executable_path=str(_wrapper(link, workdir)),
                args=[
                    *CHROMIUM_ARGS,
                    # the page's origin is 10.99.N.1, not a secure context by itself
                    f"--unsafely-treat-insecure-origin-as-secure=http://{link.host_address}:{port}",
                ],
                headless=True,
            )
            try:
                await _scenario(
                    case, tl, run, link, sfu, port, room, clean_browser, slow_browser, log
                )
            finally:
                for browser in (slow_browser, clean_browser):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(browser.close(), 10.0)
    finally:
        if publisher is not None and publisher.returncode is not None:
            run.notes.append(f"the publisher bot exited early ({publisher.returncode})")
        if publisher is not None and publisher.returncode is None:
            publisher.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(publisher.wait(), 10.0)
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(link.close)
        cam_log.close()
        await monitor.close()
        run.stalls = monitor.stalls
    run.publisher_log = (workdir / f"{case.name}-cam.log").read_text(errors="replace")[-2000:]
    return summarize(run)


async def _scenario(
    case: Case,
    tl: Timeline,
    run: Run,
    link: ImpairedLink,
    sfu: Sfu,
    port: int,
    room: str,
    clean_browser: Any,
    slow_browser: Any,
    log: Callable[[str], None],
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + tl.setup_timeout_s
    while not _publishing(sfu, room):
        if loop.time() > deadline:
            raise RuntimeError("the publisher bot did not publish video")
        await asyncio.sleep(0.2)
    query = f"room={room}&autojoin=1&camera=0&mic=0"
    clean = await _open_page(clean_browser, f"http://127.0.0.1:{port}/?{query}&name=clean")
    slow = await _open_page(slow_browser, f"http://{link.host_address}:{port}/?{query}&name=slow")
    run.joined_at = time.time()
    run.link_address = link.peer_address

    stop = asyncio.Event()

    async def sample_server() -> None:
        while not stop.is_set():
            row: dict[str, Any] = {"t": time.time(), "cam": _published(sfu, room)}
            for name in ("slow", "clean"):
                p = participant(sfu, room, name)
                if p is not None and not p.closed:
                    row[name] = server_sample(p, loop.time())
                    if name == "slow" and p.remote_address is not None:
                        run.slow_address = p.remote_address
            run.server.append(row)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)

    sampler = asyncio.create_task(sample_server())
    try:
        top_at: float | None = None
        while True:
            heights = (await _last_decoded_height(slow), await _last_decoded_height(clean))
            if heights == (figures.TOP_HEIGHT, figures.TOP_HEIGHT) and top_at is None:
                top_at = time.time()
                run.steady_at = top_at
            if top_at is not None and time.time() >= max(run.joined_at + tl.clean_s, top_at + 3.0):
                break
            if loop.time() > deadline:
                raise RuntimeError(
                    f"the pages do not both decode {figures.TOP_HEIGHT}p within "
                    f"{tl.setup_timeout_s} s (last decoded heights: slow, clean = {heights})"
                )
            await asyncio.sleep(0.2)
        log(f"{case.name}: both pages decode 720p; impairing the slow page's downlink")
        await asyncio.to_thread(_limit, link, case)
        run.limited_at = time.time()
        await asyncio.sleep(tl.limit_s)
        await asyncio.to_thread(_lift, link)
        run.lifted_at = time.time()
        log(f"{case.name}: lifted")
        await asyncio.sleep(tl.lifted_s)
        run.ended_at = time.time()
    finally:
        stop.set()
        await sampler
        for page, samples, layers in (
            (slow, run.slow_samples, run.slow_layers),
            (clean, run.clean_samples, run.clean_layers),
        ):
            with contextlib.suppress(Exception):
                s, m = await asyncio.wait_for(_page_data(page), 10.0)
                samples.extend(s)
                layers.extend(m)
            run.notes.extend(f"page error: {e}" for e in page.parley_errors)


def _published(sfu: Sfu, room: str) -> dict[str, int] | None:
    """Packets the SFU has received of each layer of the publisher's video (None: the
    publisher is gone): a layer whose count stops growing stopped arriving."""
    p = participant(sfu, room, "cam")
    if p is None or p.closed:
        return None
    for track in p.tracks.values():
        if track.kind == "video":
            return {layer.rid or "": layer.packets for layer in track.layers}
    return None


def _publishing(sfu: Sfu, room: str) -> bool:
    p = participant(sfu, room, "cam")
    return p is not None and any(t.kind == "video" for t in p.tracks.values())


def summarize(run: Run) -> dict[str, Any]:
    """The run's figures (``loadgen.congestion_figures``) and what it missed of the
    table, with every sample kept (``run``)."""
    out: dict[str, Any] = {"case": run.case, "run": asdict(run)}
    if run.limited_at is None or run.lifted_at is None or run.ended_at is None:
        out["figures"] = None
        out["failed"] = ["the run did not reach the end of its timeline"]
        return out
    window = figures.Window(run.limited_at, run.lifted_at, run.ended_at)
    slow = figures.slow_figures(run.slow_samples, run.slow_layers, window)
    clean_from = run.steady_at if run.steady_at is not None else run.limited_at
    clean = figures.clean_figures(
        run.clean_samples, run.clean_layers, clean_from, run.ended_at, run.stalls
    )
    clean["publisher_stalls"] = publisher_stalls(run, clean_from, run.ended_at)
    out["figures"] = {"slow": slow, "clean": clean, "server": server_figures(run)}
    gone = next(
        (r["t"] for r in run.server if r["t"] <= run.ended_at and r.get("cam") is None), None
    )
    if gone is not None:
        run.notes.append(
            f"the publisher stopped publishing {gone - run.limited_at:.1f} s from the limit "
            f"(it printed: {run.publisher_log[-400:]!r})"
        )
    out["failed"] = figures.check(run.case, slow, clean) + run.notes
    if run.slow_address != run.link_address:
        out["failed"].append(
            f"the slow page's media did not cross the link: the SFU sent it to "
            f"{run.slow_address}, not {run.link_address}"
        )
    return out


def publisher_stalls(run: Run, start: float, end: float, rid: str = "f") -> list[list[float]]:
    """Where the publisher's ``rid`` layer stopped arriving at the SFU for at least two
    server samples (0.4 s), as [from, to] s from the limit: a freeze of every
    subscriber there comes from upstream (the bot's process, on a busy machine), not
    from the SFU's sending leg."""
    assert run.limited_at is not None
    rows = [r for r in run.server if start <= r["t"] <= end and r.get("cam")]
    stalls: list[list[float]] = []
    since: float | None = None
    for a, b in zip(rows, rows[1:], strict=False):
        same = a["cam"].get(rid) == b["cam"].get(rid)
        if same and since is None:
            since = a["t"]
        elif not same and since is not None:
            if a["t"] - since >= 2 * SAMPLE_S - 0.05:
                stalls.append([round(since - run.limited_at, 1), round(b["t"] - run.limited_at, 1)])
            since = None
    return stalls


def server_figures(run: Run) -> dict[str, Any]:
    """The SFU's view of the slow subscriber during the limit: the lowest and the last
    estimate, the acknowledged rate at the end of the limit, the layers it forwarded."""
    assert run.limited_at is not None and run.lifted_at is not None
    rows = [
        r["slow"] for r in run.server if "slow" in r and run.limited_at <= r["t"] <= run.lifted_at
    ]
    estimates = [r["estimate"] for r in rows if r.get("estimate") is not None]
    layers: list[str] = []
    for r in rows:
        if r.get("layer") is not None and (not layers or layers[-1] != r["layer"]):
            layers.append(r["layer"])
    return {
        # when the machine held the SFU's process off >= 0.1 s: [s from the limit, s, CPU s]
        "held_off": [
            [round(st.start - run.limited_at, 2), round(st.length, 3), round(st.cpu, 3)]
            for st in run.stalls
            if st.held_off and st.length >= figures.MACHINE_STALL_AT_LEAST_S
        ],
        "lowest_estimate": min(estimates) if estimates else None,
        "estimate_at_lift": rows[-1].get("estimate") if rows else None,
        "acked_at_lift": rows[-1].get("acked") if rows else None,
        "layers_forwarded": layers,
    }


def series(result: dict[str, Any]) -> dict[str, list[Any]]:
    """The run's time series, compact (seconds from the limit): the slow page's decoded
    height (0 while nothing decodes) and decoded frame rate per sample, and the
    server's estimate, acknowledged rate, REMB and what it sent (bit/s) and the layer
    it forwarded. For the benchmark's JSON and plot."""
    run = result["run"]
    t0 = run["limited_at"] or run["started_at"]
    page: list[Any] = []
    previous: dict[str, Any] | None = None
    last_frame_at = -1e9
    for s in run["slow_samples"]:
        v = s.get("video") or {}
        if previous is not None and s["t"] > previous["t"]:
            before = (previous.get("video") or {}).get("framesDecoded", 0)
            frames = v.get("framesDecoded", 0) - before
            if frames > 0:
                last_frame_at = s["t"]
            # the height of the last decoded frame, 0 once none came for half a second
            height = v.get("frameHeight", 0) if s["t"] - last_frame_at < 0.5 else 0
            fps = frames / (s["t"] - previous["t"])
            page.append([round(s["t"] - t0, 2), height, round(fps, 1)])
        previous = s

    def bits(value: float | None) -> int | None:
        return None if value is None else round(value)

    server = [
        [
            round(r["t"] - t0, 2),
            bits(r["slow"].get("estimate")),
            bits(r["slow"].get("acked")),
            bits(r["slow"].get("remb")),
            bits(r["slow"].get("sent")),
            r["slow"].get("layer"),
        ]
        for r in run["server"]
        if "slow" in r
    ]
    return {
        "page_columns": ["t", "decoded_height", "fps"],
        "page": page,
        "server_columns": ["t", "estimate", "acked", "remb", "sent", "layer"],
        "server": server,
        "lifted_s": [round(run["lifted_at"] - t0, 2)] if run["lifted_at"] else [],
    }
