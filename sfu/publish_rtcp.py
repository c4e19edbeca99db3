"""The RTCP the SFU sends a publisher about what it receives: receiver reports (RFC 3550
statistics per stream) and REMB, the bitrate asked of its video."""

from __future__ import annotations

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpReceiverInfo, RtcpRrPacket, pack_remb_fci

from .tracks import PublishedTrack


def receiver_reports(
    tracks: list[PublishedTrack], rtcp_ssrc: int, remb_bitrate: int, now: float
) -> bytes:
    """RRs (31 blocks each) for every stream that has received something, and a REMB
    of ``remb_bitrate`` for the video ones; b"" when nothing has arrived. Sets each
    source's ``upstream_loss`` from its report."""
    reports = []
    video_ssrcs = []
    for source in (layer for track in tracks for layer in track.layers):
        if source.ssrc is None or source.packets == 0:
            continue
        block = source.stats.report_block(source.ssrc, now)
        source.upstream_loss = block.fraction_lost / 256.0
        reports.append(
            RtcpReceiverInfo(
                ssrc=source.ssrc,
                fraction_lost=block.fraction_lost,
                packets_lost=block.packets_lost,
                highest_sequence=block.highest_seq,
                jitter=block.jitter,
                lsr=block.lsr,
                dlsr=block.dlsr,
            )
        )
        if source.is_video:
            video_ssrcs.append(source.ssrc)
    if not reports:
        return b""
    payload = b"".join(
        bytes(RtcpRrPacket(ssrc=rtcp_ssrc, reports=reports[i : i + 31]))
        for i in range(0, len(reports), 31)
    )
    if video_ssrcs:
        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0)
        remb.fci = pack_remb_fci(remb_bitrate, video_ssrcs)
        payload += bytes(remb)
    return payload


def publish_bitrate(tracks: list[PublishedTrack], lo: int, hi: int) -> int:
    """What to ask of a publisher's video: the lowest subscriber estimate, within
    [``lo``, ``hi``]; ``hi`` for simulcast (every layer is wanted by someone, whatever
    one subscriber's link) and while no subscriber has an estimate."""
    if any(len(track.layers) > 1 for track in tracks):
        return hi
    estimates = [
        f.remb
        for track in tracks
        if track.source.is_video
        for f in track.source.forwarders
        if f.remb is not None
    ]
    if not estimates:
        return hi
    return max(lo, min(hi, min(estimates)))
