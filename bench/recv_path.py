"""The receive path alone, by datagrams per readiness: the Python batch reader
(``recvfrom`` loop + SRTP unprotect through pylibsrtp's library, as
``readers.recvfrom_reader`` and ``media_port.srtp_transform`` do it) against
``sfu._recv.Reader`` (one ``recvmmsg``, unprotect in C), both handing each plain packet
to the same trivial ``on_rtp``. In one process, one run, alternating, best of
``--repeat``: CPU per packet (sending excluded) and packets per second per core.

    .venv/bin/python bench/recv_path.py [--packets 30000] [--repeat 3]

Writes ``bench/results/recv-path.json``. See docs/loadgen.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pylibsrtp  # noqa: E402

from sfu.aiortc_adapter import make_reader, srtp_transform  # noqa: E402
from sfu.rtp.packet import build_rtp_header  # noqa: E402

KEY = bytes(range(44))
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
PER_READINESS = (1, 2, 4, 16, 64)


def session(direction: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=direction, srtp_profile=PROFILE))


def python_reader(
    sock: socket.socket, rx: pylibsrtp.Session, on_rtp: Callable[[bytes], None]
) -> Callable[[], None]:
    unprotect = srtp_transform(rx, protect=False)
    recvfrom = sock.recvfrom

    def handler(data: bytes, addr: object) -> None:
        if len(data) >= 12 and 127 < data[0] < 192:
            try:
                on_rtp(unprotect(data))
            except pylibsrtp.Error:
                pass

    def read_ready() -> None:
        for _ in range(64):
            try:
                data, addr = recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            handler(data, addr)

    return read_ready


def c_reader(
    sock: socket.socket, rx: pylibsrtp.Session, on_rtp: Callable[[bytes], None]
) -> Callable[[], None]:
    read = make_reader(sock, rx).read

    def read_ready() -> None:
        for item in read():
            if item.__class__ is bytes:
                on_rtp(item)

    return read_ready


def measure(kind: str, per_readiness: int, packets: int) -> float:
    """µs of CPU per packet read, unprotected and handed over."""
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx_sock.bind(("127.0.0.1", 0))
    rx_sock.setblocking(False)
    tx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx_sock.connect(rx_sock.getsockname())
    tx = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    rx = session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    got = [0]

    def on_rtp(data: bytes) -> None:
        got[0] += 1

    read_ready = (python_reader if kind == "python" else c_reader)(rx_sock, rx, on_rtp)
    payload = bytes(1000 - 12)
    wire = [
        tx.protect(build_rtp_header(0, 96, s & 0xFFFF, s, 0x42, b"") + payload)
        for s in range(packets)
    ]
    spent = 0.0
    for start in range(0, packets, per_readiness):
        for datagram in wire[start : start + per_readiness]:
            tx_sock.send(datagram)
        before = time.process_time()
        read_ready()
        spent += time.process_time() - before
    rx_sock.close()
    tx_sock.close()
    return spent * 1e6 / max(got[0], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=30000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=str(REPO / "bench/results/recv-path.json"))
    args = parser.parse_args()
    rows = []
    for k in PER_READINESS:
        runs: dict[str, list[float]] = {"python": [], "c": []}
        for _ in range(args.repeat):
            for kind in runs:
                runs[kind].append(measure(kind, k, args.packets))
        best = {kind: min(values) for kind, values in runs.items()}
        row = {
            "datagrams_per_readiness": k,
            "python_us_per_packet": round(best["python"], 3),
            "c_us_per_packet": round(best["c"], 3),
            "python_pps_per_core": round(1e6 / best["python"]),
            "c_pps_per_core": round(1e6 / best["c"]),
            "python_over_c": round(best["python"] / best["c"], 2),
            "all": {kind: [round(v, 3) for v in values] for kind, values in runs.items()},
        }
        rows.append(row)
        print(
            f"k={k:2}  python {row['python_us_per_packet']:5.2f} µs/pkt "
            f"({row['python_pps_per_core']} pkt/s/core)  C {row['c_us_per_packet']:5.2f} µs/pkt "
            f"({row['c_pps_per_core']} pkt/s/core)  python / C {row['python_over_c']}",
            flush=True,
        )
    result = {
        "command": "bench/recv_path.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
