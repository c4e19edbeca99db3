"""Parley's selective forwarding unit: forwards RTP packets without decoding them."""
