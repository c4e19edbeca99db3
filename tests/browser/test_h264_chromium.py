"""H.264 with Debian's Chromium: a page that prefers H.264 (``publish(stream,
{videoCodec: "video/H264"})``) publishes it, one layer or three simulcast layers, and
bots decode it; a bot's H.264 (libx264) is decoded by Chromium. Parley forwards it
without transcoding (sfu/rtp/h264.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from loadgen.bot import BotConfig, run_bot

from .conftest import ClientPage, OpenClient, RunningServer, wait_for


async def _publish_h264(page: ClientPage, simulcast: bool, width: int, height: int) -> Any:
    return await page.evaluate(
        """async ({simulcast, width, height}) => {
          const stream = await navigator.mediaDevices.getUserMedia({
            audio: true, video: {width: {exact: width}, height: {exact: height}},
          });
          window.localStream = stream;
          return await window.client.publish(stream, {simulcast, videoCodec: "video/H264"});
        }""",
        {"simulcast": simulcast, "width": width, "height": height},
    )


async def _outbound_codecs(page: ClientPage) -> list[str]:
    """The mime type of each outbound video stream of the publish connection."""
    codecs: list[str] = await page.evaluate(
        """async () => {
          const stats = await window.client.publishConnection.getStats();
          const out = [];
          for (const s of stats.values()) {
            if (s.type === "outbound-rtp" && s.kind === "video" && s.codecId) {
              out.push(stats.get(s.codecId).mimeType);
            }
          }
          return out;
        }"""
    )
    return codecs


def _video_of(summary: dict[str, Any], participant: str) -> dict[str, Any]:
    (video,) = [
        t for t in summary["tracks"] if t["participant"] == participant and t["kind"] == "video"
    ]
    return video


async def test_chromium_publishes_h264_to_a_bot(
    server: RunningServer, open_client: OpenClient
) -> None:
    page = await open_client(server)
    page_id = await page.join("h264", "chromium")
    await _publish_h264(page, simulcast=False, width=640, height=360)
    answer = await page.publish_answer_sdp()
    assert answer is not None and "H264/90000" in answer and "VP8/90000" not in answer, answer
    summary = await run_bot(
        BotConfig(url=server.url, room="h264", name="bot", duration=8.0, publish=False)
    )
    video = _video_of(summary, page_id)
    print(f"\nthe bot decoded {video['frames_decoded']} H.264 frames of Chromium's")
    assert video["codec"] == "h264", video
    assert video["frames_decoded"] > 60, video
    assert video["resolutions"][-1] == [640, 360], video
    assert set(await _outbound_codecs(page)) == {"video/H264"}


async def test_chromium_h264_simulcast_layers_reach_bots_at_their_height(
    server: RunningServer, open_client: OpenClient
) -> None:
    """Three H.264 simulcast layers: only sequence numbers and timestamps are rewritten
    when a forwarder switches (H.264 has no picture id nor TL0PICIDX)."""
    page = await open_client(server)
    page_id = await page.join("h264s", "chromium")
    await _publish_h264(page, simulcast=True, width=1280, height=720)

    def layers() -> Any:
        room = server.sfu.rooms.get("h264s")
        participant = room.participants.get(page_id) if room else None
        video = [t for t in participant.tracks.values() if t.kind == "video"] if participant else []
        return video[0].layers if video else None

    async def flowing() -> bool:
        found = layers()
        return bool(found) and all(s.packets > 30 for s in found)

    assert await wait_for(flowing, 15.0), [(s.rid, s.ssrc, s.packets) for s in layers() or []]
    assert {s.params.codec for s in layers()} == {"h264"}
    summaries = await asyncio.gather(
        *(
            run_bot(
                BotConfig(
                    url=server.url, room="h264s", name=f"h{height}", duration=8.0,
                    publish=False, max_height=height,
                )
            )
            for height in (180, 720)
        )
    )  # fmt: skip
    sizes = []
    for height, summary in zip((180, 720), summaries, strict=True):
        video = _video_of(summary, page_id)
        print(f"\nbot h{height}: {video['frames_decoded']} frames, {video['resolutions']}")
        assert video["codec"] == "h264" and video["frames_decoded"] > 20, video
        assert video["resolutions"][-1][1] <= height, video
        sizes.append(tuple(video["resolutions"][-1]))
    assert sizes[0] != sizes[1], sizes


async def test_chromium_decodes_a_bots_h264(server: RunningServer, open_client: OpenClient) -> None:
    page = await open_client(server)
    await page.join("h264d", "chromium")
    bot = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="h264d", name="bot", duration=8.0, codec="h264"))
    )
    try:

        async def remote_video() -> dict[str, Any] | None:
            return next((t for t in await page.remote_tracks() if t["kind"] == "video"), None)

        track = await wait_for(remote_video, 10.0)
        assert track, await page.events()
        element = await page.play(track["trackId"])

        async def decoded() -> dict[str, Any] | None:
            stats = await page.inbound_stats(track["trackId"])
            return stats if stats and stats.get("framesDecoded", 0) > 60 else None

        stats = await wait_for(decoded, 10.0)
        assert stats, await page.inbound_stats(track["trackId"])
        codec = await page.evaluate(
            """async (trackId) => {
              const remote = window.client.remoteTrack(trackId);
              const stats = await remote.receiver.getStats();
              for (const s of stats.values()) {
                if (s.type === "inbound-rtp" && s.codecId) return stats.get(s.codecId).mimeType;
              }
              return null;
            }""",
            track["trackId"],
        )
        print(f"\nChromium decoded {stats['framesDecoded']} frames of the bot's {codec}")
        assert codec == "video/H264"
        assert (await page.video_element(element))["width"] == 320
    finally:
        await bot
