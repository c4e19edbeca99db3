"""Opus RED (RFC 2198 ``red/48000/2``) and Opus DTX in SDP text (pure functions).

aiortc knows neither RED nor ``usedtx``: it drops RED from the answers and offers it
writes. Parley adds them to the text, as it does transport-cc (``sfu/sdp.py``):

* publish: :func:`offered_red` reads what an offer's audio sections offer (RED whose
  ``a=fmtp`` lists only the section's Opus payload type, e.g. ``63 111/111``; Opus
  ``usedtx=1``); :func:`answer_red` puts RED in the answer, *before* Opus in the m-line
  (libwebrtc sends RED only when the answer prefers it, as LiveKit and Jitsi answer),
  and echoes ``usedtx=1`` in the answer's Opus fmtp when the offer had it;
* subscribe: :func:`offer_red` adds RED after Opus to every audio section of the SFU's
  offer; :func:`answer_red_pts` reads, per mid, whether the subscriber's answer kept it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .sdp import answer_transport_cc, offer_transport_cc, split_sections

__all__ = [
    "RED_PT",
    "RedOffer",
    "answer_extras",
    "answer_red",
    "answer_red_pts",
    "offer_red",
    "offered_red",
    "subscribe_offer",
]

#: the payload type Parley offers RED as (Chromium's), unless the offer already uses it
RED_PT = 63
_RTPMAP = re.compile(r"^a=rtpmap:(\d+)\s+([^/\s]+)/(\d+)(?:/(\d+))?")
_FMTP = re.compile(r"^a=fmtp:(\d+)\s+(.*)$")


@dataclass(frozen=True, slots=True)
class RedOffer:
    """What one audio section of an offer says about RED and DTX."""

    #: RED's payload type (None: no usable RED) and the Opus one its fmtp names
    red_pt: int | None
    opus_pt: int | None
    #: the Opus fmtp has usedtx=1
    usedtx: bool


def _mid(lines: list[str]) -> str | None:
    return next((line[6:].strip() for line in lines if line.startswith("a=mid:")), None)


def _codecs(lines: list[str]) -> tuple[dict[int, str], dict[int, str]]:
    """({pt: "name/rate[/channels]"} lower case, {pt: fmtp}) of one section."""
    maps: dict[int, str] = {}
    fmtps: dict[int, str] = {}
    for line in lines:
        if m := _RTPMAP.match(line):
            name = f"{m.group(2)}/{m.group(3)}" + (f"/{m.group(4)}" if m.group(4) else "")
            maps[int(m.group(1))] = name.lower()
        elif m := _FMTP.match(line):
            fmtps[int(m.group(1))] = m.group(2).strip()
    return maps, fmtps


def _usedtx(fmtp: str) -> bool:
    return any(p.strip().lower() == "usedtx=1" for p in fmtp.split(";"))


def offered_red(offer_sdp: str) -> dict[str, RedOffer]:
    """Per audio section's mid: RED (``red/48000/2`` whose fmtp lists one Opus payload
    type, once or repeated: ``111/111``) and Opus ``usedtx=1``. A RED whose fmtp is
    missing or names anything else counts as not offered."""
    out: dict[str, RedOffer] = {}
    for lines in split_sections(offer_sdp)[2]:
        mid = _mid(lines)
        if not lines[0].startswith("m=audio") or mid is None:
            continue
        maps, fmtps = _codecs(lines)
        opus = [pt for pt, name in maps.items() if name.startswith("opus/48000")]
        usedtx = any(_usedtx(fmtps.get(pt, "")) for pt in opus)
        red_pt = opus_pt = None
        for pt, name in maps.items():
            if name not in ("red/48000/2", "red/48000"):
                continue
            listed = set(fmtps.get(pt, "").split("/"))
            if len(listed) == 1 and (only := listed.pop()).isdigit() and int(only) in opus:
                red_pt, opus_pt = pt, int(only)
                break
        out[mid] = RedOffer(red_pt, opus_pt, usedtx)
    return out


def _insert_codec(lines: list[str], pt: int, after: int, first: bool, extra: list[str]) -> None:
    """Add ``pt`` to the m-line (before or after ``after``) and ``extra`` after the last
    line about ``after``."""
    fields = lines[0].split(" ")
    if str(pt) in fields[3:]:
        return
    formats = fields[3:]
    at = formats.index(str(after)) if str(after) in formats else len(formats)
    formats.insert(at if first else at + 1, str(pt))
    lines[0] = " ".join(fields[:3] + formats)
    last = max(
        (
            i
            for i, line in enumerate(lines)
            if re.match(rf"^a=(rtpmap|fmtp|rtcp-fb):{after}\s", line)
        ),
        default=len(lines) - 1,
    )
    lines[last + 1 : last + 1] = extra


def answer_red(answer_sdp: str, offered: dict[str, RedOffer]) -> tuple[str, dict[str, int]]:
    """The answer with RED accepted (preferred, first in the m-line) in each audio section
    whose offer offered it for the Opus payload type the answer kept, and ``usedtx=1``
    added to the Opus fmtp where the offer had it; and {mid: RED payload type} of the
    sections that accept RED. Line endings kept; idempotent."""
    newline, session, sections = split_sections(answer_sdp)
    accepted: dict[str, int] = {}
    for lines in sections:
        mid = _mid(lines)
        offer = offered.get(mid or "")
        if offer is None or not lines[0].startswith("m=audio") or lines[0].split(" ")[1] == "0":
            continue
        maps, fmtps = _codecs(lines)
        opus = next((pt for pt, name in maps.items() if name.startswith("opus/48000")), None)
        if opus is None:
            continue
        if offer.usedtx and not _usedtx(fmtps.get(opus, "")):
            at = next(
                (i for i, line in enumerate(lines) if line.startswith(f"a=fmtp:{opus} ")), None
            )
            if at is None:
                at = next(i for i, line in enumerate(lines) if line.startswith(f"a=rtpmap:{opus} "))
                lines.insert(at + 1, f"a=fmtp:{opus} usedtx=1")
            else:
                lines[at] = lines[at].rstrip().rstrip(";") + ";usedtx=1"
        if offer.red_pt is not None and offer.opus_pt == opus:
            red = offer.red_pt
            _insert_codec(
                lines,
                red,
                opus,
                True,
                [f"a=rtpmap:{red} red/48000/2", f"a=fmtp:{red} {opus}/{opus}"],
            )
            accepted[mid or ""] = red
    out = list(session)
    for lines in sections:
        out.extend(lines)
    return newline.join(out), accepted


def offer_red(offer_sdp: str) -> str:
    """The SFU's subscribe offer with RED (``red/48000/2``, fmtp ``<opus>/<opus>``) after
    Opus in every audio section that has Opus: RED_PT unless a section uses it, else
    the smallest dynamic payload type free in every section. Line endings kept;
    idempotent (a section already offering RED is left alone)."""
    newline, session, sections = split_sections(offer_sdp)
    used = {int(f) for lines in sections for f in lines[0].split(" ")[3:] if f.isdigit()}
    free = [RED_PT] + list(range(96, 128)) + list(range(35, 63))
    red = next((pt for pt in free if pt not in used), None)
    for lines in sections:
        if red is None or not lines[0].startswith("m=audio"):
            continue
        maps, _ = _codecs(lines)
        if any(name.startswith("red/48000") for name in maps.values()):
            continue
        opus = next((pt for pt, name in maps.items() if name.startswith("opus/48000")), None)
        if opus is not None:
            _insert_codec(
                lines,
                red,
                opus,
                False,
                [f"a=rtpmap:{red} red/48000/2", f"a=fmtp:{red} {opus}/{opus}"],
            )
    out = list(session)
    for lines in sections:
        out.extend(lines)
    return newline.join(out)


def answer_red_pts(answer_sdp: str) -> dict[str, int]:
    """{mid: RED payload type} of the audio sections in use (port not 0, not inactive)
    whose answer kept ``red/48000/2`` for its Opus payload type."""
    out: dict[str, int] = {}
    for mid, offer in offered_red(answer_sdp).items():
        if offer.red_pt is not None:
            out[mid] = offer.red_pt
    for lines in split_sections(answer_sdp)[2]:
        if lines[0].split(" ")[1:2] == ["0"] or "a=inactive" in lines:
            out.pop(_mid(lines) or "", None)
    return out


def subscribe_offer(offer_sdp: str, twcc_prefer: int | None) -> str:
    """The SFU's subscribe offer as sent: aiortc's, with RED (:func:`offer_red`) and
    transport-cc (``sfu.sdp.offer_transport_cc``, ``twcc_prefer`` its ``prefer``)."""
    return offer_transport_cc(offer_red(offer_sdp), prefer=twcc_prefer)


def answer_extras(answer_sdp: str) -> tuple[int | None, dict[str, int]]:
    """What a subscriber's answer kept of what aiortc does not know: the transport-cc id
    (``sfu.sdp.answer_transport_cc``) and {mid: RED payload type} (:func:`answer_red_pts`)."""
    return answer_transport_cc(answer_sdp), answer_red_pts(answer_sdp)
