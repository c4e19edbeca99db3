"""Chromium answers Parley's subscribe offer, with transport-cc added by
sfu.sdp.offer_transport_cc, keeping the extension and transport-cc feedback."""

from __future__ import annotations

from playwright.async_api import Browser

from sfu.rtp.extensions import TRANSPORT_CC_URI
from sfu.sdp import answer_transport_cc, offer_transport_cc
from tests.unit.test_sdp_transport_cc import subscribe_pc

ANSWER = """async (sdp) => {
  const pc = new RTCPeerConnection({iceServers: []});
  await pc.setRemoteDescription({type: "offer", sdp});
  const answer = await pc.createAnswer();
  pc.close();
  return answer.sdp;
}"""


async def test_chromium_keeps_transport_cc_when_offered(chromium: Browser) -> None:
    pc = subscribe_pc()
    try:
        await pc.setLocalDescription(await pc.createOffer())
        plain = pc.localDescription.sdp
    finally:
        await pc.close()
    offer = offer_transport_cc(plain, prefer=7)
    page = await chromium.new_page()
    answer = await page.evaluate(ANSWER, offer)
    assert f"a=extmap:7 {TRANSPORT_CC_URI}" in answer
    assert answer_transport_cc(answer) == 7
    # without the munging Chromium has nothing to keep
    assert answer_transport_cc(await page.evaluate(ANSWER, plain)) is None
