"""What ``sendmmsg`` per subscriber saves, by packets per subscriber per batch: the C
``Egress`` (SRTP protect + send) with and without ``SendBatch``, in one process, on
loopback, in one run (alternating, best of ``--repeat``).

For each batch size k (packets each subscriber gets from one readiness of a batch
reader), ``--subscribers`` Egresses each send k packets per batch, 1000-byte RTP packets
protected with AES-256-GCM; the figure is CPU time (``time.process_time``, which on
loopback includes the kernel's delivery to the receiving socket) per packet sent.

    .venv/bin/python bench/send_batch.py [--packets 40000] [--repeat 3]

Writes ``bench/results/send-batch.json``. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pylibsrtp  # noqa: E402

from sfu import native  # noqa: E402
from sfu.aiortc_adapter import make_egress  # noqa: E402
from sfu.rtp.packet import build_rtp_header  # noqa: E402

KEY = bytes(range(44))
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def egresses(count: int) -> tuple[list[Any], list[socket.socket]]:
    out, socks = [], []
    for _ in range(count):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # overflows: drops
        rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("127.0.0.1", 0))
        tx.setblocking(False)
        session = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE
            )
        )
        out.append(make_egress(session, rx.getsockname(), tx))
        socks += [rx, tx]
    return out, socks


def measure(count: int, per_batch: int, packets: int, batched: bool) -> float:
    """µs of CPU per packet sent."""
    targets, socks = egresses(count)
    batch = native.new_send_batch() if batched else None
    if batch is not None:
        for egress in targets:
            egress.batch = batch
    payload = bytes(1000 - 12)
    headers = [
        build_rtp_header(0, 96, seq & 0xFFFF, seq * 90, 0x1234, b"") for seq in range(packets)
    ]
    batches = packets // (count * per_batch)
    seq = 0
    start = time.process_time()
    for _ in range(batches):
        if batch is not None:
            batch.begin()
        for _k in range(per_batch):
            data = headers[seq] + payload
            seq += 1
            for egress in targets:
                egress.send(data)
        if batch is not None:
            batch.flush()
    spent = time.process_time() - start
    sent = sum(e.tx_packets for e in targets)
    for egress in targets:
        egress.close()
    for sock in socks:
        sock.close()
    return spent * 1e6 / max(sent, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=4)
    parser.add_argument("--packets", type=int, default=40000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=str(REPO / "bench/results/send-batch.json"))
    args = parser.parse_args()
    if not native.NATIVE:
        sys.exit("the C module is not in use")
    rows = []
    for k in BATCH_SIZES:
        sendto, sendmmsg = [], []
        for _ in range(args.repeat):
            sendto.append(measure(args.subscribers, k, args.packets, False))
            sendmmsg.append(measure(args.subscribers, k, args.packets, True))
        row = {
            "packets_per_subscriber_per_batch": k,
            "sendto_us_per_packet": round(min(sendto), 3),
            "sendmmsg_us_per_packet": round(min(sendmmsg), 3),
            "sendmmsg_over_sendto": round(min(sendmmsg) / min(sendto), 3),
            "all_sendto": [round(v, 3) for v in sendto],
            "all_sendmmsg": [round(v, 3) for v in sendmmsg],
        }
        rows.append(row)
        print(
            f"k={k:2}  sendto {row['sendto_us_per_packet']:6.2f} µs/pkt  sendmmsg "
            f"{row['sendmmsg_us_per_packet']:6.2f} µs/pkt  ratio {row['sendmmsg_over_sendto']}",
            flush=True,
        )
    result = {
        "command": "bench/send_batch.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "subscribers": args.subscribers,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
