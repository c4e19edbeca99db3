"""``parley serve --ice-announce``: a server behind a 1:1 NAT tells peers its public address.

The NAT is real: in the test's own network namespace an iptables DNAT rule sends what is
addressed to ``203.0.113.10`` (a documentation address standing for a cloud VM's public
one) to ``127.0.0.1``, where the server's ICE sockets are bound. The server must announce
only the public address in its candidates, and media must flow through the NAT.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest

from ._clients import Client
from ._parley_process import parley_serve

PUBLIC = "203.0.113.10"
RULE = ["OUTPUT", "-d", PUBLIC, "-j", "DNAT", "--to-destination", "127.0.0.1"]


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=10)


@pytest.fixture
def one_to_one_nat() -> Iterator[None]:
    _run("ip", "route", "add", f"{PUBLIC}/32", "dev", "lo")
    try:
        _run("iptables", "-t", "nat", "-A", *RULE)
        try:
            yield
        finally:
            _run("iptables", "-t", "nat", "-D", *RULE)
    finally:
        _run("ip", "route", "del", f"{PUBLIC}/32", "dev", "lo")


def _candidate_addresses(sdp: str) -> set[str]:
    return set(re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host", sdp))


async def test_announced_address_in_candidates_and_media_through_the_nat(
    one_to_one_nat: None,
) -> None:
    async with (
        parley_serve("--ice-announce", PUBLIC) as server,
        aiohttp.ClientSession() as http,
    ):
        publisher = await Client(http, server.url).connect()
        subscriber = await Client(http, server.url, answer=True).connect()
        try:
            await publisher.join("nat", "pub")
            answer = await publisher.publish()
            await subscriber.join("nat", "sub")
            offer = await subscriber.wait_for("subscribe_offer", timeout=20)
            async with asyncio.timeout(30):
                while await subscriber.packets_received() < 30:
                    await asyncio.sleep(0.1)
        finally:
            await subscriber.close()
            await publisher.close()
            for pc in (publisher.pub_pc, subscriber.sub_pc):
                if pc is not None:
                    await pc.close()
    assert _candidate_addresses(answer["sdp"]) == {PUBLIC}, answer["sdp"]
    assert _candidate_addresses(offer["sdp"]) == {PUBLIC}, offer["sdp"]
