"""Join-time hooks (issue 18, *Join*; part of the aiortc adapter: private API).

* :class:`MarkerJitterBuffer`: aiortc's video jitter buffer hands a frame to the
  decoder only when the first packet of the *next* frame arrives, one frame interval
  (67 ms at 15 fps) after the frame was complete. A receiver that decodes (the bot)
  installs this one with :func:`release_frames_on_marker`: a frame whose packets are
  all there, from the buffer's origin up to a packet with the RTP marker bit, is
  released at once, as a browser's receiver does. Out of that case it behaves exactly
  like aiortc's.
"""

from __future__ import annotations

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's :class:`JitterBuffer` that also releases a frame on its marker packet."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is None and packet.marker:
            frame = self._complete_frame(packet)
        return pli, frame

    def _complete_frame(self, last: RtpPacket) -> JitterFrame | None:
        """The frame ending at ``last`` when every packet from the origin up to it is
        there and has its timestamp; those packets leave the buffer."""
        origin = self._origin
        if origin is None:
            return None
        count = uint16_add(last.sequence_number, -origin) + 1
        if count > self._capacity:
            return None
        packets: list[RtpPacket] = []
        for i in range(count):
            packet = self._packets[(origin + i) % self._capacity]
            if packet is None or packet.timestamp != last.timestamp:
                return None
            packets.append(packet)
        frame = JitterFrame(
            data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
            timestamp=last.timestamp,
        )
        self.remove(count)
        return frame


def release_frames_on_marker(receiver: RTCRtpReceiver) -> bool:
    """Give a video ``receiver`` a :class:`MarkerJitterBuffer` (before its first packet);
    False when it is not a video receiver (audio keeps aiortc's)."""
    attribute = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, attribute, None)
    if receiver.track is None or receiver.track.kind != "video" or current is None:
        return False
    if not isinstance(current, MarkerJitterBuffer):
        setattr(receiver, attribute, MarkerJitterBuffer(capacity=current.capacity, is_video=True))
    return True
