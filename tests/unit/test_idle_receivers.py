"""Idle aiortc receivers (Parley reads the packets itself) drop aiortc's REMB estimator
and NACK generator: ``release_receiver_state`` in sfu/aiortc_adapter/rtp_params.py."""

from __future__ import annotations

import asyncio
import gc

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rate import RemoteBitrateEstimator

from sfu.aiortc_adapter import release_receiver_state


def estimators() -> int:
    return sum(isinstance(o, RemoteBitrateEstimator) for o in gc.get_objects())


def test_send_only_video_transceivers_keep_no_estimator() -> None:
    async def run() -> tuple[int, int, int]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            before = estimators()
            transceivers = [pc.addTransceiver("video", direction="sendonly") for _ in range(3)]
            pc.addTransceiver("audio", direction="sendonly")
            made = estimators() - before
            for t in transceivers:
                release_receiver_state(t.receiver)
            return before, made, estimators() - before
        finally:
            await pc.close()

    gc.collect()  # estimators of earlier tests' connections must not go in between
    gc.disable()
    try:
        _, made, left = asyncio.run(run())
    finally:
        gc.enable()
    assert made == 3  # aiortc makes one per video receiver (audio: none)
    assert left == 0
