"""What routing needs of a remote description, read with aiortc's SDP parser (part of
the aiortc adapter)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RemoteMedia:
    """One m-line of a remote description, as far as routing needs it."""

    index: int
    mid: str
    kind: str
    direction: str
    port: int
    #: media SSRCs with their RTX SSRC (from ``a=ssrc`` and ``a=ssrc-group:FID``)
    ssrcs: list[tuple[int, int | None]]
    #: the track id of ``a=msid`` (or None)
    msid_track: str | None
    #: extension URI -> id
    extensions: dict[str, int]
    #: offered codec mime types, lower case ("video/vp8", "video/rtx", ...)
    codecs: list[str] = field(default_factory=list)
    #: ``a=setup`` (RFC 8842): "actpass", "active", "passive", or "" when absent
    setup: str = ""
    #: ``a=bundle-only`` (RFC 8843): a port-0 m-line that shares the bundle's transport
    bundle_only: bool = False
    #: the mid is in a BUNDLE group of the description
    bundled: bool = False

    @property
    def live(self) -> bool:
        """Whether the m-line is in use: a port other than 0, or port 0 with
        ``a=bundle-only`` inside a BUNDLE group (RFC 8843 §6: it shares the bundle's
        transport; GStreamer's webrtcbin offers its video so). A plain port 0 is a
        rejected or disabled m-line."""
        return self.port != 0 or (self.bundle_only and self.bundled)


#: Longest description whose offending line is looked for (a bisection of re-parses).
_LOCATE_MAX_LINES = 1000


def _parse_failure(exc: Exception, sdp_text: str) -> str:
    """Why aiortc's SDP parser failed, and on which line: many of its errors are bare
    asserts with no text. The line is the last of the shortest failing prefix (bisection)."""
    from aiortc import sdp as aiortc_sdp

    why = str(exc) or ("malformed" if isinstance(exc, AssertionError) else type(exc).__name__)
    lines = sdp_text.splitlines()
    if not lines or len(lines) > _LOCATE_MAX_LINES:
        return why

    def fails(count: int) -> bool:
        try:
            aiortc_sdp.SessionDescription.parse("\r\n".join(lines[:count]) + "\r\n")
        except Exception:
            return True
        return False

    ok, bad = 0, len(lines)  # a prefix of `ok` lines parses, the whole text does not
    while bad - ok > 1:
        middle = (ok + bad) // 2
        if fails(middle):
            bad = middle
        else:
            ok = middle
    line = lines[bad - 1].strip()
    shown = line if len(line) <= 100 else line[:100] + "..."
    return (
        f"line {bad} ({shown!r}) is malformed"
        if why == "malformed"
        else f"line {bad} ({shown!r}): {why}"
    )


def describe_remote_media(sdp_text: str) -> list[RemoteMedia]:
    """Parse a remote description with aiortc's SDP parser (raises ValueError on junk)."""
    from aiortc import sdp as aiortc_sdp

    try:
        description = aiortc_sdp.SessionDescription.parse(sdp_text)
    except Exception as exc:  # aiortc raises assorted errors on malformed SDP
        raise ValueError(f"unparseable SDP: {_parse_failure(exc, sdp_text)}") from exc
    _, sections = aiortc_sdp.grouplines(sdp_text)
    bundled = {
        str(item)
        for group in description.group
        if group.semantic == "BUNDLE"
        for item in group.items
    }
    setup_of = {"auto": "actpass", "client": "active", "server": "passive"}
    out: list[RemoteMedia] = []
    for index, media in enumerate(description.media):
        lines = sections[index] if index < len(sections) else []
        role = media.dtls.role if media.dtls is not None else None
        rtx_of: dict[int, int] = {}
        for group in media.ssrc_group:
            if group.semantic == "FID" and len(group.items) == 2:
                rtx_of[int(group.items[0])] = int(group.items[1])
        rtx_ssrcs = set(rtx_of.values())
        ssrcs: list[tuple[int, int | None]] = []
        for info in media.ssrc:
            if info.ssrc in rtx_ssrcs or any(s == info.ssrc for s, _ in ssrcs):
                continue
            ssrcs.append((info.ssrc, rtx_of.get(info.ssrc)))
        msid_track = None
        if media.msid:
            parts = media.msid.split()
            if len(parts) == 2:
                msid_track = parts[1]
        mid = media.rtp.muxId or str(index)
        out.append(
            RemoteMedia(
                index=index,
                mid=mid,
                kind=media.kind,
                direction=media.direction or "sendrecv",
                port=media.port,
                ssrcs=ssrcs,
                msid_track=msid_track,
                extensions={ext.uri: ext.id for ext in media.rtp.headerExtensions},
                codecs=[c.mimeType.lower() for c in media.rtp.codecs],
                setup=setup_of.get(role or "", ""),
                bundle_only=any(line.strip() == "a=bundle-only" for line in lines),
                bundled=bool(media.rtp.muxId) and media.rtp.muxId in bundled,
            )
        )
    return out
