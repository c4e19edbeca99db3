"""libwebrtc (the npm package ``@roamhq/wrtc``, libwebrtc for Node) and a ``parley bot``
in one room of a real server, over loopback: both directions carry decoded media for
more than 10 s, as wrtc comes (its own offers and answers, no SDP munging).

The client (``wrtc/client.mjs``) runs under ``node`` as a subprocess and needs
``wrtc/node_modules``: ``make test`` installs it first (``npm ci --prefix
tests/interop/wrtc``, pinned by the lockfile), since the tests run without a network. It publishes a moving I420 pattern (320x240, 15 fps)
and a 440 Hz tone through wrtc's nonstandard ``RTCVideoSource``/``RTCAudioSource``,
counts the frames and samples its ``RTCVideoSink``/``RTCAudioSink`` deliver, and prints
a JSON summary; the bot's JSON summary says what it decoded of the client
(docs/bots.md).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sfu.gcc.estimator import SendSideEstimator

from .conftest import RunningServer

WRTC = Path(__file__).with_name("wrtc")
CLIENT = WRTC / "client.mjs"
PARLEY = [sys.executable, "-m", "parley"]
#: seconds the client stays in the room (media flows from about 1 s in)
CLIENT_S = 13
BOT_S = 15
FPS = 15
SAMPLE_RATE = 48000
#: at least this many seconds between the first and the last frame received, each way
MIN_SPAN_S = 10.0


def _node() -> str:
    node = shutil.which("node")
    assert node is not None, "node is not installed (.ci/run installs nodejs and npm)"
    assert (WRTC / "node_modules" / "@roamhq" / "wrtc").is_dir(), (
        f"{WRTC}/node_modules is missing: run `npm ci --prefix {WRTC}` (`make test` does)"
    )
    return node


async def _run(*cmd: str, timeout: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _summary(rc: int, out: str, err: str) -> dict[str, Any]:
    assert out.strip(), f"the wrtc client printed no summary (rc {rc}); stderr:\n{err[-3000:]}"
    summary: dict[str, Any] = json.loads(out)
    assert summary["errors"] == [] and rc == 0, (summary["errors"], err[-3000:])
    return summary


async def test_libwebrtc_and_a_bot_exchange_audio_and_video(
    server: RunningServer, tmp_path: Path
) -> None:
    node = _node()
    bot_json = tmp_path / "bot.json"
    bot = asyncio.ensure_future(
        _run(
            *PARLEY, "bot", "--url", server.url, "--room", "wrtc", "--name", "bot",
            "--duration", str(BOT_S), "--fps", str(FPS), "--json", str(bot_json),
            timeout=BOT_S + 30,
        )
    )  # fmt: skip
    client = asyncio.ensure_future(
        _run(
            node, str(CLIENT), "--url", server.url, "--room", "wrtc", "--name", "wrtc",
            "--duration", str(CLIENT_S), "--fps", str(FPS), timeout=CLIENT_S + 30,
        )
    )  # fmt: skip
    seen: dict[str, Any] = {}

    async def watch() -> None:
        """What the server holds of the wrtc participant while it is in the room."""
        deadline = time.monotonic() + CLIENT_S - 0.5
        while time.monotonic() < deadline:
            room = server.sfu.rooms.get("wrtc")
            p = (
                next((p for p in room.participants.values() if p.name == "wrtc"), None)
                if room
                else None
            )
            if p is not None:
                seen.update(dict(p.counters), bwe=type(p.bwe).__name__)
            await asyncio.sleep(0.5)

    (bot_rc, _, bot_err), client_result, _ = await asyncio.gather(bot, client, watch())
    summary = _summary(*client_result)
    # the server's side: wrtc's RTP and RTCP all parsed, and its transport-cc feedback
    # (negotiated on the subscribe side) drives the send-side estimate of its downlink
    print(f"\nserver side of wrtc: {seen}")
    assert seen["rtp_in"] > 0 and seen["rtcp_in"] > 0, seen
    assert seen["rtp_malformed"] == 0 and seen["rtcp_malformed"] == 0, seen
    assert seen["bwe"] == SendSideEstimator.__name__ and seen["twcc_feedback"] > 30, seen

    # the server published both of wrtc's m-lines and answered as the DTLS server
    assert sorted(t["kind"] for t in summary["published_tracks"]) == ["audio", "video"]
    sdp = summary["sdp"]
    assert "a=setup:actpass" in sdp["publish_offer"]
    setups = {x for x in sdp["publish_answer"].splitlines() if x.startswith("a=setup:")}
    assert setups == {"a=setup:passive"}, setups

    # bot -> wrtc: video frames and audio samples out of wrtc's decoders, for over 10 s
    received, spans = summary["received"], summary["received_spans"]
    print(f"\nwrtc received {received} from the bot, spans {spans}; sent {summary['sent']}")
    print(f"wrtc getStats: {summary['stats']}")
    assert received.get("video_frames", 0) >= MIN_SPAN_S * FPS * 0.5, received
    assert received.get("audio_samples", 0) >= MIN_SPAN_S * SAMPLE_RATE * 0.5, received
    for key in ("video_frames", "audio_samples"):
        first, last = spans[key]
        assert last - first >= MIN_SPAN_S, (key, spans)
    assert summary["resolutions"] == [[320, 240]], summary["resolutions"]
    decoded = {s["kind"]: s.get("framesDecoded") for s in summary["stats"]["subscribe"]}
    assert decoded["video"] >= MIN_SPAN_S * FPS * 0.5, summary["stats"]

    # wrtc -> bot: the bot's summary of the tracks it decoded from "wrtc"
    bot_summary = json.loads(bot_json.read_text())
    tracks = {t["kind"]: t for t in bot_summary["tracks"] if t["participant_name"] == "wrtc"}
    print(
        "the bot decoded from wrtc: "
        + ", ".join(f"{k} {t['frames_decoded']} frames" for k, t in sorted(tracks.items()))
        + f"; verdict {bot_summary['verdict']}"
    )
    assert set(tracks) == {"audio", "video"}, bot_summary["tracks"]
    video, audio = tracks["video"], tracks["audio"]
    assert video["frames_decoded"] >= MIN_SPAN_S * FPS * 0.5, video
    assert audio["frames_decoded"] >= MIN_SPAN_S * 50 * 0.5, audio  # 20 ms Opus frames
    # decoded from at most 3 s in until the client left (at 13 s), without a long freeze
    assert video["first_frame_ms"] is not None and video["first_frame_ms"] < 3000, video
    assert video["max_freeze_ms"] < 2000, video
    assert video["resolutions"] == [[320, 240]], video
    # the bot's verdict: only timing under a busy machine may fail it (docs/bots.md)
    failed = {f["code"] for f in bot_summary["failed"]}
    assert failed <= {"freeze", "loss"}, (bot_summary["verdict"], bot_err[-2000:])
    assert bot_rc == (0 if not failed else 1)


async def test_libwebrtc_takes_a_reused_m_line(server: RunningServer) -> None:
    """Parley gives a later publisher's tracks the m-lines of one that left (inactive,
    then sendonly with a new SSRC; ``reuse_mlines`` defaults to true): libwebrtc
    receives the second publisher on the same two mids. Bot A publishes for 4 s and
    leaves, then bot B publishes for 6 s."""
    node = _node()
    client = asyncio.ensure_future(
        _run(
            node, str(CLIENT), "--url", server.url, "--room", "reuse", "--name", "wrtc",
            "--duration", "13", "--no-publish", timeout=45,
        )
    )  # fmt: skip
    await asyncio.sleep(0.5)
    for name, duration in (("a", 4), ("b", 6)):
        rc, _, err = await _run(
            *PARLEY, "bot", "--url", server.url, "--room", "reuse", "--name", name,
            "--duration", str(duration), timeout=duration + 30,
        )  # fmt: skip
        assert rc in (0, 1), err[-2000:]
    summary = _summary(*await client)
    by_mid, whose = summary["tracks_by_mid"], summary["received_by_participant"]
    print(f"\ntracks by mid {by_mid}\nreceived by participant {whose}")
    # the two m-lines carried A's tracks, then B's: reused, none added
    assert sorted(by_mid) == ["0", "1"], by_mid
    assert all(len(tracks) == 2 for tracks in by_mid.values()), by_mid
    a, b = (by_mid["0"][i]["participant"] for i in (0, 1))
    assert a != b and {t["participant"] for t in by_mid["1"]} == {a, b}
    # B publishes for about 5 s once its connection is up
    for who in (a, b):
        got = whose.get(who, {})
        assert got.get("video_frames", 0) >= 3 * FPS * 0.5, (who, whose)
        assert got.get("audio_samples", 0) >= 3 * SAMPLE_RATE * 0.5, (who, whose)
