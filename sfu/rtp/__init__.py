"""RTP/RTCP wire helpers: header view, extension blocks, VP8 descriptor, rewriting."""
