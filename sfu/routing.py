"""Which published Source an incoming RTP packet belongs to (pure, no I/O).

SSRCs announced in the SDP are bound up front. Browsers announce none for simulcast:
each layer's first packets carry the MID and RID header extensions and its RTX
packets MID + repaired-RID, and Chromium stops sending them once receiver reports
acknowledge the SSRC. So an SSRC is bound from its first packets and kept.
"""

from __future__ import annotations

from .rtp.packet import RtpView
from .source import Source


class IngressRouter:
    """SSRC -> Source tables for one publisher, learning SSRCs from header extensions.

    The hot path looks ``by_ssrc`` / ``by_rtx_ssrc`` up directly; only packets of an
    unknown SSRC go through :meth:`learn`.
    """

    def __init__(self) -> None:
        self.by_ssrc: dict[int, Source] = {}
        self.by_rtx_ssrc: dict[int, Source] = {}
        #: every source by (mid, rid); rid None for single-layer tracks
        self.by_mid_rid: dict[tuple[str, str | None], Source] = {}
        self.mid_ext = 0
        self.rid_ext = 0
        self.rrid_ext = 0

    def set_extension_ids(self, mid: int, rid: int, repaired_rid: int) -> None:
        """The publisher leg's ids (0: not negotiated) of MID, RID and repaired-RID."""
        self.mid_ext, self.rid_ext, self.rrid_ext = mid, rid, repaired_rid

    def add(self, source: Source) -> None:
        if source.ssrc is not None:
            self.by_ssrc[source.ssrc] = source
        if source.rtx_ssrc is not None:
            self.by_rtx_ssrc[source.rtx_ssrc] = source
        self.by_mid_rid[(source.params.mid, source.rid)] = source

    def remove(self, source: Source) -> None:
        for table in (self.by_ssrc, self.by_rtx_ssrc):
            for ssrc in [s for s, src in table.items() if src is source]:
                del table[ssrc]
        if self.by_mid_rid.get((source.params.mid, source.rid)) is source:
            del self.by_mid_rid[(source.params.mid, source.rid)]

    def learn(self, pkt: RtpView) -> tuple[Source, bool] | None:
        """Bind ``pkt``'s SSRC from its extensions: (source, is_rtx), or None if unknown.

        A packet naming a layer that is already bound to another SSRC (the publisher
        restarted that stream) moves the binding. The payload type must match the
        source's media or RTX payload type. Raises ``RtpError``, before binding
        anything, when the packet's header-extension elements are malformed.
        """
        mid_value = pkt.extension(self.mid_ext) if self.mid_ext else None
        if not mid_value:
            return None
        mid = mid_value.decode(errors="replace")
        rrid = pkt.extension(self.rrid_ext) if self.rrid_ext else None
        rid_value = rrid or (pkt.extension(self.rid_ext) if self.rid_ext else None)
        rid = rid_value.decode(errors="replace") if rid_value else None
        source = self.by_mid_rid.get((mid, rid))
        if source is None:
            return None
        pt = pkt.payload_type
        rtx_pt = source.params.rtx_payload_type
        if rrid is not None or (pt != source.payload_type and pt == rtx_pt):
            if pt != rtx_pt:
                return None
            if source.rtx_ssrc is not None:
                self.by_rtx_ssrc.pop(source.rtx_ssrc, None)
            source.rtx_ssrc = pkt.ssrc
            self.by_rtx_ssrc[pkt.ssrc] = source
            return source, True
        if pt != source.payload_type:
            return None
        if source.ssrc is not None:
            self.by_ssrc.pop(source.ssrc, None)
        source.ssrc = pkt.ssrc
        self.by_ssrc[pkt.ssrc] = source
        return source, False
