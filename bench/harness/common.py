"""What the forwarding benchmark's processes share: paths, constants, the JSON-lines
channel to the orchestrator (:func:`emit_json`) and the log (:func:`log_stderr`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: The script every process of the benchmark runs (workers with ``--worker``).
BENCH_SCRIPT = REPO / "bench" / "forwarding.py"

PACKET_SIZE = 1000
SERVER_CPU = 0
CLIENT_CPU = 1
SRTP_PROFILE_NAMES = {
    "aes256gcm": b"SRTP_AEAD_AES_256_GCM",
    "aes128gcm": b"SRTP_AEAD_AES_128_GCM",
    "aes128cm": b"SRTP_AES128_CM_SHA1_80",
}
TARGETS = (
    "parley",
    "parley-py",
    "parley-pyingress",
    "parley-nosendmmsg",
    "parley-norecvmmsg",
    "janus",
)
#: parley-py: Parley with PARLEY_NATIVE=0, its forwarding loop in Python instead of C
#: parley-pyingress: Parley with PARLEY_NATIVE_INGRESS=0: the C forwarding loop, the
#: publisher's ingress in Python (as before sfu/_ingress.c)
#: parley-nosendmmsg: PARLEY_SENDMMSG=0, one sendto per forwarded packet (no SendBatch)
#: parley-norecvmmsg: PARLEY_RECVMMSG=0, the batch readers' recvfrom loop (and no
#: sendmmsg either): the server as it was before batching
#: Environment of the server per Parley variant.
SERVER_ENV = {
    "parley-py": {"PARLEY_NATIVE": "0"},
    "parley-pyingress": {"PARLEY_NATIVE_INGRESS": "0"},
    "parley-nosendmmsg": {"PARLEY_SENDMMSG": "0"},
    "parley-norecvmmsg": {"PARLEY_RECVMMSG": "0"},
}
#: The VideoRoom room the bench creates in Janus (request ``create``). No bitrate cap
#: (no REMB limit to the publisher), no periodic keyframe requests, no simulcast, no
#: recording, none of the optional header extensions a browser would use; VP8 only.
JANUS_ROOM: dict[str, Any] = {
    "publishers": 4,
    "bitrate": 0,
    "bitrate_cap": False,
    "fir_freq": 0,
    "videocodec": "vp8",
    "audiocodec": "opus",
    "notify_joining": False,
    "audiolevel_ext": False,
    "audiolevel_event": False,
    "videoorient_ext": False,
    "playoutdelay_ext": False,
    "transport_wide_cc_ext": False,
    "record": False,
}


def emit_json(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def log_stderr(text: str) -> None:
    sys.stderr.write(f"[{os.getpid()}] {text}\n")
    sys.stderr.flush()
