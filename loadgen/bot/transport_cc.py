"""Transport-cc feedback of ``parley bot``'s subscribe connection.

Parley offers transport-wide congestion control on every subscribe offer; aiortc's
answer drops it, so a plain aiortc subscriber leaves the SFU with its REMB estimator
(``sfu/bwe.py``). The bot keeps the lines in its answer (``sfu.sdp.keep_transport_cc``),
which gets it the send-side estimator (``sfu/gcc/``), and then owes the feedback: it
sees every decrypted RTP packet before aiortc does (``sfu.aiortc_adapter.ReceiveTap``;
aiortc still gets and decodes each one), records the arrival (the kernel's receive time,
``sfu/aiortc_adapter/arrival_stamps.py``) of those carrying the
transport-wide sequence number (``loadgen/media/twcc.py``) and sends a feedback packet
every :data:`~loadgen.media.twcc.FEEDBACK_INTERVAL` on the same transport.
``parley bot --no-transport-cc`` answers as aiortc does (REMB only).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiortc import RTCPeerConnection

from loadgen.media.twcc import FEEDBACK_INTERVAL, TransportCcRecorder
from sfu.aiortc_adapter import ReceiveTap
from sfu.sdp import answer_transport_cc, keep_transport_cc


class SubscribeTransportCc:
    """Transport-cc of one subscribe peer connection (a reconnect makes a new one)."""

    def __init__(self, pc: RTCPeerConnection, own_ssrc: int) -> None:
        self._pc = pc
        self.recorder = TransportCcRecorder(own_ssrc)
        #: the negotiated extension id (None: not negotiated, yet or at all)
        self.ext_id: int | None = None
        self._tap: ReceiveTap | None = None
        self._task: asyncio.Task[None] | None = None
        self.feedback_sent = 0
        self.feedback_failed = 0

    def answer(self, offer_sdp: str, answer_sdp: str) -> str:
        """The answer to send for ``offer_sdp``: aiortc's, with transport-cc kept when
        the offer has it. Call after ``setLocalDescription`` (the transport exists)."""
        munged = keep_transport_cc(answer_sdp, offer_sdp)
        ext_id = answer_transport_cc(munged)
        if ext_id is None:
            return answer_sdp
        self.ext_id = ext_id
        if self._tap is None:
            transceivers = self._pc.getTransceivers()
            if not transceivers:
                return answer_sdp
            dtls = transceivers[0].receiver.transport  # BUNDLE: one for all
            # arrival times as the kernel saw them, not when this busy process got to
            # them (as libwebrtc stamps): sfu/aiortc_adapter/arrival_stamps.py
            self._tap = ReceiveTap(dtls, self._on_rtp, kernel_arrivals=True)
            self._task = asyncio.ensure_future(self._send_feedback())
        return munged

    def _on_rtp(self, data: bytes, now: float) -> None:
        if self.ext_id is not None:
            self.recorder.on_rtp(data, self.ext_id, now)

    async def _send_feedback(self) -> None:
        tap = self._tap
        assert tap is not None
        while True:
            await asyncio.sleep(FEEDBACK_INTERVAL)
            for packet in self.recorder.feedback():
                if await tap.send_rtcp(packet):
                    self.feedback_sent += 1
                else:
                    self.feedback_failed += 1

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tap is not None:
            self._tap.close()

    def summary(self) -> dict[str, Any]:
        tap = self._tap
        return {
            "negotiated": self.ext_id is not None,
            "packets_recorded": self.recorder.packets_recorded,
            "feedback_sent": self.feedback_sent,
            "feedback_failed": self.feedback_failed,
            # packets stamped with the kernel's receive time / with the loop's time
            "kernel_stamped": tap.arrivals.stamped if tap and tap.arrivals else 0,
            "loop_stamped": tap.arrivals.unstamped if tap and tap.arrivals else 0,
            "tap_errors": 0 if tap is None else tap.errors,
        }
