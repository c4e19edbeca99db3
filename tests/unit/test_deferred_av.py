"""aiortc without PyAV (sfu/aiortc_adapter/deferred_av.py): the adapter imported first
leaves ``av`` unloaded, and aiortc's media and codecs still work on real PyAV frames once
something uses them. Each case runs in a fresh interpreter (imports are process-wide)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_server_imports_leave_pyav_unloaded() -> None:
    out = run(
        "import sys\n"
        "import sfu.aiortc_adapter, sfu.room, signaling.server\n"
        "print(sorted(m for m in sys.modules if m == 'av' or m.startswith('av.')))\n"
        "from sfu.aiortc_adapter.deferred_av import is_deferred\n"
        "import aiortc.mediastreams as ms\n"
        "print(is_deferred(ms.VideoFrame))\n"
    )
    assert out.splitlines() == ["[]", "True"]


def test_aiortc_codes_real_frames_after_deferral() -> None:
    out = run(
        "import asyncio, sys\n"
        "import sfu.aiortc_adapter\n"
        "from aiortc.codecs import CODECS, depayload, get_decoder, get_encoder\n"
        "from aiortc.jitterbuffer import JitterFrame\n"
        "from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack\n"
        "from aiortc.rtcrtpsender import AudioFrame, Frame\n"
        "vp8 = next(c for c in CODECS['video'] if c.mimeType == 'video/VP8')\n"
        "encoder = get_encoder(vp8)\n"
        "print('av' in sys.modules)\n"
        "async def frames():\n"
        "    return await VideoStreamTrack().recv(), await AudioStreamTrack().recv()\n"
        "video, audio = asyncio.run(frames())\n"
        "import av\n"
        "print(type(video) is av.VideoFrame, isinstance(video, Frame),\n"
        "      isinstance(audio, AudioFrame), isinstance(video, AudioFrame))\n"
        "payloads, ts = encoder.encode(video)\n"
        "data = b''.join(depayload(vp8, p) for p in payloads)\n"
        "decoded = get_decoder(vp8).decode(JitterFrame(data=data, timestamp=ts))\n"
        "print(type(decoded[0]) is av.VideoFrame, decoded[0].width)\n"
        "import aiortc.rtcrtpreceiver as receiver\n"
        "print(receiver.av.FFmpegError is av.FFmpegError)\n"
    )
    assert out.splitlines() == ["False", "True True True False", "True 640", "True"]


def test_pyav_loaded_first_is_left_alone() -> None:
    out = run(
        "import av\n"
        "import sfu.aiortc_adapter\n"
        "import aiortc.mediastreams as ms\n"
        "print(ms.VideoFrame is av.VideoFrame)\n"
    )
    assert out == "True"
