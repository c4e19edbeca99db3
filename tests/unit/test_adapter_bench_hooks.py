"""The adapter functions bench/forwarding.py's clients use (sfu/aiortc_adapter.py)."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from sfu import aiortc_adapter


async def test_srtp_profile_restriction_and_no_profile_before_dtls() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        dtls = pc.addTransceiver("video", direction="sendonly").sender.transport
        aiortc_adapter.restrict_srtp_profiles(dtls, b"SRTP_AEAD_AES_128_GCM")
        assert [p.openssl_profile for p in dtls._srtp_profiles] == [b"SRTP_AEAD_AES_128_GCM"]
        with pytest.raises(ValueError, match="SRTP_NONE"):
            aiortc_adapter.restrict_srtp_profiles(dtls, b"SRTP_NONE")
        assert aiortc_adapter.selected_srtp_profile(dtls) is None
        assert aiortc_adapter.ice_sockets(dtls) == []  # nothing gathered yet
    finally:
        await pc.close()
