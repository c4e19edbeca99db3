"""RTP payload for redundant audio (RFC 2198), as browsers send Opus in it (``red/48000/2``).

A RED payload is a list of block headers, then the blocks' data in the same order::

    redundant block header (4 bytes): F=1 | block PT (7) | timestamp offset (14) | length (10)
    primary block header   (1 byte):  F=0 | block PT (7)

The last header (F=0) is the primary block: its timestamp is the RTP header's and its
data runs to the end of the payload. The redundant blocks repeat earlier packets'
payloads (``timestamp - offset``); they carry no sequence number, so a stripped stream
cannot tell which lost packet one would repair without guessing: Parley, like mediasoup
and LiveKit, strips to the primary only.

Pure functions over bytes. :func:`check_red` is what ingress calls (``Source.on_rtp``):
after it, :func:`red_payload` cannot fail on the same payload.
"""

from __future__ import annotations

from typing import NamedTuple

from .packet import RtpError

__all__ = ["MAX_BLOCKS", "RedBlock", "check_red", "parse_red", "red_payload"]

#: More blocks than any sender uses (libwebrtc sends 1-2 redundant ones): a bound on work.
MAX_BLOCKS = 16


class RedBlock(NamedTuple):
    """One block of a RED payload: ``start``/``end`` index the payload given."""

    payload_type: int
    #: how much earlier than the packet's timestamp this block's is (0 for the primary)
    ts_offset: int
    start: int
    end: int


def parse_red(payload: bytes) -> list[RedBlock]:
    """The blocks of a RED payload, primary last; :class:`RtpError` if malformed (no
    primary header, more than MAX_BLOCKS headers, block lengths past the end)."""
    headers: list[tuple[int, int, int]] = []
    pos = 0
    size = len(payload)
    while True:
        if pos >= size:
            raise RtpError("RED payload ends inside its block headers")
        b0 = payload[pos]
        if not b0 & 0x80:
            headers.append((b0 & 0x7F, 0, -1))
            pos += 1
            break
        if len(headers) + 1 >= MAX_BLOCKS:
            raise RtpError(f"RED payload with more than {MAX_BLOCKS} blocks")
        if pos + 4 > size:
            raise RtpError("RED block header truncated")
        word = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        headers.append((b0 & 0x7F, word >> 10, word & 0x3FF))
        pos += 4
    blocks: list[RedBlock] = []
    for pt, offset, length in headers:
        end = size if length < 0 else pos + length
        if end > size:
            raise RtpError("RED block length runs past the payload")
        blocks.append(RedBlock(pt, offset, pos, end))
        pos = end
    return blocks


def check_red(payload: bytes, opus_pt: int) -> None:
    """Raise :class:`RtpError` unless ``payload`` is a RED payload of Opus blocks (each
    block's payload type ``opus_pt``) with a non-empty primary."""
    blocks = parse_red(payload)
    for block in blocks:
        if block.payload_type != opus_pt:
            raise RtpError(f"RED block of payload type {block.payload_type}, not Opus ({opus_pt})")
    if blocks[-1].start == blocks[-1].end:
        raise RtpError("RED payload with an empty primary block")


def red_payload(payload: bytes, red_pt: int | None, opus_pt: int) -> tuple[int, bytes]:
    """(payload type, payload) of a checked RED payload (:func:`check_red`) for one
    subscriber: with ``red_pt`` (it negotiated RED) the RED payload with every block's
    payload type set to its ``opus_pt``; without, the primary block as plain Opus."""
    blocks = parse_red(payload)
    if red_pt is None:
        last = blocks[-1]
        return opus_pt, payload[last.start : last.end]
    if all(block.payload_type == opus_pt for block in blocks):
        return red_pt, payload
    out = bytearray(payload)
    pos = 0
    for _ in blocks:
        out[pos] = (out[pos] & 0x80) | opus_pt
        pos += 4 if out[pos] & 0x80 else 1
    return red_pt, bytes(out)


def build_red(primary: bytes, redundant: list[tuple[int, bytes]], pt: int) -> bytes:
    """A RED payload of Opus blocks of payload type ``pt``: ``redundant`` as
    (timestamp offset, data) pairs, oldest first, then ``primary`` (for tests and bots)."""
    head = bytearray()
    for offset, data in redundant:
        if not 0 <= offset < 1 << 14 or len(data) >= 1 << 10:
            raise ValueError("a RED block's offset is 14 bits and its length 10")
        head += bytes((0x80 | pt,)) + ((offset << 10) | len(data)).to_bytes(3, "big")
    head.append(pt & 0x7F)
    return bytes(head) + b"".join(data for _, data in redundant) + primary
