"""Opus RED end to end (issue 15): a Chromium page publishes its fake microphone and,
answered with RED preferred, sends ``audio/red``; a second Chromium page negotiates RED
on its subscribe connection and receives ``audio/red``; a ``parley bot`` (aiortc, no
RED) gets the same audio stripped to plain Opus and decodes it. Server side, no RED
packet was malformed."""

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
        out.sent = {mimeType: codec(stats, s), packets: s.packetsSent};
  }
  for (const tile of window.parleyApp.tiles.values()) {
    if (tile.self || !tile.audioTrack) continue;
    const stats = await tile.audioTrack.receiver.getStats();
    for (const s of stats.values())
      if (s.type === "inbound-rtp" && s.kind === "audio")
        out.received[tile.id] = {
          mimeType: codec(stats, s), packets: s.packetsReceived,
          lost: s.packetsLost, concealed: s.concealedSamples, samples: s.totalSamplesReceived,
        };
  }
  return out;
}
"""


async def _audio(page: AppPage) -> dict[str, Any]:
    return await page.evaluate(_AUDIO_STATS)


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
        await asyncio.wait_for(bot.wait(), 40.0)
    finally:
        if bot.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                bot.kill()
            await bot.wait()

    print(json.dumps({"ada": ada, "bob": bob}))
    assert ada["sent"]["mimeType"] == "audio/red", ada  # Chromium took the answer's RED
    got = bob["received"][ids["ada"]]
    assert got["mimeType"] == "audio/red" and got["packets"] >= 150, got
    assert got["samples"] > 0 and got["concealed"] < got["samples"] / 10, got
    # the forwarders: bob negotiated RED (sent as RED), the bot did not (stripped)
    assert forwarders["bob"].params.red_payload_type is not None
    assert forwarders["bot"].params.red_payload_type is None
    assert forwarders["bot"].packets_sent >= 150 and forwarders["bob"].packets_sent >= 150
    assert [s.malformed for s in sources] == [0]
    assert sources[0].params.red_payload_type is not None
    summary = json.loads(bot_json.read_text())
    heard = [
        t for t in summary["tracks"] if t["kind"] == "audio" and t.get("participant") == ids["ada"]
    ]
    assert heard and heard[0]["frames_decoded"] >= 150, heard or summary["tracks"]
