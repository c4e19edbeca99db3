"""Simulcast publishing for the bot: three VP8 encodings on one m-line, like Chromium.

Modules: :mod:`.layers`, :mod:`.sdp`, :mod:`.vp8`, :mod:`.stream`, :mod:`.sender`,
:mod:`.video`; the names below are re-exported here.

aiortc cannot send simulcast (one encoding per sender, and its SDP model drops
``a=rid`` / ``a=simulcast``), so the bot keeps aiortc's sendonly video transceiver
for SDP, ICE and DTLS only and does the rest here:

* :func:`munge_simulcast_offer` rewrites the offer *text*: ``a=rid:… send`` and
  ``a=simulcast:send …`` lines, the mid / rtp-stream-id / repaired-rtp-stream-id
  extmaps, and no ``a=ssrc`` / ``a=ssrc-group`` lines (the server learns each
  layer's SSRC from the MID and RID header extensions, as with a browser).
* :class:`Vp8LayerEncoder` encodes one layer with libvpx through PyAV;
  :func:`vp8_packetize` splits a frame into payloads with a VP8 descriptor.
* :class:`LayerStream` (pure) turns payloads into RTP packets for one layer (own
  SSRC, sequence numbers, timestamp offset, MID + RID extensions), keeps a small
  packet cache and builds RTX retransmissions (OSN prefix, MID + repaired-RID).
* :class:`SimulcastSender` (pure) owns the layers and routes RTCP from the server:
  PLI/FIR set a keyframe request on the layer whose SSRC was named, generic NACKs
  return RTX packets, REMB is recorded (not acted on).
* :class:`SimulcastVideo` is the I/O edge: a paced loop that renders the pattern at
  each layer's size, encodes in a worker thread and sends through a callable
  (``MediaPort.send_rtp`` in the bot), plus a sender report per layer every second.
"""

from loadgen.media.simulcast.layers import (
    DEFAULT_LAYERS,
    MAX_PAYLOAD,
    URI_ABS_SEND_TIME,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    LayerSpec,
)
from loadgen.media.simulcast.sdp import MungedOffer, SimulcastExtensions, munge_simulcast_offer
from loadgen.media.simulcast.sender import SimulcastSender, UplinkControl
from loadgen.media.simulcast.stream import LayerStream
from loadgen.media.simulcast.video import SimulcastVideo
from loadgen.media.simulcast.vp8 import Vp8LayerEncoder, vp8_is_keyframe, vp8_packetize

__all__ = [
    "DEFAULT_LAYERS",
    "LayerSpec",
    "LayerStream",
    "MAX_PAYLOAD",
    "MungedOffer",
    "SimulcastExtensions",
    "SimulcastSender",
    "SimulcastVideo",
    "URI_ABS_SEND_TIME",
    "URI_MID",
    "URI_REPAIRED_RID",
    "URI_RID",
    "UplinkControl",
    "Vp8LayerEncoder",
    "munge_simulcast_offer",
    "vp8_is_keyframe",
    "vp8_packetize",
]
