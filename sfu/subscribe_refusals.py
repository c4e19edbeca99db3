"""Subscriber m-lines refused for their codec (pure text functions and a small record).

Each subscriber m-line offers exactly its track's codec (``sfu/subscribe_codecs.py``).
A subscriber that cannot decode it (libwebrtc builds without H.264, for one) rejects the
m-line in its answer: ``m=video 0``, no codec Parley offered, the mid left out of the
BUNDLE group (RFC 8829 §5.3.1). aiortc cannot apply such an answer (no codec in common:
"Failed to set remote video description send parameters"), so the whole answer, and
with it every other track, would fail.

:class:`CodecRefusals` keeps one subscriber's refusals. A refused m-line is *dead*: the
answer aiortc is given accepts it ``inactive`` (bundled, with the offer's codec, so its
sender never starts and its forwarder never sends), every later offer sent to the
subscriber marks it rejected again (port 0, out of BUNDLE, as JSEP §5.2.2 has an
offerer do), and the track's codec is never offered to that subscriber again: its later
tracks of that codec are not subscribed (the subscriber gets the room's other tracks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .sdp import split_sections
from .subscribe_codecs import complete_h264_answer
from .tracks import PublishedTrack, Subscription

logger = logging.getLogger(__name__)


def _mid(lines: list[str]) -> str | None:
    return next((line[6:].strip() for line in lines if line.startswith("a=mid:")), None)


def _port_zero(lines: list[str]) -> bool:
    fields = lines[0][2:].split()
    return len(fields) > 1 and fields[1] == "0"


def _codec(lines: list[str]) -> str | None:
    """The first codec of a section (lower case), from its first ``a=rtpmap``."""
    for line in lines:
        if line.startswith("a=rtpmap:"):
            return line.split()[1].split("/")[0].lower()
    return None


def _set_bundle(session: list[str], mids: list[str]) -> list[str]:
    out = [line for line in session if not line.startswith("a=group:BUNDLE")]
    if mids:
        at = next((i for i, line in enumerate(out) if line.startswith("t=")), len(out) - 1)
        out.insert(at + 1, "a=group:BUNDLE " + " ".join(mids))
    return out


def _bundle(session: list[str]) -> list[str]:
    for line in session:
        if line.startswith("a=group:BUNDLE"):
            return line.split()[1:]
    return []


_DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")
#: attributes of a media section that describe the transport (copied from the answer's
#: bundle tag section into an accepted-inactive one)
_TRANSPORT = ("c=", "a=ice-", "a=fingerprint:", "a=setup:", "a=rtcp-mux", "a=rtcp:")


class CodecRefusals:
    """The m-lines one subscriber refused and the codecs it cannot take."""

    def __init__(self, participant_id: str = "") -> None:
        self._id = participant_id
        #: mids the subscriber rejected (never used again)
        self.dead: set[str] = set()
        #: (kind, codec) the subscriber cannot decode, e.g. ("video", "h264")
        self.codecs: set[tuple[str, str]] = set()
        #: the codecs the subscriber said it decodes (``join``'s ``codecs``; lower case),
        #: None: any (it refuses what it cannot take in its answers)
        self.decodes: frozenset[str] | None = None

    def refuses(self, track: PublishedTrack) -> bool:
        """Whether the subscriber cannot take ``track``'s codec: it refused it before, or
        it is not among the codecs it said it decodes."""
        codec = track.source.params.codec.lower()
        if self.decodes is not None and codec not in self.decodes:
            return True
        return (track.kind, codec) in self.codecs

    def offer(self, offer_sdp: str) -> str:
        """The offer as sent: each dead m-line rejected (port 0, inactive, not bundled)."""
        if not self.dead:
            return offer_sdp
        newline, session, sections = split_sections(offer_sdp)
        out: list[str] = []
        for lines in sections:
            if _mid(lines) in self.dead:
                fields = lines[0].split(" ")
                fields[1] = "0"
                lines = [" ".join(fields)] + [
                    "a=inactive" if line in _DIRECTIONS else line for line in lines[1:]
                ]
            out.extend(lines)
        bundle = [mid for mid in _bundle(session) if mid not in self.dead]
        return newline.join(_set_bundle(session, bundle) + out)

    def answer(self, answer_sdp: str, local_offer_sdp: str) -> tuple[str, set[str]]:
        """The answer to give aiortc (H.264 fmtp completed: ``complete_h264_answer``):
        each m-line the subscriber rejected (port 0) that
        Parley's offer (``local_offer_sdp``, aiortc's own text) had live becomes an
        accepted ``inactive`` section with the offer's codecs, bundled with the
        others; its mid becomes dead and its codec refused. Also returns the mids
        newly refused. Unchanged when nothing is rejected."""
        answer_sdp = complete_h264_answer(answer_sdp, local_offer_sdp)
        newline, session, sections = split_sections(answer_sdp)
        _, _, offered = split_sections(local_offer_sdp)
        offer_by_mid = {_mid(lines): lines for lines in offered}
        bundle = _bundle(session)
        tag = next((lines for lines in sections if _mid(lines) in bundle), None)
        refused: set[str] = set()
        changed = False
        out: list[str] = []
        for lines in sections:
            mid = _mid(lines)
            ours = offer_by_mid.get(mid)
            if mid is None or ours is None or not _port_zero(lines) or _port_zero(ours):
                out.extend(lines)
                continue
            if tag is None:  # nothing bundled to lean on: leave it to aiortc
                out.extend(lines)
                continue
            kind = ours[0][2:].split()[0]
            codec = _codec(ours)
            if mid not in self.dead:
                refused.add(mid)
                logger.info("participant %s refused %s %s (mid %s)", self._id, kind, codec, mid)
                if codec is not None:
                    self.codecs.add((kind, codec))
            self.dead.add(mid)
            changed = True
            out.extend(_accepted_inactive(ours, tag))
            if mid not in bundle:
                bundle.append(mid)
        if not changed:
            return answer_sdp, refused
        while out and out[-1] == "":
            out.pop()
        return newline.join(_set_bundle(session, bundle) + out + [""]), refused


def refused_tracks(subscriptions: Iterable[Subscription], mids: set[str]) -> list[PublishedTrack]:
    """The tracks whose subscribe m-line is one of ``mids`` (refused: to unsubscribe)."""
    return [
        sub.track
        for sub in subscriptions
        if sub.transceiver is not None and sub.transceiver.mid in mids
    ]


def _accepted_inactive(offer: list[str], tag: list[str]) -> list[str]:
    """An answer section for the offered section ``offer`` that accepts it inactive:
    the offer's m= line (port 9) and codec lines, the transport of ``tag``."""
    fields = offer[0].split(" ")
    fields[1] = "9"
    codec_lines = [
        line
        for line in offer
        if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")) and line.strip()
    ]
    transport = [line for line in tag[1:] if line.startswith(_TRANSPORT)]
    mid = _mid(offer)
    return [" ".join(fields), *transport, f"a=mid:{mid}", "a=inactive", *codec_lines]
