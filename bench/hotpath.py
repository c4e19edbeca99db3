"""Micro-benchmark of the forwarding hot path, stage by stage, in one process.

No peer connections: real SRTP sessions (pylibsrtp, AEAD_AES_256_GCM), a real UDP
socket on 127.0.0.1, and Parley's own Source/Forwarder code. It answers "where does
the time go per incoming packet" without the noise of ICE/DTLS and other processes.
Each fan-out runs three times: the C ingress and the native loop (``sfu/_ingress.c``'s
``Ingress.receive`` feeding ``sfu/_native.c``, forwarders with an ``Egress``, as in the
server), the Python ingress and the native loop (as with ``PARLEY_NATIVE_INGRESS=0``),
and the Python path all through (no ``Egress``, no ``Ingress``). Fan-out 0 measures the
ingress alone.

    python bench/hotpath.py --packets 50000 --fanouts 1,4,16 --json bench/results/hotpath.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path

from pylibsrtp import Policy, Session

from sfu import native
from sfu.aiortc_adapter import make_egress, make_ingress
from sfu.forwarder import EgressParams, Forwarder
from sfu.pacer import Pacer
from sfu.rtp.extensions import ABS_SEND_TIME_URI, MID_URI
from sfu.rtp.packet import RtpView, Vp8Descriptor
from sfu.source import Source, SourceParams

PROFILE = Policy.SRTP_PROFILE_AEAD_AES_256_GCM
KEY = bytes(range(44))  # 32-byte key + 12-byte salt
SSRC = 0x01020304


class _Owner:
    def request_keyframe(self, source: Source) -> None:
        pass

    def source_has_missing(self, source: Source) -> None:
        pass

    def keyframe_deferred(self, source: Source, at: float) -> None:
        pass


class _UdpSink:
    """Protect and sendto, as the subscriber's MediaPort does."""

    def __init__(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        policy = Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE)
        policy.allow_repeat_tx = True
        self._session = Session(policy)
        self._sock = sock
        self._addr = addr

    def send_rtp(self, data: bytes) -> bool:
        self._sock.sendto(self._session.protect(data), self._addr)
        return True

    def send_rtp_twice(self, data: bytes) -> bool:
        return self.send_rtp(data) and self.send_rtp(data)

    def send_video(self, data: bytes, now: float) -> bool:
        return self.send_rtp(data)  # no cap: the pacer is inactive, as in the benchmark

    def room_for_frame(self) -> bool:
        return True

    def layer_changed(self, forwarder: Forwarder) -> None:
        pass

    def frame_dropped(self, forwarder: Forwarder, now: float) -> None:
        pass


def make_packets(count: int, size: int) -> list[bytes]:
    """VP8 packets of ``size`` bytes, 10 per frame, every frame a keyframe start."""
    out = []
    seq, ts, pid = 1000, 5000, 100
    for i in range(count):
        start = i % 10 == 0
        if start:
            pid = (pid + 1) & 0x7FFF
            ts = (ts + 3000) & 0xFFFFFFFF
        header = bytes([0x90, 96 | (0x80 if i % 10 == 9 else 0)])
        header += seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + SSRC.to_bytes(4, "big")
        ext = b"\xbe\xde\x00\x01" + bytes([0x22, 1, 2, 3])  # abs-send-time, id 2
        desc = bytes([0x90 if start else 0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF])
        vp8 = b"\x10\x02\x00\x9d\x01\x2a\x80\x02\xe0\x01" if start else b"\x11\x00\x00"
        body = header + ext + desc + vp8
        out.append(body + bytes(size - 16 - len(body)))  # 16 = GCM tag
        seq = (seq + 1) & 0xFFFF
    return out


def per_packet_us(fn: Callable[[bytes], object], packets: list[bytes]) -> float:
    start = time.perf_counter()
    for p in packets:
        fn(p)
    return (time.perf_counter() - start) / len(packets) * 1e6


def run_fanout(
    k: int,
    path_name: str,
    protected: list[bytes],
    rx_policy: Policy,
    send_sock: socket.socket,
    addr: tuple[str, int],
    drain: Callable[[], None],
    args: argparse.Namespace,
) -> float:
    """µs per incoming packet through ingest + K forwarders (``path_name``: ingress, native
    or python)."""
    params = SourceParams(
        track_id="t", kind="video", codec="vp8", clock_rate=90000, payload_type=96, ssrc=SSRC
    )
    source = Source(params, _Owner(), cache_size=1024)
    egresses = []
    forwarders: list[Forwarder] = []
    for i in range(k):
        f = Forwarder([source], _UdpSink(send_sock, addr), f"s{i}")
        forwarders.append(f)
        f.configure(
            EgressParams(
                mid=str(i),
                payload_type=97,
                ssrc=1000 + i,
                rtx_payload_type=98,
                rtx_ssrc=2000 + i,
                extensions={
                    MID_URI: 1,
                    ABS_SEND_TIME_URI: 3,
                },
            )
        )
        if path_name != "python":  # as Participant wires it
            policy = Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE)
            f.egress = make_egress(Session(policy), addr, send_sock)
            f.pacer = Pacer()
            egresses.append(f.egress)
        f.start(0.0)

    clock = [0.0]
    unprotect = Session(rx_policy).unprotect

    def ingest_one(data: bytes) -> None:
        clock[0] += 0.0002
        source.on_rtp(RtpView(unprotect(data)), clock[0])

    ingress = None
    if path_name == "ingress":  # as MediaPort wires it for a publish transport
        ingress = make_ingress(
            Session(rx_policy), {SSRC: source}, {"rtp_in": 0}, lambda p, now: ingest_one(p)
        )
        receive = ingress.receive

        def ingest_one_c(data: bytes) -> None:
            clock[0] += 0.0002
            receive(data, clock[0])

    n = max(2000, args.packets // max(k, 1))
    total = 0.0
    done = 0
    for chunk in range(0, n, 2000):
        batch = protected[chunk : chunk + 2000]
        total += per_packet_us(ingest_one_c if ingress else ingest_one, batch) * len(batch)
        done += len(batch)
        drain()
    sent = sum(f.packets_sent for f in forwarders)
    natively = sum(f.native_packets for f in forwarders)
    if sent != k * done:  # every packet reaches every forwarder
        raise SystemExit(f"fan-out {k}: {sent} packets sent, expected {k * done}")
    if path_name != "python" and natively < sent * 0.8:
        raise SystemExit(f"native path served only {natively} of {sent} packets")
    if ingress is not None and ingress.native_packets < done * 0.99:
        raise SystemExit(f"the C ingress took only {ingress.native_packets} of {done} packets")
    source.close()
    for e in egresses:
        e.close()
    return total / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1000, help="SRTP packet size in bytes")
    parser.add_argument("--fanouts", default="1,4,16")
    parser.add_argument("--json", default="bench/results/hotpath.json")
    args = parser.parse_args()

    plain = make_packets(args.packets, args.size)
    tx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE))
    protected = [tx.protect(p) for p in plain]
    rx_policy = Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE)
    rx_policy.allow_repeat_tx = True
    rx_policy.window_size = 1024

    sink_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink_sock.bind(("127.0.0.1", 0))
    sink_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    send_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send_sock.setblocking(False)
    addr = sink_sock.getsockname()

    def drain() -> None:
        sink_sock.setblocking(False)
        try:
            while True:
                sink_sock.recv(2048)
        except BlockingIOError:
            pass

    stages: dict[str, float] = {}
    rx = Session(rx_policy)
    stages["srtp_unprotect"] = per_packet_us(rx.unprotect, protected)
    stages["rtp_header_view"] = per_packet_us(RtpView, plain)
    views = [RtpView(p) for p in plain]
    start = time.perf_counter()
    for v in views:
        Vp8Descriptor(v.data, v.payload_start, v.payload_end)
    stages["vp8_descriptor"] = (time.perf_counter() - start) / len(views) * 1e6
    stx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE))
    stages["srtp_protect"] = per_packet_us(stx.protect, plain)

    def sendto(p: bytes) -> None:
        try:
            send_sock.sendto(p, addr)
        except BlockingIOError:
            pass

    drain()
    stages["sendto"] = per_packet_us(sendto, protected[:5000])
    drain()

    results: dict[str, object] = {
        "stages_us": {k: round(v, 2) for k, v in stages.items()},
        "fanouts": [],
        "packet_size": args.size,
        "packets": args.packets,
        "srtp_profile": "AEAD_AES_256_GCM",
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(),
    }
    print("stage                       µs/packet")
    for stage, us in stages.items():
        print(f"  {stage:24s} {us:8.2f}")

    paths = ["ingress", "native", "python"] if native.NATIVE_INGRESS else ["python"]
    results["native_available"] = native.NATIVE
    rows: list[dict[str, float]] = []
    for fanout in [int(x) for x in args.fanouts.split(",")]:
        row: dict[str, float] = {"fanout": fanout}
        for path_name in paths:
            per_in = run_fanout(
                fanout, path_name, protected, rx_policy, send_sock, addr, drain, args
            )
            per_fwd = per_in / max(fanout, 1)
            print(
                f"fan-out {fanout:3d} {path_name:6s}: {per_in:7.2f} µs per incoming packet, "
                f"{per_fwd:6.2f} µs per forwarded packet"
            )
            row[f"{path_name}_us_per_incoming"] = round(per_in, 2)
            row[f"{path_name}_us_per_forwarded"] = round(per_fwd, 2)
        # the path the server takes: native when built
        row["us_per_incoming"] = row[f"{paths[0]}_us_per_incoming"]
        row["us_per_forwarded"] = row[f"{paths[0]}_us_per_forwarded"]
        if len(paths) == 3:
            for a, b in (("native", "python"), ("ingress", "native"), ("ingress", "python")):
                row[f"{a}_over_{b}"] = round(
                    row[f"{a}_us_per_incoming"] / row[f"{b}_us_per_incoming"], 3
                )
        rows.append(row)
    results["fanouts"] = rows

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
