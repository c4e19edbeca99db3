"""The offer text munged for simulcast (:func:`munge_simulcast_offer`): ``a=rid``,
``a=simulcast``, the MID / RID / repaired-RID extmaps, no ``a=ssrc`` lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.media.simulcast.layers import (
    EXTMAP,
    URI_ABS_SEND_TIME,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
)

# --------------------------------------------------------------------------- SDP


@dataclass(frozen=True, slots=True)
class SimulcastExtensions:
    """Header-extension ids the simulcast video m-line uses (0: not negotiated)."""

    mid: int
    rid: int
    repaired_rid: int
    abs_send_time: int = 0

    @classmethod
    def from_map(
        cls, extensions: dict[str, int], fallback: SimulcastExtensions
    ) -> SimulcastExtensions:
        """Ids from a negotiated ``uri -> id`` map, each falling back to ``fallback``'s."""
        return cls(
            mid=extensions.get(URI_MID, fallback.mid),
            rid=extensions.get(URI_RID, fallback.rid),
            repaired_rid=extensions.get(URI_REPAIRED_RID, fallback.repaired_rid),
            abs_send_time=extensions.get(URI_ABS_SEND_TIME, fallback.abs_send_time),
        )


@dataclass(frozen=True, slots=True)
class MungedOffer:
    sdp: str
    #: The mid of the video m-line that now announces simulcast.
    mid: str
    extensions: SimulcastExtensions


def _split_sections(lines: list[str]) -> list[list[str]]:
    """The session part, then one list of lines per m-line."""
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def munge_simulcast_offer(sdp: str, rids: Sequence[str]) -> MungedOffer:
    """Turn the first sendonly video m-line of ``sdp`` into a simulcast m-line.

    Adds ``a=rid:<rid> send`` per RID and ``a=simulcast:send r1;r2;…``, extmaps for
    mid, rtp-stream-id and repaired-rtp-stream-id (reusing an existing id for a URI
    already present, else picking ids 1–14 used by no section, so BUNDLEd m-lines
    never disagree), and drops the ``a=ssrc`` and ``a=ssrc-group`` lines of that
    section. Every other line is kept byte for byte. Raises ValueError when there is
    no sendonly video m-line or no free extension id.
    """
    if not rids:
        raise ValueError("no RIDs")
    newline = "\r\n" if "\r\n" in sdp else "\n"
    trailing = sdp.endswith(newline)
    lines = sdp.split(newline)
    if trailing:
        lines = lines[:-1]
    sections = _split_sections(lines)
    used: set[int] = set()
    for section in sections:
        for line in section:
            match = EXTMAP.match(line)
            if match:
                used.add(int(match.group(1)))
    index = next(
        (
            i
            for i, s in enumerate(sections)
            if i > 0
            and s[0].startswith("m=video ")
            and "a=sendonly" in s
            and not any(line.startswith("a=simulcast:") for line in s)
        ),
        None,
    )
    if index is None:
        raise ValueError("the offer has no sendonly video m-line")
    section = sections[index]
    mid = next((line[6:] for line in section if line.startswith("a=mid:")), None)
    if mid is None:
        raise ValueError("the video m-line has no a=mid")
    present: dict[str, int] = {}
    for line in section:
        match = EXTMAP.match(line)
        if match:
            present[match.group(2)] = int(match.group(1))
    free = (i for i in range(1, 15) if i not in used)
    ids: dict[str, int] = {}
    added: list[str] = []
    for uri in (URI_MID, URI_RID, URI_REPAIRED_RID):
        if uri in present:
            ids[uri] = present[uri]
            continue
        ext_id = next(free, None)
        if ext_id is None:
            raise ValueError("no free one-byte header extension id")
        ids[uri] = ext_id
        added.append(f"a=extmap:{ext_id} {uri}")
    kept = [line for line in section if not line.startswith(("a=ssrc:", "a=ssrc-group:"))]
    last_extmap = max((i for i, line in enumerate(kept) if EXTMAP.match(line)), default=-1)
    if last_extmap < 0:
        last_extmap = next(i for i, line in enumerate(kept) if line.startswith("a=mid:"))
    kept[last_extmap + 1 : last_extmap + 1] = added
    kept += [f"a=rid:{rid} send" for rid in rids]
    kept.append("a=simulcast:send " + ";".join(rids))
    sections[index] = kept
    out = newline.join(line for s in sections for line in s)
    if trailing:
        out += newline
    extensions = SimulcastExtensions(
        mid=ids[URI_MID],
        rid=ids[URI_RID],
        repaired_rid=ids[URI_REPAIRED_RID],
        abs_send_time=present.get(URI_ABS_SEND_TIME, 0),
    )
    return MungedOffer(sdp=out, mid=mid, extensions=extensions)
