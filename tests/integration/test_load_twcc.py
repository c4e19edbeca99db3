"""A lean ``parley load`` subscriber answers a real (aiortc-made) subscribe offer: with the
transport-wide-cc extension offered it keeps it in its answer (aiortc's own answer drops
it) and reports the arrival of packets that carry it; without, the answer is aiortc's."""

from __future__ import annotations

import struct

from loadgen.load.bots import BotSpec, WorkerMetrics
from loadgen.load.session import OfferedTrack
from loadgen.load.subscriber import LoadSubscriber
from sfu.aiortc_adapter.ice import create_peer_connection
from sfu.config import IceConfig
from sfu.rtp.extensions import TRANSPORT_CC_URI


async def _offer(with_twcc: bool) -> tuple[str, str]:
    """A server-like offer (one sendonly video m-section) and its mid, with the
    transport-wide-cc extmap and feedback added as the SFU offers them."""
    pc = create_peer_connection(IceConfig(addresses=("127.0.0.1",)))
    try:
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
    finally:
        await pc.close()
    if with_twcc:
        lines = sdp.split("\r\n")
        out = []
        for line in lines:
            out.append(line)
            if line.startswith("a=mid:"):
                out.append(f"a=extmap:9 {TRANSPORT_CC_URI}")
            if line.startswith("a=rtpmap:") and "VP8" in line:
                pt = line.split(":")[1].split()[0]
                out.append(f"a=rtcp-fb:{pt} transport-cc")
        sdp = "\r\n".join(out)
    mid = next(line[6:] for line in sdp.split("\r\n") if line.startswith("a=mid:"))
    return sdp, mid


def _subscriber() -> LoadSubscriber:
    spec = BotSpec(role="subscriber", room="r", name="s", index=0, start_at=0.0)
    return LoadSubscriber(spec, "http://127.0.0.1:1", WorkerMetrics())


async def test_the_answer_keeps_transport_cc_and_packets_are_reported() -> None:
    sdp, mid = await _offer(with_twcc=True)
    sub = _subscriber()
    try:
        answer = await sub.on_offer(sdp, [OfferedTrack("t", "video", mid)])
        assert f"a=extmap:9 {TRANSPORT_CC_URI}" in answer
        assert "transport-cc" in answer.split(f"a=extmap:9 {TRANSPORT_CC_URI}")[1]
        # the remote description aiortc accepted is the offer; the answer it made
        # itself does not have the extension (this is what the subscriber adds)
        assert sub.sub_pc is not None
        assert TRANSPORT_CC_URI not in sub.sub_pc.localDescription.sdp
        assert sub.summary()["transport_cc"] is True
        # a packet with the extension (one-byte form, id 9, seq 0x0102) is recorded
        ext = bytes([0x91, 0x01, 0x02, 0x00])
        packet = struct.pack("!BBHII", 0x90, 96, 1, 0, 4321) + b"\xbe\xde\x00\x01" + ext
        sub._on_rtp(packet + bytes(20), 5.0)
        (feedback,) = sub.twcc.feedback()
        assert feedback[1] == 205 and feedback[0] & 0x1F == 15
        assert struct.unpack_from("!IH", feedback, 8) == (4321, 0x0102)
    finally:
        await sub.close()


async def test_without_the_extension_nothing_changes() -> None:
    sdp, mid = await _offer(with_twcc=False)
    sub = _subscriber()
    try:
        answer = await sub.on_offer(sdp, [OfferedTrack("t", "video", mid)])
        assert TRANSPORT_CC_URI not in answer and "transport-cc" not in answer
        assert sub.summary()["transport_cc"] is False
        packet = struct.pack("!BBHII", 0x80, 96, 1, 0, 4321) + bytes(20)
        sub._on_rtp(packet, 5.0)
        assert sub.twcc.feedback() == []
    finally:
        await sub.close()
