"""Small fakes and packet builders for the packet-level unit tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sfu.forwarder import Forwarder
from sfu.rtp.packet import RtpView, build_extension_block, build_rtp_header
from sfu.source import Source


class RecordingSink:
    """A :class:`sfu.forwarder.PacketSink` that keeps every packet it is given.

    ``accept`` decides what ``send_rtp`` returns (False simulates a transport that is
    not ready); refused packets are kept in ``refused``.
    """

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.packets: list[bytes] = []
        self.refused: list[bytes] = []
        #: (current, target) of the forwarder at each ``layer_changed``
        self.layers: list[tuple[Source | None, Source | None]] = []
        #: what ``room_for_frame`` answers (False: the pacer's queue is full)
        self.room = True
        self.frames_dropped: list[float] = []

    def send_rtp(self, data: bytes) -> bool:
        if not self.accept:
            self.refused.append(data)
            return False
        self.packets.append(data)
        return True

    def send_rtp_twice(self, data: bytes) -> bool:
        ok = self.send_rtp(data)
        if ok:
            self.packets.append(data)
        return ok

    def layer_changed(self, forwarder: Forwarder) -> None:
        self.layers.append((forwarder.current, forwarder.target))

    def send_video(self, data: bytes, now: float) -> bool:
        return self.send_rtp(data)

    def room_for_frame(self) -> bool:
        return self.room

    def frame_dropped(self, forwarder: Forwarder, now: float) -> None:
        self.frames_dropped.append(now)

    def views(self) -> list[RtpView]:
        return [RtpView(p) for p in self.packets]

    def clear(self) -> None:
        self.packets.clear()
        self.refused.clear()


class RecordingOwner:
    """A :class:`sfu.source.SourceOwner` that records the calls it gets."""

    def __init__(self) -> None:
        self.keyframe_requests: list[Source] = []
        self.missing_calls: list[Source] = []
        self.deferred: list[tuple[Source, float]] = []

    def keyframe_deferred(self, source: Source, at: float) -> None:
        self.deferred.append((source, at))

    def request_keyframe(self, source: Source) -> None:
        self.keyframe_requests.append(source)

    def source_has_missing(self, source: Source) -> None:
        self.missing_calls.append(source)


def rtp(
    seq: int,
    ts: int = 0,
    ssrc: int = 0x11111111,
    pt: int = 96,
    payload: bytes = b"\x00payload",
    marker: int = 0,
    extensions: list[tuple[int, bytes]] | None = None,
    padding: int = 0,
) -> bytes:
    """One RTP packet; ``padding`` > 0 appends that many padding bytes and sets P."""
    data = build_rtp_header(
        marker, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, build_extension_block(extensions or [])
    )
    data += payload
    if padding:
        data = bytes((data[0] | 0x20,)) + data[1:] + b"\x00" * (padding - 1) + bytes((padding,))
    return data


def vp8_payload(
    keyframe: bool = False,
    start: bool = True,
    picture_id: int | None = None,
    pid_bits: int = 15,
    tl0picidx: int | None = None,
    tid: int | None = None,
    body: bytes = b"vp8-frame-data",
    width: int = 640,
    height: int = 360,
) -> bytes:
    """A VP8 RTP payload: descriptor (RFC 7741) plus the start of a frame."""
    b0 = 0x10 if start else 0x00
    x = 0
    tail = b""
    if picture_id is not None:
        x |= 0x80
        if pid_bits == 7:
            tail += bytes((picture_id & 0x7F,))
        else:
            tail += bytes((0x80 | ((picture_id >> 8) & 0x7F), picture_id & 0xFF))
    if tl0picidx is not None:
        x |= 0x40
        tail += bytes((tl0picidx & 0xFF,))
    if tid is not None:
        x |= 0x20
        tail += bytes(((tid & 3) << 6,))
    desc = bytes((b0 | 0x80, x)) + tail if x else bytes((b0,))
    if keyframe:
        # frame tag (P bit clear), start code, 14-bit width and height
        frame = (
            b"\x50\x02\x00\x9d\x01\x2a" + width.to_bytes(2, "little") + height.to_bytes(2, "little")
        )
    else:
        frame = b"\x51\x02\x00"  # P bit set: interframe
    return desc + frame + body


def load_capture(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a ``.jsonl`` capture; each record gets ``data`` (the bytes)."""
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    records = []
    for line in lines[1:]:
        record = json.loads(line)
        record["data"] = bytes.fromhex(record["hex"])
        records.append(record)
    return header, records


class FakeTimer:
    """A timer of :class:`FakeClock` (``sfu.ports.Timer``)."""

    def __init__(self, when: float, callback: Any) -> None:
        self._when = when
        self.callback = callback
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def when(self) -> float:
        return self._when


class FakeClock:
    """An ``sfu.ports.Clock`` whose time moves only when told (:meth:`advance`)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any, /) -> FakeTimer:
        return self.call_at(self.now + delay, callback)

    def call_at(self, when: float, callback: Any, /) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled()]

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, running every timer that falls due, in order."""
        end = self.now + seconds
        while True:
            due = sorted(
                (t for t in self.timers if not t.cancelled() and t.when() <= end),
                key=FakeTimer.when,
            )
            if not due:
                break
            timer = due[0]
            self.timers.remove(timer)
            self.now = max(self.now, timer.when())
            timer.callback()
        self.now = end


class FakePort:
    """A ``MediaPort`` stand-in: keeps what is sent (RTCP and RTP alike)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.egress = None
        self.tx_errors = 0
        self.remote_address = "127.0.0.1"
        self.closed = False

    def send(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    def send_rtp(self, data: bytes) -> bool:
        return self.send(data)

    def send_rtp_twice(self, data: bytes) -> bool:
        self.sent.append(data)
        return self.send(data)

    def close(self) -> None:
        self.closed = True
