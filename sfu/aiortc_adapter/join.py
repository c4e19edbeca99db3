"""Join-time hooks (issue 18, *Join*; part of the aiortc adapter: private API).

* :class:`MarkerJitterBuffer`: aiortc's video jitter buffer hands a frame to the
  decoder only when the first packet of the *next* frame arrives, one frame interval
  (67 ms at 15 fps) after the frame was complete. A receiver that decodes (the bot)
  installs this one with :func:`release_frames_on_marker`: a frame whose packets are
  all there, from the buffer's origin up to a packet with the RTP marker bit, is
  released at once, as a browser's receiver does. Out of that case it behaves exactly
  like aiortc's.
* :func:`connect_without_idle_pacing`: aioice's ICE ``connect()`` without the idle
  20 ms it sleeps after the last check was answered (every peer connection, both
  sides: about 20 ms of each join's two connections).
"""

from __future__ import annotations

import asyncio
import contextlib

from aioice import ice as aioice_ice
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
    if not isinstance(current, JitterBuffer) or not current._is_video:
        return False
    if not isinstance(current, MarkerJitterBuffer):
        setattr(receiver, attribute, MarkerJitterBuffer(capacity=current.capacity, is_video=True))
    return True


#: aioice paces connectivity checks by this much (s; RFC 8445's Ta, 20 ms): its
#: ``connect()`` sleeps this long after starting the last check before it looks at the
#: result, so even a check answered in 0.2 ms on loopback connects 20 ms late.
CHECK_PACING = 0.02


class _WakingQueue(asyncio.Queue[int]):
    """aioice's check-list state queue, which also wakes the paced check loop."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def put_nowait(self, item: int) -> None:
        super().put_nowait(item)
        self.changed.set()


def connect_without_idle_pacing(connection: aioice_ice.Connection) -> None:
    """``connection.connect()`` as aioice 0.13 does it, except that the pause between
    two checks (``CHECK_PACING``) ends as soon as the check list completes or fails,
    so ICE reports connected when the nominating check is answered. Checks are still
    started no faster than one per ``CHECK_PACING``."""
    state = _WakingQueue()
    connection._check_list_state = state

    async def connect() -> None:
        c = connection
        if not c._local_candidates_end:
            raise ConnectionError("Local candidates gathering was not performed")
        if c.remote_username is None or c.remote_password is None:
            raise ConnectionError("Remote username or password is missing")
        for remote_candidate in c._remote_candidates:
            c._pair_remote_candidate(remote_candidate)
        c.sort_check_list()
        c._unfreeze_initial()
        for early_check in c._early_checks:
            c.check_incoming(*early_check)
        c._early_checks.clear()
        c._early_checks_done = True
        while not c._check_list_done and c._check_periodic():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.changed.wait(), CHECK_PACING)
        res = await state.get() if c._check_list else aioice_ice.ICE_FAILED
        for check in c._check_list:
            if check.task:
                check.task.cancel()
        if res != aioice_ice.ICE_COMPLETED:
            raise ConnectionError("ICE negotiation failed")
        c._query_consent_task = asyncio.create_task(c.query_consent())

    connection.connect = connect  # type: ignore[method-assign]
