"""A participant that reaches Parley's media only through a TURN relay (run in its own netns).

``python -m tests.integration._relay_client WS_URL TURN_URL USER PASSWORD SERVER_IP:PORT LOCAL_IP``

Joins room ``nat`` as ``behind``, publishes a tone and a test pattern and subscribes, with
``iceTransportPolicy: relay`` (``IceConfig.relay_only``): its only candidates are the TURN
server's relay addresses, none on ``LOCAL_IP`` (which it would gather on otherwise). First it checks that the server's own address is unreachable
from here (no direct path). Prints one JSON line: whether the server was reachable
directly, its local candidate types, and the RTP packets it received.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import aiohttp

from sfu.config import IceConfig, IceServer

from ._clients import Client


def _direct_path(address: str) -> str:
    """``unreachable`` when a TCP connect to the server itself fails for lack of a route."""
    host, port = address.rsplit(":", 1)
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect((host, int(port)))
        except OSError as exc:
            return f"unreachable: {exc}"
    return "reachable"


async def main(
    url: str, turn: str, user: str, password: str, server: str, local: str
) -> dict[str, object]:
    result: dict[str, object] = {"direct_path": _direct_path(server)}
    ice = IceConfig(
        servers=(IceServer(urls=(turn,), username=user, credential=password),),
        addresses=(local,),
        relay_only=True,
    )
    async with aiohttp.ClientSession() as http:
        client = await Client(http, url, answer=True, ice=ice).connect()
        try:
            await client.join("nat", "behind")
            await client.publish()
            async with asyncio.timeout(40):
                while await client.packets_received() < 30:
                    await asyncio.sleep(0.2)
            result["packets_received"] = await client.packets_received()
            types = set()
            for pc in (client.pub_pc, client.sub_pc):
                assert pc is not None
                for transceiver in pc.getTransceivers():
                    gatherer = transceiver.receiver.transport.transport.iceGatherer
                    types.update(c.type for c in gatherer.getLocalCandidates())
            result["local_candidate_types"] = sorted(types)
            await asyncio.sleep(2)  # let the server forward our media to the other side
        except TimeoutError:
            result["packets_received"] = await client.packets_received()
            result["error"] = "no media within 40 s"
        finally:
            await client.close()
            for pc in (client.pub_pc, client.sub_pc):
                if pc is not None:
                    await pc.close()
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:7]))), flush=True)
