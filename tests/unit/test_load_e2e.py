"""``parley load --e2e``: the capture-time stamp, frame assembly and decoding (no network)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from loadgen.load.e2e import (
    UNIT_NS,
    FrameAssembler,
    FrameDecoder,
    LiveEncoder,
    draw_timestamp,
    elapsed_ms,
    read_timestamp,
    timestamp_units,
)
from loadgen.load.metrics import Tag, TrackRx, parse_tag, stream_id
from loadgen.media.prepared import OutStream
from loadgen.media.simulcast import LayerSpec


def test_timestamp_round_trip_and_wrap() -> None:
    luma = np.zeros((180, 320), dtype=np.uint8)
    for units in (0, 1, 0xFFFF, 0x10000, 0xDEADBEEF, 2**32 - 1):
        draw_timestamp(luma, units)
        assert read_timestamp(luma) == units
    with pytest.raises(ValueError):
        read_timestamp(np.full((180, 320), 128, dtype=np.uint8))
    now = 10**15
    assert elapsed_ms(timestamp_units(now - 25 * 1_000_000), now) == pytest.approx(25.0)
    # across the 2**32 wrap of the drawn value
    drawn = 2**32 - 10
    later = (drawn + 30) * UNIT_NS
    assert elapsed_ms(drawn, later) == pytest.approx(3.0)


def _packets(frame: bytes, stream: OutStream) -> list[bytes]:
    return [
        stream.packet(payload, 0, marker, flags, time.monotonic_ns())
        for payload, marker, flags in stream.frame_payloads(frame)
    ]


def test_live_frames_survive_packetization_assembly_and_decoding() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        encoder = LiveEncoder([LayerSpec("q", 320, 180, 300_000)], fps=15)
        try:
            frames = []
            for n in range(3):
                encoded, capture = await encoder.encode(n, n * 6000, [n == 0])
                frames += encoded
            return frames, capture
        finally:
            await encoder.close()

    frames, capture_ns = asyncio.run(scenario())
    recorded: list[float] = []
    decoder = FrameDecoder(recorded.append)
    stream = OutStream(
        stream=stream_id(0, 1), video=True, ssrc=1, payload_type=96, clock_rate=90_000
    )
    assembler = FrameAssembler()
    track = TrackRx(video=True)
    key = (0, "video")
    try:
        for frame in frames:
            for packet in _packets(frame, stream):
                tag = parse_tag(packet)
                assert isinstance(tag, Tag)
                assembler.on_packet(key, packet, tag)
                if track.on_packet(tag, 0.0):
                    assembled = assembler.take(key)
                    assert assembled == frame
                    decoder.submit(key, assembled)
    finally:
        decoder.close()
    assert decoder.decoded == 3 and decoder.unreadable == 0 and decoder.errors == 0
    assert len(recorded) == 3
    # the last frame's latency: from its capture until just now, at most
    assert 0 <= recorded[-1] <= (time.monotonic_ns() - capture_ns) / 1e6 + 0.2
