"""Opus RED end to end (issue 15): a Chromium page publishes its fake microphone and,
answered with RED preferred, sends RED (payload type 63); a second Chromium page
negotiates RED on its subscribe connection, receives RED and plays it; a ``parley bot``
(aiortc, no RED) gets the same audio stripped to plain Opus and decodes it. No RED
packet was malformed.

Chromium's ``getStats`` names the codec of a RED stream ``audio/opus`` on both ends
(the codec of the frames, not of the packets), so what went on the wire is read where it
shows: the payload types of the packets the server received (its packet cache), and the
size of what it sent each subscriber (a RED packet carries the previous frame as well)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from .conftest import AppPage, OpenApp, RunningServer, wait_for

REPO = Path(__file__).resolve().parents[2]
ROOM = "red"

#: ``mimeType`` and packets of the page's audio RTP streams: what it sends (outbound-rtp
#: of its publish connection) and, per remote participant, what it receives.
_AUDIO_STATS = """
async () => {
  const c = window.parleyApp.client;
  const codec = (stats, s) => (stats.get(s.codecId) || {}).mimeType || null;
  const out = {sent: null, received: {}};
  if (c.publishConnection) {
    const stats = await c.publishConnection.getStats();
    for (const s of stats.values())
      if (s.type === "outbound-rtp" && s.kind === "audio")
        out.sent = {mimeType: codec(stats, s), packets: s.packetsSent, bytes: s.bytesSent};
  }
  for (const tile of window.parleyApp.tiles.values()) {
    if (tile.self || !tile.audioTrack) continue;
    const stats = await tile.audioTrack.receiver.getStats();
    for (const s of stats.values())
      if (s.type === "inbound-rtp" && s.kind === "audio")
        out.received[tile.id] = {
          mimeType: codec(stats, s), packets: s.packetsReceived,
          bytes: s.bytesReceived, lost: s.packetsLost, concealed: s.concealedSamples, samples: s.totalSamplesReceived,
        };
  }
  return out;
}
"""


async def _audio(page: AppPage) -> dict[str, Any]:
    return await page.evaluate(_AUDIO_STATS)


def _payload_types(source: Any, count: int = 200) -> dict[int, int]:
    """How many of the last ``count`` packets the source received had each payload type."""
    cache, newest = source.cache, source.cache.newest
    out: dict[int, int] = {}
    for i in range(count if newest is not None else 0):
        got = cache.get((newest - i) & 0xFFFF)
        if got is not None:
            out[got[0][1] & 0x7F] = out.get(got[0][1] & 0x7F, 0) + 1
    return out


async def test_chromium_red_reaches_chromium_as_red_and_a_bot_as_plain_opus(
    server: RunningServer, open_app: OpenApp, tmp_path: Path
) -> None:
    bot_json = tmp_path / "bot.json"
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley", "bot", "--url", server.url, "--room", ROOM,
        "--name", "bot", "--duration", "14", "--fps", "5", "--json", str(bot_json),
        cwd=REPO, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        pages: dict[str, AppPage] = {}
        for name in ("ada", "bob"):
            query = f"room={ROOM}&name={name}&autojoin=1&size=320x180"
            pages[name] = await open_app(server.url, query)
        ids = {name: await page.wait_published() for name, page in pages.items()}

        async def bob_hears_ada() -> bool:
            got = (await _audio(pages["bob"]))["received"].get(ids["ada"])
            return bool(got and got["packets"] >= 150)

        assert await wait_for(bob_hears_ada, 20.0), await _audio(pages["bob"])
        ada, bob = await _audio(pages["ada"]), await _audio(pages["bob"])
        # server side, while everyone is still there
        room = server.sfu.rooms[ROOM]
        forwarders: dict[str, Any] = {}
        sources = []
        for participant in room.participants.values():
            for sub in participant.subscribe_side.subscriptions.values():
                if sub.track.kind == "audio" and sub.publisher.id == ids["ada"]:
                    forwarders[participant.name] = sub.forwarder
                    sources = list(sub.track.layers)
        received_pts = _payload_types(sources[0])
        await asyncio.wait_for(bot.wait(), 40.0)
    finally:
        if bot.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                bot.kill()
            await bot.wait()

    per_packet = {name: f.bytes_sent / max(f.packets_sent, 1) for name, f in forwarders.items()}
    print(json.dumps({"ada": ada, "bob": bob, "pts": received_pts, "per_packet": per_packet}))
    # ada sends RED: the payload type its answer gave RED, on every packet of late
    red = sources[0].params.red_payload_type
    assert red is not None and set(received_pts) == {red}, received_pts
    assert sum(received_pts.values()) >= 100, received_pts
    assert ada["sent"]["packets"] >= 150, ada
    assert [s.malformed for s in sources] == [0]
    # bob negotiated RED and got it, the bot did not and got the primary blocks only
    assert forwarders["bob"].params.red_payload_type is not None
    assert forwarders["bot"].params.red_payload_type is None
    assert forwarders["bot"].packets_sent >= 150 and forwarders["bob"].packets_sent >= 150
    assert per_packet["bob"] > 1.4 * per_packet["bot"], per_packet
    # bob's Chromium counted RED-sized payloads (more than a whole stripped packet) and
    # played them: samples out, little concealed
    got = bob["received"][ids["ada"]]
    assert got["packets"] >= 150 and got["bytes"] / got["packets"] > per_packet["bot"], got
    assert got["samples"] > 0 and got["concealed"] < got["samples"] / 10, got
    summary = json.loads(bot_json.read_text())
    heard = [
        t for t in summary["tracks"] if t["kind"] == "audio" and t.get("participant") == ids["ada"]
    ]
    assert heard and heard[0]["frames_decoded"] >= 150, heard or summary["tracks"]
