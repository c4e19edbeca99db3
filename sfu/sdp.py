"""Simulcast in SDP text: what aiortc's SDP model drops (pure functions, no aiortc).

aiortc parses and regenerates descriptions from its own model, which has no
``a=rid`` nor ``a=simulcast`` (RFC 8851 / RFC 8853). Parley therefore reads the RIDs
a publisher offers from the raw offer text and writes the matching ``recv`` lines
into the raw answer text it sends back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"

#: RFC 8851: rid-id = 1*(alpha-numeric / "-" / "_"); Parley keeps them short.
_RID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: At most this many layers per m-line (browsers send 3, RFC allows more).
MAX_LAYERS = 8


class SimulcastError(ValueError):
    """An offer's simulcast description cannot be used."""


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
