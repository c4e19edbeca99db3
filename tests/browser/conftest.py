"""Browser fixtures: Debian's headless Chromium (through Python playwright) on the real server.

Like the integration tests, these open real peer connections and refuse to run outside a
network namespace that has only ``lo`` (``make test`` runs pytest under
``scripts/in_netns.py``). Chromium is the distribution's ``/usr/bin/chromium``; playwright
never downloads a browser here.

Fixtures:

* ``server``, ``server_factory`` (from ``tests/_server.py``): the real server, in process.
* ``chromium``: a launched headless Chromium (``playwright.async_api.Browser``).
* ``open_client``: ``await open_client(server)`` opens a page on the server's origin with
  ``/static/parley-client.js`` imported, and returns a :class:`ClientPage` that drives a
  ``ParleyClient`` in it (join, publish, play remote video, read ``getStats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

# Chromium and its flags (why each: docs/browser-client.md): one list, shared with the
# congestion harness that launches Chromium inside a network namespace.
from loadgen.browser_congestion import CHROMIUM_ARGS, CHROMIUM_PATH
from tests._server import (
    RestartableServer,
    RunningServer,
    ServerFactory,
    _only_loopback,
    _require_loopback_namespace,
    restartable_server,
    server,
    server_factory,
)

__all__ = [
    "AppPage",
    "CHROMIUM_ARGS",
    "CHROMIUM_PATH",
    "ClientPage",
    "RunningServer",
    "ServerFactory",
    "_require_loopback_namespace",
    "chromium",
    "open_app",
    "open_client",
    "RestartableServer",
    "restartable_server",
    "server",
    "server_factory",
    "wait_for",
]


#: The page every test starts from: a path the server does not serve, so the document is
#: the server's own 404 response (text/plain, which Chromium renders with a <body>). Its
#: origin is the server's: a secure context (127.0.0.1) whose module import and websocket
#: are same-origin. A page made up by playwright (``page.route`` + ``fulfill``) does not
#: work: Chromium's local network access checks then block the websocket to 127.0.0.1
#: (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS).
TEST_PAGE_PATH = "/__parley_browser_test__"

CLIENT_MODULE = "/static/parley-client.js"

#: Events recorded in the page for :meth:`ClientPage.events`.
RECORDED_EVENTS = [
    "joined",
    "participantjoined",
    "participantleft",
    "trackpublished",
    "trackunpublished",
    "track",
    "trackremoved",
    "published",
    "layer",
    "mute",
    "servererror",
    "clienterror",
    "connectionstatechange",
    "left",
    "disconnected",
    "closed",
]

_INSTALL = """
async ({module, recorded}) => {
  const Parley = await import(module);
  window.Parley = Parley;
  window.parleyEvents = [];
  window.parleyRecorded = recorded;
  // What a recorded event's detail looks like from Python (no MediaStreams, no Maps).
  window.parleyPlain = (detail) => {
    if (detail === null || typeof detail !== "object") return detail;
    if (detail.receiver !== undefined) {
      const {participant, trackId, kind, mid} = detail;
      return {participant, trackId, kind, mid};
    }
    return JSON.parse(JSON.stringify(detail, (key, value) =>
      value instanceof Map ? Object.fromEntries(value) : value));
  };
}
"""


async def wait_for(
    probe: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.1
) -> Any:
    """Call ``probe`` until it returns something truthy; return it, or the last falsy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value or loop.time() >= deadline:
            return value
        await asyncio.sleep(interval)


class ClientPage:
    """One page running one ``ParleyClient`` (``window.client``), driven from Python."""

    def __init__(self, page: Page, server: RunningServer) -> None:
        self.page = page
        self.server = server
        self.console: list[str] = []
        self.page_errors: list[str] = []
        self.id: str | None = None
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)

    async def join(self, room: str, name: str, token: str | None = None) -> str:
        """Create ``window.client`` and join; returns our participant id."""
        self.id = await self.evaluate(
            """async ({room, name, token}) => {
              const options = {room, name};
              if (token !== null) options.token = token;
              const client = new Parley.ParleyClient(options);
              window.client = client;
              for (const type of window.parleyRecorded) {
                client.addEventListener(type, (e) => window.parleyEvents.push(
                  {type, at: performance.now(), detail: window.parleyPlain(e.detail)}));
              }
              return await client.join();
            }""",
            {"room": room, "name": name, "token": token},
        )
        assert isinstance(self.id, str)
        return self.id

    async def publish(
        self,
        *,
        simulcast: bool,
        width: int = 1280,
        height: int = 720,
        audio: bool = True,
        video: bool = True,
    ) -> list[dict[str, Any]]:
        """getUserMedia (Chromium's fake devices) and publish; returns the server's tracks."""
        return await self.evaluate(
            """async ({simulcast, width, height, audio, video}) => {
              const stream = await navigator.mediaDevices.getUserMedia({
                audio, video: video ? {width: {exact: width}, height: {exact: height}} : false,
              });
              window.localStream = stream;
              return await window.client.publish(stream, {simulcast});
            }""",
            {
                "simulcast": simulcast,
                "width": width,
                "height": height,
                "audio": audio,
                "video": video,
            },
        )

    async def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Recorded client events ``{type, at, detail}``, optionally of one type."""
        events: list[dict[str, Any]] = await self.evaluate("() => window.parleyEvents")
        return [e for e in events if type_ is None or e["type"] == type_]

    async def remote_tracks(self) -> list[dict[str, Any]]:
        """``client.remoteTracks`` as ``{participant, trackId, kind, mid}``."""
        return await self.evaluate(
            "() => window.client.remoteTracks.map((t) => window.parleyPlain(t))"
        )

    async def wait_remote_track(
        self, participant: str, kind: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            for t in await self.remote_tracks():
                if t["participant"] == participant and t["kind"] == kind:
                    return t
            return None

        track = await wait_for(probe, timeout)
        assert track, f"no {kind} track of {participant} within {timeout} s: {await self.events()}"
        return track

    async def play(self, track_id: str) -> str:
        """Attach a remote track to a new muted ``<video>`` element; returns its DOM id."""
        return await self.evaluate(
            """async (trackId) => {
              const remote = window.client.remoteTrack(trackId);
              if (!remote) throw new Error(`not receiving ${trackId}`);
              const video = document.createElement("video");
              video.id = `v-${trackId}`;
              video.muted = true;
              video.autoplay = true;
              video.playsInline = true;
              video.srcObject = remote.stream;
              document.body.append(video);
              await video.play().catch(() => {});
              return video.id;
            }""",
            track_id,
        )

    async def video_element(self, element_id: str) -> dict[str, Any]:
        """``videoWidth``/``videoHeight`` and ``getVideoPlaybackQuality()`` of an element."""
        return await self.evaluate(
            """(id) => {
              const v = document.getElementById(id);
              const q = v.getVideoPlaybackQuality();
              return {width: v.videoWidth, height: v.videoHeight,
                      totalVideoFrames: q.totalVideoFrames, currentTime: v.currentTime};
            }""",
            element_id,
        )

    async def inbound_stats(self, track_id: str) -> dict[str, Any] | None:
        """The ``inbound-rtp`` stats of the receiver of a remote track (None if absent)."""
        return await self.evaluate(
            """async (trackId) => {
              const remote = window.client.remoteTrack(trackId);
              if (!remote) return null;
              for (const s of (await remote.receiver.getStats()).values()) {
                if (s.type === "inbound-rtp") return JSON.parse(JSON.stringify(s));
              }
              return null;
            }""",
            track_id,
        )

    async def outbound_stats(self) -> list[dict[str, Any]]:
        """Every ``outbound-rtp`` stats entry of the publish connection."""
        return await self.evaluate(
            """async () => {
              const pc = window.client.publishConnection;
              if (!pc) return [];
              const out = [];
              for (const s of (await pc.getStats()).values()) {
                if (s.type === "outbound-rtp") out.push(JSON.parse(JSON.stringify(s)));
              }
              return out;
            }"""
        )

    async def publish_answer_sdp(self) -> str | None:
        return await self.evaluate(
            "() => window.client.publishConnection?.remoteDescription?.sdp ?? null"
        )

    async def close(self) -> None:
        """Leave (if joined) and close the page's client."""
        if self.page.is_closed():
            return
        await self.evaluate("async () => { if (window.client) await window.client.leave(1000); }")

    def report(self) -> str:
        return json.dumps(
            {"console": self.console[-50:], "page_errors": self.page_errors}, indent=1
        )


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, with fake camera/microphone and loopback ICE."""
    if not _only_loopback():
        pytest.fail("browser tests must run in a loopback-only namespace (scripts/in_netns.py)")
    if not os.access(CHROMIUM_PATH, os.X_OK):
        pytest.fail(f"{CHROMIUM_PATH} is missing: apt-get install chromium (see .ci/run)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


OpenClient = Callable[[RunningServer], Awaitable[ClientPage]]


@pytest.fixture
async def open_client(chromium: Browser) -> AsyncIterator[OpenClient]:
    """``await open_client(server)``: a new page (own browser context) with the client loaded.

    At teardown every client leaves and its page closes; an uncaught error in a page
    fails the test.
    """
    pages: list[ClientPage] = []

    async def open_(server: RunningServer) -> ClientPage:
        context = await chromium.new_context()
        page = await context.new_page()
        client = ClientPage(page, server)
        pages.append(client)

        await page.goto(f"{server.url}{TEST_PAGE_PATH}")
        await page.evaluate(_INSTALL, {"module": CLIENT_MODULE, "recorded": RECORDED_EVENTS})
        return client

    try:
        yield open_
    finally:
        errors: list[str] = []
        for client in pages:
            try:
                await asyncio.wait_for(client.close(), 5.0)
            except Exception as exc:  # a page that is already broken must not hide the others
                errors.append(f"closing: {exc!r}")
            errors.extend(client.page_errors)
            print(client.report())
            await client.page.context.close()
        if errors:
            pytest.fail(f"uncaught errors in the page: {errors}")


# ---------------------------------------------------------------------------- the web page

#: Each remote tile of the page (web/app.js's ``window.parleyApp.tiles``) as plain data:
#: what it shows (name, <video> size, classes) and what its receivers counted.
_TILES = """
async () => {
  const app = window.parleyApp;
  const out = [];
  for (const tile of app.tiles.values()) {
    const r = {
      id: tile.id, self: tile.self, name: tile.label.textContent,
      videoWidth: tile.video.videoWidth, videoHeight: tile.video.videoHeight,
      classes: [...tile.el.classList], stats: tile.stats.textContent,
      width: tile.el.getBoundingClientRect().width,
      framesDecoded: 0, audioPackets: 0, layer: null, asked: tile.asked,
      hasAudio: !!(tile.audio && tile.audio.srcObject),
    };
    for (const remote of [tile.videoTrack, tile.audioTrack]) {
      if (!remote) continue;
      for (const s of (await remote.receiver.getStats()).values()) {
        if (s.type !== "inbound-rtp") continue;
        if (s.kind === "video") r.framesDecoded = s.framesDecoded ?? 0;
        else r.audioPackets = s.packetsReceived ?? 0;
      }
    }
    if (tile.videoTrack && app.client) r.layer = app.client.layer(tile.videoTrack.trackId);
    out.push(r);
  }
  return out;
}
"""


class AppPage:
    """One browser page running the bundled web page (``web/index.html`` + ``app.js``)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        self.page_errors: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await self.page.evaluate(expression, arg)

    async def client_state(self) -> str | None:
        return await self.evaluate("() => window.parleyApp?.client?.state ?? null")

    async def notice(self) -> str | None:
        """The text of the page's notice banner, or None while it is hidden."""
        return await self.evaluate(
            "() => document.getElementById('notice').hidden ? null"
            " : document.getElementById('notice-text').textContent"
        )

    async def status(self) -> str:
        return await self.evaluate("() => document.getElementById('status').textContent")

    async def participant_id(self) -> str | None:
        return await self.evaluate("() => window.parleyApp?.client?.id ?? null")

    async def wait_published(self, timeout: float = 15.0) -> str:
        """Wait until the page joined and the server published its tracks; returns its id."""

        async def probe() -> str | None:
            return await self.evaluate(
                """() => { const c = window.parleyApp?.client;
                  return c && c.state === 'joined' && c.publishedTracks.length > 0 ? c.id : null; }"""
            )

        found = await wait_for(probe, timeout)
        assert found, (
            f"not joined and published within {timeout} s: {await self.status()!r}, "
            f"{await self.notice()!r}, {self.report()}"
        )
        return found

    async def tiles(self) -> list[dict[str, Any]]:
        return await self.evaluate(_TILES)

    async def remote_tiles(self) -> dict[str, dict[str, Any]]:
        """Remote tiles by participant id."""
        return {t["id"]: t for t in await self.tiles() if not t["self"]}

    def report(self) -> str:
        return json.dumps({"console": self.console[-40:], "page_errors": self.page_errors})


OpenApp = Callable[..., Awaitable[AppPage]]


@pytest.fixture
async def open_app(chromium: Browser) -> AsyncIterator[OpenApp]:
    """``await open_app(base_url, "room=r&name=n&autojoin=1", width=1280, height=800)``.

    Opens the web page (``{base_url}/?query``) in its own browser context at that
    viewport size. ``init_script`` runs before the page's scripts (to break
    ``getUserMedia``, say). At teardown the pages close; an uncaught error in one fails
    the test.
    """
    pages: list[AppPage] = []

    async def open_(
        base_url: str,
        query: str = "",
        *,
        width: int = 1280,
        height: int = 800,
        init_script: str | None = None,
    ) -> AppPage:
        context = await chromium.new_context(viewport={"width": width, "height": height})
        if init_script is not None:
            await context.add_init_script(init_script)
        page = await context.new_page()
        app = AppPage(page)
        pages.append(app)
        await page.goto(f"{base_url.rstrip('/')}/?{query}")
        return app

    try:
        yield open_
    finally:
        errors: list[str] = []
        for app in pages:
            errors.extend(app.page_errors)
            print(app.report())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(app.page.context.close(), 5.0)
        if errors:
            pytest.fail(f"uncaught errors in the page: {errors}")
