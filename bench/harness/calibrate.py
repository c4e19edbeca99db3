"""``--calibrate``: the cost of the forwarding path's stages, measured in-process."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from harness.common import PACKET_SIZE


def _bench_packets(n: int, mid_ext_id: int = 1, mid: bytes = b"0", fpp: int = 10) -> list[bytes]:
    """``n`` packets exactly like the publisher's (PT 96, SSRC 0x1234)."""
    body = bytes(((mid_ext_id << 4) | (len(mid) - 1),)) + mid
    body += b"\x00" * (-len(body) % 4)
    ext = struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    body_len = PACKET_SIZE - 12 - len(ext) - 8
    key = b"\x10\x02\x00\x9d\x01\x2a" + (640).to_bytes(2, "little") + (360).to_bytes(2, "little")
    key_body = (key + bytes(range(256)) * 4)[:body_len]
    filler = b"\xa5" * body_len
    out = []
    for i in range(n):
        pos, pid = i % fpp, (i // fpp) & 0x7FFF
        first = pos == 0
        desc = bytes((0x90 if first else 0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF))
        header = struct.pack(
            "!BBHII",
            0x90,
            (0x80 if pos == fpp - 1 else 0) | 96,
            i & 0xFFFF,
            (i // fpp) * 3000,
            0x1234,
        )
        out.append(header + ext + desc + (key_body if first else filler) + i.to_bytes(4, "big"))
    return out


def calibrate(n: int = 20000) -> dict[str, float]:
    """Per-packet cost of each step of the SFU's path, in isolation (µs, best of 3).

    No event loop, no wake-ups: a floor for what the same work costs in the server.
    """
    import pylibsrtp
    from aiortc.rtcdtlstransport import SRTP_AEAD_AES_256_GCM

    from sfu.forwarder import EgressParams, Forwarder
    from sfu.rtp.extensions import ABS_SEND_TIME_URI
    from sfu.rtp.extensions import MID_URI as FWD_MID_URI
    from sfu.rtp.packet import RtpView, Vp8Descriptor
    from sfu.source import Source, SourceParams

    policy = pylibsrtp.Policy
    key = os.urandom(SRTP_AEAD_AES_256_GCM.key_length + SRTP_AEAD_AES_256_GCM.salt_length)

    def session(direction: int) -> Any:
        return pylibsrtp.Session(
            policy(key=key, ssrc_type=direction, srtp_profile=policy.SRTP_PROFILE_AEAD_AES_256_GCM)
        )

    packets = _bench_packets(n)

    class Owner:
        def request_keyframe(self, source: Any) -> None:
            pass

        def source_has_missing(self, source: Any) -> None:
            pass

        def keyframe_deferred(self, source: Any, at: float) -> None:
            pass

    class Sink:  # sfu.forwarder.PacketSink; nothing is sent
        def send_rtp(self, data: bytes) -> bool:
            return True

        def send_rtp_twice(self, data: bytes) -> bool:
            return True

        def send_video(self, data: bytes, now: float) -> bool:
            return True

        def room_for_frame(self) -> bool:
            return True

        def layer_changed(self, forwarder: Any) -> None:
            pass

        def frame_dropped(self, forwarder: Any, now: float) -> None:
            pass

    def best(fn: Callable[[], None], count: int = n) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(1e6 * min(times) / count, 2)

    out: dict[str, float] = {}
    tx = session(policy.SSRC_ANY_OUTBOUND)
    protected = [tx.protect(p) for p in packets]

    def protect() -> None:
        s = session(policy.SSRC_ANY_OUTBOUND)
        for p in packets:
            s.protect(p)

    def unprotect() -> None:
        s = session(policy.SSRC_ANY_INBOUND)
        for p in protected:
            s.unprotect(p)

    def parse() -> None:
        for p in packets:
            v = RtpView(p)
            Vp8Descriptor(p, v.payload_start, v.payload_end)

    params = SourceParams(
        track_id="t", kind="video", codec="vp8", clock_rate=90000, payload_type=96, ssrc=0x1234
    )

    def ingress() -> None:  # parse + Source.on_rtp with no forwarder
        source = Source(params, Owner())
        for i, p in enumerate(packets):
            source.on_rtp(RtpView(p), i * 0.0002)

    views = [RtpView(p) for p in packets]
    vp8s = [
        Vp8Descriptor(p, v.payload_start, v.payload_end)
        for p, v in zip(packets, views, strict=True)
    ]

    def rewrite() -> None:  # one Forwarder.forward (header/descriptor rewrite, extensions)
        source = Source(params, Owner())
        fwd = Forwarder([source], Sink(), "s")
        fwd.configure(
            EgressParams(
                mid="0",
                payload_type=96,
                ssrc=0x5678,
                rtx_payload_type=97,
                rtx_ssrc=0x9ABC,
                extensions={FWD_MID_URI: 1, ABS_SEND_TIME_URI: 3},
            )
        )
        fwd.start(0.0)  # the m-line is negotiated: forward the only layer
        for i, (v, d) in enumerate(zip(views, vp8s, strict=True)):
            fwd.forward(source, v, d, i * 0.0002)

    out["SRTP protect (AES-256-GCM)"] = best(protect)
    out["SRTP unprotect (AES-256-GCM)"] = best(unprotect)
    out["parse RTP header + VP8 descriptor"] = best(parse)
    out["ingress: parse + Source.on_rtp (no forwarder)"] = best(ingress)
    out["Forwarder.forward (rewrite, no send)"] = best(rewrite)

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        addr = rx.getsockname()

        def sendto() -> None:
            for j in range(0, n, 32):
                for p in protected[j : j + 32]:
                    tx_sock.sendto(p, addr)
                while True:
                    try:
                        rx.recv(4096)
                    except BlockingIOError:
                        break

        with_drain = best(sendto)
        out["loopback sendto + recv (same thread, no wake-up)"] = with_drain
    finally:
        rx.close()
        tx_sock.close()
    return out


# --------------------------------------------------------------- reporting
