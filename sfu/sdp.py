"""SDP text checks aiortc does not make, and simulcast, which its model drops (pure
functions, no aiortc).

aiortc parses and regenerates descriptions from its own model, which has no
``a=rid`` nor ``a=simulcast`` (RFC 8851 / RFC 8853). Parley therefore reads the RIDs
a publisher offers from the raw offer text and writes the matching ``recv`` lines
into the raw answer text it sends back.

aiortc also answers offers it can never connect with (no ``a=fingerprint``, a
fingerprint of an algorithm it cannot check): its connect task then dies in the
background. :func:`check_transport` refuses those before anything is answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .rtp.extensions import TRANSPORT_CC_URI

#: RFC 8851: rid-id = 1*(alpha-numeric / "-" / "_"); Parley keeps them short.
_RID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: At most this many layers per m-line (browsers send 3, RFC allows more).
MAX_LAYERS = 8


class SimulcastError(ValueError):
    """An offer's simulcast description cannot be used."""


class TransportError(ValueError):
    """An offer's ICE/DTLS attributes cannot give a connection."""


#: Fingerprint hash functions aiortc's DTLS can check, with their digest size in bytes.
FINGERPRINT_ALGORITHMS = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
#: ``a=setup`` values of an offer (RFC 8842): the offerer must let the answerer choose
#: (actpass) or choose itself (active / passive); holdconn is not for WebRTC.
SETUP_VALUES = ("actpass", "active", "passive")
#: The m-line kinds aiortc connects (others it ignores).
_TRANSPORT_KINDS = ("audio", "video", "application")
_HEX_PAIR = re.compile(r"^[0-9A-Fa-f]{2}$")


def _attributes(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("a="):
            name, _, value = line[2:].partition(":")
            out.setdefault(name.strip(), []).append(value.strip())
    return out


def check_transport(sdp_text: str) -> None:
    """Raise :class:`TransportError` unless the offer has what aiortc needs to connect
    (RFC 8829 / 8842 / 8839 / 8843), each attribute at media or at session level:

    * every audio, video and application m-line: ``a=ice-ufrag`` and ``a=ice-pwd``, and
      an ``a=setup`` of actpass, active or passive; audio and video ``a=rtcp-mux`` (a
      media attribute);
    * no two m-lines share a mid, and every mid a BUNDLE group names is an m-line's;
    * the first such m-line, and any outside a BUNDLE group, also at least one
      well-formed ``a=fingerprint`` of a hash aiortc can check (sha-256, sha-384,
      sha-512). The other m-lines of a bundle share the first one's DTLS transport
      (GStreamer's bundle-only sections carry no fingerprint).
    """
    session: list[str] = []
    sections: list[list[str]] = []
    for raw in sdp_text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    top = _attributes(session)
    bundled = {
        mid
        for group in top.get("group", [])
        if group.split()[:1] == ["BUNDLE"]
        for mid in group.split()[1:]
    }
    all_mids = []
    for index, lines in enumerate(sections):
        declared = _attributes(lines[1:]).get("mid") or [str(index)]
        if len(declared) > 1:
            raise TransportError(f"m-line {index} has {len(declared)} a=mid lines")
        all_mids.append(declared[0])
    mids = set(all_mids)
    if len(mids) != len(all_mids):
        twice = next(mid for mid in all_mids if all_mids.count(mid) > 1)
        raise TransportError(f"two m-lines have mid {twice}: each needs its own")
    missing = sorted(bundled - mids)
    if missing:  # aiortc would bundle onto a transport that does not exist (None)
        raise TransportError(f"a=group:BUNDLE names mid {missing[0]}, which no m-line has")
    first = True
    for index, lines in enumerate(sections):
        kind = lines[0][2:].split(" ", 1)[0]
        if kind not in _TRANSPORT_KINDS:
            continue
        attrs = _attributes(lines[1:])
        mid = (attrs.get("mid") or [str(index)])[0]
        where = f"m-line {index} (mid {mid})"

        def value(name: str, attrs: dict[str, list[str]] = attrs) -> list[str]:
            return attrs.get(name) or top.get(name) or []

        for name in ("ice-ufrag", "ice-pwd"):
            if not any(value(name)):
                raise TransportError(f"{where}: no a={name}: ICE needs the offerer's credentials")
        setup = value("setup")
        if not setup:
            raise TransportError(f"{where}: no a=setup: the DTLS role must be offered")
        if setup[0] not in SETUP_VALUES:
            raise TransportError(
                f"{where}: a=setup:{setup[0]} is not one of {', '.join(SETUP_VALUES)}"
            )
        if kind != "application" and "rtcp-mux" not in attrs:
            raise TransportError(f"{where}: no a=rtcp-mux: RTP and RTCP must share a port")
        if first or mid not in bundled:
            _check_fingerprints(value("fingerprint"), where)
        first = False


def _check_fingerprints(fingerprints: list[str], where: str) -> None:
    if not fingerprints:
        raise TransportError(
            f"{where}: no a=fingerprint: DTLS cannot authenticate the peer without one"
        )
    usable = 0
    for fingerprint in fingerprints:
        parts = fingerprint.split()
        if len(parts) != 2:
            raise TransportError(f"{where}: malformed a=fingerprint:{fingerprint}")
        algorithm, digest = parts[0].lower(), parts[1].split(":")
        size = FINGERPRINT_ALGORITHMS.get(algorithm)
        if size is None:
            continue
        if len(digest) != size or not all(_HEX_PAIR.match(b) for b in digest):
            raise TransportError(
                f"{where}: a=fingerprint:{fingerprint} is not a {algorithm} digest"
            )
        usable += 1
    if not usable:
        raise TransportError(
            f"{where}: no a=fingerprint of a supported hash ({', '.join(FINGERPRINT_ALGORITHMS)})"
        )


@dataclass(frozen=True, slots=True)
class SimulcastOffer:
    """The send-direction simulcast of one offered m-line."""

    mid: str | None
    #: RIDs in ``a=simulcast:send`` order (paused ``~rid`` streams included)
    rids: tuple[str, ...]


def _sections(sdp_text: str) -> list[list[str]]:
    """The media sections' lines (session-level lines dropped)."""
    sections: list[list[str]] = []
    for raw in sdp_text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            sections.append([line])
        elif sections and line:
            sections[-1].append(line)
    return sections


def read_simulcast(sdp_text: str) -> dict[int, SimulcastOffer]:
    """Simulcast offered per m-line index: ``a=rid:X send`` + ``a=simulcast:send ...``.

    Only sections with both are simulcast. The layers are the ``a=simulcast:send``
    streams in order; for a stream with alternatives (``a,b``) the first one counts,
    and ``~`` (paused) is ignored. RIDs the ``a=simulcast`` line names but no
    ``a=rid ... send`` line declares are dropped (RFC 8853 §5.3). Raises
    :class:`SimulcastError` on a malformed ``a=rid`` or ``a=simulcast`` line.
    """
    out: dict[int, SimulcastOffer] = {}
    for index, lines in enumerate(_sections(sdp_text)):
        mid: str | None = None
        declared: list[str] = []
        send: list[str] | None = None
        for line in lines:
            if line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=rid:"):
                parts = line[6:].split()
                if len(parts) < 2 or not _RID.match(parts[0]):
                    raise SimulcastError(f"m-line {index}: malformed {line!r}")
                if parts[1] == "send":
                    declared.append(parts[0])
            elif line.startswith("a=simulcast:"):
                send = _simulcast_send(line[12:], index)
        if send is None or not declared:
            continue
        rids = tuple(dict.fromkeys(r for r in send if r in declared))
        if len(rids) > MAX_LAYERS:
            raise SimulcastError(f"m-line {index}: more than {MAX_LAYERS} simulcast layers")
        if rids:
            out[index] = SimulcastOffer(mid=mid, rids=rids)
    return out


def _simulcast_send(value: str, index: int) -> list[str] | None:
    tokens = value.split()
    if len(tokens) % 2:
        raise SimulcastError(f"m-line {index}: malformed a=simulcast:{value}")
    for direction, streams in zip(tokens[::2], tokens[1::2], strict=True):
        if direction != "send":
            continue
        rids = []
        for stream in streams.split(";"):
            first = stream.split(",")[0].lstrip("~")
            if not _RID.match(first):
                raise SimulcastError(f"m-line {index}: malformed a=simulcast:{value}")
            rids.append(first)
        return rids
    return None


def write_simulcast_answer(answer_sdp: str, layers: dict[str, tuple[str, ...]]) -> str:
    """Add ``a=rid:X recv`` and ``a=simulcast:recv ...`` to the answer's sections.

    ``layers`` maps an answer m-line's mid to the RIDs it receives. Line endings of the
    input are kept; sections without an entry are untouched.
    """
    newline = "\r\n" if "\r\n" in answer_sdp else "\n"
    lines = answer_sdp.split(newline)
    out: list[str] = []
    pending: tuple[str, ...] | None = None

    def flush() -> None:
        nonlocal pending
        if pending:
            # before any trailing empty line (the description ends with a newline)
            while out and out[-1] == "":
                out.pop()
                trailing.append("")
            out.extend(f"a=rid:{rid} recv" for rid in pending)
            out.append("a=simulcast:recv " + ";".join(pending))
            out.extend(trailing)
            trailing.clear()
        pending = None

    trailing: list[str] = []
    for line in lines:
        if line.startswith("m="):
            flush()
        elif line.startswith("a=mid:") and line[6:] in layers:
            pending = layers[line[6:]]
        out.append(line)
    flush()
    return newline.join(out)


# ------------------------------------------------------------------ transport-cc

#: RTP payloads that are not codecs of their own (no transport-cc feedback line)
_NOT_CODECS = ("rtx", "red", "ulpfec", "flexfec-03")
_EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\S+)?\s+(\S+)")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+)\s+([^/\s]+)")
#: ids aiortc gives its own extensions in any section it may add later (mid 1, audio
#: level 2, abs-send-time 3: ``aiortc.codecs.HEADER_EXTENSIONS``): an audio-only first
#: offer must not take 3, which a video section added by renegotiation would reuse
_AIORTC_IDS = frozenset({1, 2, 3})


def split_sections(sdp_text: str) -> tuple[str, list[str], list[list[str]]]:
    """(newline, session lines, each m-section's lines), the text kept line for line."""
    newline = "\r\n" if "\r\n" in sdp_text else "\n"
    session: list[str] = []
    sections: list[list[str]] = []
    for line in sdp_text.split(newline):
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return newline, session, sections


def offer_transport_cc(offer_sdp: str, prefer: int | None = None) -> str:
    """Add transport-wide congestion control to an offer Parley sends (RFC 8285 extmap,
    draft-holmer-rmcat-transport-wide-cc-extensions-01).

    Every audio and video section gets ``a=extmap:<id> <TRANSPORT_CC_URI>``, one id for all of
    them (they share a BUNDLE transport, where an id means one extension): the id the
    offer already uses for it, else ``prefer`` when it is free in every section (pass
    the id negotiated before, so a renegotiation keeps it), else the smallest one-byte
    id (4-14: aiortc's own extensions take 1-3 in any kind) free in every section. Each codec payload type of the audio and video
    sections (not RTX, RED, FEC) gets ``a=rtcp-fb:<pt> transport-cc``. Line endings are
    kept. An offer without an id left is returned unchanged.
    """
    newline, session, sections = split_sections(offer_sdp)
    used: set[int] = set()
    current: int | None = None
    for line in session + [line for lines in sections for line in lines]:
        match = _EXTMAP.match(line)
        if match:
            used.add(int(match.group(1)))
            if match.group(2) == TRANSPORT_CC_URI:
                current = int(match.group(1))
    ext_id = current
    if ext_id is None:
        free = [i for i in range(1, 15) if i not in used and i not in _AIORTC_IDS]
        if not free:
            return offer_sdp
        ext_id = prefer if prefer in free else free[0]
    out = list(session)
    for lines in sections:
        out.extend(_with_transport_cc(lines, ext_id))
    return newline.join(out)


def _has_extmap(lines: list[str]) -> bool:
    return any((m := _EXTMAP.match(line)) and m.group(2) == TRANSPORT_CC_URI for line in lines)


def _with_transport_cc(lines: list[str], ext_id: int, only: set[str] | None = None) -> list[str]:
    """The section with the extmap and a feedback line per codec (of ``only``, if given)."""
    if lines[0][2:].split(" ", 1)[0] not in ("audio", "video"):
        return lines
    extmap = f"a=extmap:{ext_id} {TRANSPORT_CC_URI}"
    has_extmap = _has_extmap(lines)
    codecs = []
    for line in lines:
        match = _RTPMAP.match(line)
        if match and match.group(2).lower() not in _NOT_CODECS:
            if only is None or match.group(1) in only:
                codecs.append(match.group(1))
    wanted = {pt: f"a=rtcp-fb:{pt} transport-cc" for pt in codecs}
    for line in lines:
        for pt, fb in list(wanted.items()):
            if line == fb:
                del wanted[pt]
    # where each goes: after the last extmap (else after c=, else after m=); after the
    # payload type's last rtcp-fb line (else its rtpmap)
    ext_at = max(
        (i for i, line in enumerate(lines) if line.startswith("a=extmap:")),
        default=next((i for i, line in enumerate(lines) if line.startswith("c=")), 0),
    )
    after: dict[int, list[str]] = {}
    if not has_extmap:
        after.setdefault(ext_at, []).append(extmap)
    for pt, fb in wanted.items():
        at = max(
            i
            for i, line in enumerate(lines)
            if line.startswith((f"a=rtcp-fb:{pt} ", f"a=rtpmap:{pt} "))
        )
        after.setdefault(at, []).append(fb)
    out: list[str] = []
    for i, line in enumerate(lines):
        out.append(line)
        out.extend(after.get(i, []))
    return out


def keep_transport_cc(answer_sdp: str, offer_sdp: str) -> str:
    """An answer (aiortc's drops what it does not implement) that keeps the transport-wide
    congestion control the offer gave: in each audio/video section whose offer section
    (same ``a=mid``) has the extmap, the extmap with the offer's id and
    ``a=rtcp-fb:<pt> transport-cc`` for the payload types the offer asked it for. The
    answerer then owes transport-cc feedback (``loadgen/media/twcc.py``). Unchanged
    when the offer has none; idempotent; line endings kept."""
    _, offer_session, offer_sections = split_sections(offer_sdp)
    ids = {
        int(m.group(1))
        for line in offer_session + [line for lines in offer_sections for line in lines]
        if (m := _EXTMAP.match(line)) and m.group(2) == TRANSPORT_CC_URI
    }
    if len(ids) != 1:
        return answer_sdp
    ext_id = ids.pop()
    offered: dict[str, set[str]] = {}
    for lines in offer_sections:
        mid = next((line[6:].strip() for line in lines if line.startswith("a=mid:")), None)
        if mid is not None and _has_extmap(lines):
            offered[mid] = {
                line.split(":", 1)[1].split()[0]
                for line in lines
                if line.startswith("a=rtcp-fb:") and line.split()[1:] == ["transport-cc"]
            }
    newline, session, sections = split_sections(answer_sdp)
    out = list(session)
    for lines in sections:
        mid = next((line[6:].strip() for line in lines if line.startswith("a=mid:")), None)
        if mid is None or mid not in offered:
            out.extend(lines)
        else:
            out.extend(_with_transport_cc(lines, ext_id, offered[mid]))
    return newline.join(out)


def answer_transport_cc(answer_sdp: str) -> int | None:
    """The transport-cc extension id the answer kept, or None: None unless it maps
    TRANSPORT_CC_URI to one id (the same wherever it appears) and every video section
    that is in use (port not 0, not inactive) has the extmap and an
    ``a=rtcp-fb:<pt|*> transport-cc`` line. Audio needs no feedback line."""
    _, session, sections = split_sections(answer_sdp)
    ids = {
        int(m.group(1))
        for line in session + [line for lines in sections for line in lines]
        if (m := _EXTMAP.match(line)) and m.group(2) == TRANSPORT_CC_URI
    }
    if len(ids) != 1:
        return None
    for lines in sections:
        fields = lines[0][2:].split()
        if fields[0] != "video" or (len(fields) > 1 and fields[1] == "0"):
            continue
        if "a=inactive" in lines:
            continue
        if not (_has_extmap(lines) or _has_extmap(session)):
            return None
        if not any(
            line.startswith("a=rtcp-fb:") and line.split()[1:] == ["transport-cc"] for line in lines
        ):
            return None
    return ids.pop()
