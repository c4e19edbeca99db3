"""H.264 passthrough with real encoders and decoders, over loopback: GStreamer webrtcbin
publishing ``openh264enc`` (constrained baseline, ``rtph264pay``: SPS and PPS as their
own packets before each IDR) and ``parley bot --codec h264`` (aiortc's libx264 encoder:
STAP-A of SPS, PPS and the IDR) each decode the other's H.264 for more than 10 s; and a
room that mixes codecs per track (a VP8 bot beside webrtcbin's H.264), where a watching
bot gets one VP8 and one H.264 m-line and decodes both, and webrtcbin decodes the VP8.

Without the H.264 path Parley refuses both publishers' video (``unsupported_media``);
without the subscriber-answer completion (webrtcbin answers H.264 without
profile-level-id) webrtcbin gets nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from .conftest import RunningServer
from .test_webrtcbin import BOT_S, CLIENT, CLIENT_S, FPS, MIN_SPAN_S, PARLEY, SYSTEM_PYTHON, _run

#: the mixed room starts three clients at once: 4 s longer, so that a slow start on a
#: busy machine still leaves more than 10 s of media
MIXED_EXTRA_S = 4


def _bot(url: str, room: str, name: str, json_path: Path, *extra: str, more: int = 0) -> Any:
    return asyncio.ensure_future(
        _run(
            *PARLEY, "bot", "--url", url, "--room", room, "--name", name,
            "--duration", str(BOT_S + more), "--json", str(json_path), *extra,
        )
    )  # fmt: skip


def _webrtcbin(url: str, room: str, *extra: str, more: int = 0) -> Any:
    return asyncio.ensure_future(
        _run(
            SYSTEM_PYTHON, str(CLIENT), "--url", url, "--room", room, "--name", "gst",
            "--duration", str(CLIENT_S + more), "--fps", str(FPS), "--video-codec", "h264", *extra,
        )
    )  # fmt: skip


def _summary(out: str, err: str, rc: int) -> dict[str, Any]:
    assert out.strip(), f"the client printed no summary; stderr:\n{err[-3000:]}"
    summary: dict[str, Any] = json.loads(out)
    assert summary["errors"] == [] and rc == 0, (summary["errors"], err[-3000:])
    return summary


def _video_of(bot_summary: dict[str, Any], name: str) -> dict[str, Any]:
    tracks = [
        t for t in bot_summary["tracks"] if t["participant_name"] == name and t["kind"] == "video"
    ]
    assert len(tracks) == 1, bot_summary["tracks"]
    return tracks[0]


def _check_decoded(video: dict[str, Any], codec: str, first_ms: float = 3000) -> None:
    """Decoded as ``codec``, at least half the frames of 10 s, the first within
    ``first_ms`` of the bot starting to join, no freeze over 2 s, 320x240."""
    assert video["codec"] == codec, video
    assert video["frames_decoded"] >= MIN_SPAN_S * FPS * 0.5, video
    assert video["first_frame_ms"] is not None and video["first_frame_ms"] < first_ms, video
    assert video["max_freeze_ms"] < 2000, video
    assert video["resolutions"] == [[320, 240]], video


async def test_webrtcbin_and_a_bot_exchange_h264(server: RunningServer, tmp_path: Path) -> None:
    bot_json = tmp_path / "bot.json"
    bot = _bot(server.url, "h264", "bot", bot_json, "--codec", "h264")
    client = _webrtcbin(server.url, "h264")
    (bot_rc, _, bot_err), (rc, out, err) = await asyncio.gather(bot, client)
    summary = _summary(out, err, rc)

    # Parley answered webrtcbin's H.264 with one H.264 payload type, packetization-mode 1
    answer = summary["sdp"]["publish_answer"]
    assert "a=rtpmap:102 H264/90000" in answer and "packetization-mode=1" in answer, answer
    assert "VP8" not in answer
    # its subscribe offer carried H.264 only for the bot's video, webrtcbin decoded it
    offer = summary["sdp"]["subscribe_offer"]
    assert "H264/90000" in offer and "VP8/90000" not in offer
    assert summary["received_encodings"] == {"0": "OPUS", "1": "H264"}, summary
    received, spans = summary["received"], summary["received_spans"]
    print(f"\nwebrtcbin decoded {received} of the bot's H.264 + Opus, spans {spans}")
    assert received["video_frames"] >= MIN_SPAN_S * FPS * 0.5, received
    first, last = spans["video_frames"]
    assert last - first >= MIN_SPAN_S - 1.5, spans  # (the bot's x264 starts a little later)

    bot_summary = json.loads(bot_json.read_text())
    video = _video_of(bot_summary, "gst")
    print(f"the bot decoded {video['frames_decoded']} H.264 frames of webrtcbin's")
    _check_decoded(video, "h264")
    failed = {f["code"] for f in bot_summary["failed"]}
    assert failed <= {"freeze", "loss"}, (bot_summary["verdict"], bot_err[-2000:])


async def test_a_room_mixes_vp8_and_h264_tracks(server: RunningServer, tmp_path: Path) -> None:
    vp8_json, watch_json = tmp_path / "vp8.json", tmp_path / "watch.json"
    vp8 = _bot(server.url, "mixed", "vp8", vp8_json, more=MIXED_EXTRA_S)
    watch = _bot(server.url, "mixed", "watch", watch_json, "--no-publish", more=MIXED_EXTRA_S)
    client = _webrtcbin(server.url, "mixed", more=MIXED_EXTRA_S)
    (vp8_rc, _, _), (watch_rc, _, watch_err), (rc, out, err) = await asyncio.gather(
        vp8, watch, client
    )
    summary = _summary(out, err, rc)
    # webrtcbin publishes H.264 and receives the VP8 bot's VP8
    assert summary["received_encodings"] == {"0": "OPUS", "1": "VP8"}, summary
    assert summary["received"]["video_frames"] >= MIN_SPAN_S * FPS * 0.5, summary["received"]

    watch_summary = json.loads(watch_json.read_text())
    h264, vp8_video = _video_of(watch_summary, "gst"), _video_of(watch_summary, "vp8")
    print(
        f"\nthe watching bot decoded {h264['frames_decoded']} H.264 frames (webrtcbin) and "
        f"{vp8_video['frames_decoded']} VP8 frames (bot); webrtcbin decoded "
        f"{summary['received']['video_frames']} VP8 frames"
    )
    # (three clients start at once here: webrtcbin's first frame may come later)
    _check_decoded(h264, "h264", first_ms=5000)
    _check_decoded(vp8_video, "vp8", first_ms=5000)
    # the VP8 bot decoded webrtcbin's H.264 too
    _check_decoded(_video_of(json.loads(vp8_json.read_text()), "gst"), "h264", first_ms=5000)
    failed = {f["code"] for f in watch_summary["failed"]}
    assert failed <= {"freeze", "loss"}, (watch_summary["verdict"], watch_err[-2000:])


async def test_libwebrtc_without_h264_gets_the_rest_of_the_room(
    server: RunningServer, tmp_path: Path
) -> None:
    """libwebrtc for Node (@roamhq/wrtc 0.10) has no H.264: it answers the H.264 m-line
    ``m=video 0`` (rejected). Parley accepts that answer (the m-line is dead, the track
    not forwarded to it, H.264 never offered to it again) instead of failing it, so
    wrtc still gets the H.264 bot's audio. Without sfu/subscribe_refusals.py the answer
    fails (``bad_sdp``) and wrtc gets nothing."""
    from .test_libwebrtc import CLIENT as WRTC_CLIENT
    from .test_libwebrtc import _node
    from .test_libwebrtc import _run as run_node

    node = _node()
    bot = _bot(server.url, "no264", "h264bot", tmp_path / "bot.json", "--codec", "h264")
    await asyncio.sleep(3.0)  # the bot's tracks are published when wrtc joins
    rc, out, err = await run_node(
        node, str(WRTC_CLIENT), "--url", server.url, "--room", "no264", "--name", "wrtc",
        "--duration", "8", "--no-publish", timeout=40,
    )  # fmt: skip
    room = server.sfu.rooms.get("no264")
    await bot
    assert out.strip(), f"the wrtc client printed no summary (rc {rc}); stderr:\n{err[-3000:]}"
    summary = json.loads(out)
    assert summary["errors"] == [] and rc == 0, (summary["errors"], err[-3000:])
    # its first answer rejected the H.264 m-line, and no codec of it was offered again
    first = summary["sdp"]["subscribe_answer"]
    assert "m=video 0 " in first, first
    assert room is not None
    print(f"\nwrtc received {summary['received']} of the H.264 bot (its video refused)")
    assert summary["received"].get("video_frames", 0) == 0
    assert summary["received"]["audio_samples"] >= 5 * 48000 * 0.5, summary["received"]


async def test_libwebrtc_saying_what_it_decodes_gets_the_vp8_of_a_mixed_room(
    server: RunningServer, tmp_path: Path
) -> None:
    """A room with an H.264 bot (published first: its m-line comes first in the offer) and
    a VP8 bot. wrtc rejecting the H.264 m-line *before* a VP8 one cannot apply its own
    answer and never answers; with ``join``'s ``codecs`` (``["opus", "vp8"]``) Parley
    never offers it the H.264 track: it decodes the VP8 bot's video and both bots' audio.
    (Without ``codecs`` its first offer carries H.264 and it gets no video.)"""
    from .test_libwebrtc import CLIENT as WRTC_CLIENT
    from .test_libwebrtc import _node
    from .test_libwebrtc import _run as run_node

    node = _node()
    h264 = _bot(server.url, "mixed", "h264bot", tmp_path / "h.json", "--codec", "h264")
    await asyncio.sleep(1.5)
    vp8 = _bot(server.url, "mixed", "vp8bot", tmp_path / "v.json")
    await asyncio.sleep(2.5)  # both bots' tracks are published when wrtc joins
    rc, out, err = await run_node(
        node, str(WRTC_CLIENT), "--url", server.url, "--room", "mixed", "--name", "wrtc",
        "--duration", "8", "--no-publish", "--codecs", "opus,vp8", timeout=40,
    )  # fmt: skip
    await asyncio.gather(h264, vp8)
    assert out.strip(), f"the wrtc client printed no summary (rc {rc}); stderr:\n{err[-3000:]}"
    summary = json.loads(out)
    assert summary["errors"] == [] and rc == 0, (summary["errors"], err[-3000:])
    offer = summary["sdp"]["subscribe_offer"]  # the first one
    assert "H264" not in offer, offer
    by = summary["received_by_participant"]
    print(f"\nwrtc received {by}")
    video = {p: got.get("video_frames", 0) for p, got in by.items()}
    audio = {p: got.get("audio_samples", 0) for p, got in by.items()}
    assert sum(video.values()) >= 5 * FPS * 0.5, by
    assert len([p for p, n in audio.items() if n >= 5 * 48000 * 0.5]) == 2, by
