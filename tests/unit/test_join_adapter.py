"""sfu.aiortc_adapter.join: video frames released on their marker packet (the bot)."""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from sfu.aiortc_adapter import MarkerJitterBuffer, release_frames_on_marker


def packet(seq: int, ts: int, data: bytes, marker: bool = False) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
    p._data = data  # type: ignore[attr-defined]  # what aiortc's depayloader sets
    return p


def test_a_complete_frame_is_released_on_its_marker_packet() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(10, 3000, b"ab")) == (False, None)
    pli, frame = buffer.add(packet(11, 3000, b"cd", marker=True))
    assert not pli and frame is not None
    assert frame.data == b"abcd" and frame.timestamp == 3000
    # the next frame starts cleanly: its first packet does not release anything again
    assert buffer.add(packet(12, 6000, b"ef")) == (False, None)
    pli, frame = buffer.add(packet(13, 6000, b"gh", marker=True))
    assert frame is not None and frame.data == b"efgh"


def test_a_frame_with_a_missing_packet_is_not_released_early() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    buffer.add(packet(20, 3000, b"a"))
    assert buffer.add(packet(22, 3000, b"c", marker=True)) == (False, None)  # 21 missing
    _, frame = buffer.add(packet(21, 3000, b"b"))  # the gap filled: complete now
    assert frame is None  # (not a marker packet: released as aiortc would, below)
    _, frame = buffer.add(packet(23, 6000, b"d"))
    assert frame is not None and frame.data == b"abc"


def test_without_markers_it_releases_exactly_what_aiortc_releases() -> None:
    ours, theirs = MarkerJitterBuffer(capacity=64, is_video=True), JitterBuffer(64, is_video=True)
    stream = [(100 + i, 3000 * (i // 3), bytes([i])) for i in range(40)]
    stream[7], stream[8] = stream[8], stream[7]  # reordered
    del stream[20]  # lost
    for seq, ts, data in stream:
        a, b = ours.add(packet(seq, ts, data)), theirs.add(packet(seq, ts, data))
        assert a[0] == b[0]
        assert (a[1] and (a[1].data, a[1].timestamp)) == (b[1] and (b[1].data, b[1].timestamp))


async def test_only_video_receivers_get_the_marker_buffer() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        video = pc.addTransceiver("video", direction="recvonly").receiver
        audio = pc.addTransceiver("audio", direction="recvonly").receiver
        assert release_frames_on_marker(video)
        assert not release_frames_on_marker(audio)
        assert isinstance(video._RTCRtpReceiver__jitter_buffer, MarkerJitterBuffer)  # type: ignore[attr-defined]
        assert not isinstance(audio._RTCRtpReceiver__jitter_buffer, MarkerJitterBuffer)  # type: ignore[attr-defined]
        assert release_frames_on_marker(video)  # idempotent
    finally:
        await pc.close()
