"""A participant that reaches Parley's media only through a TURN relay (run in its own netns).

``python -m tests.integration._relay_client WS_URL SERVER_IP:PORT LOCAL_IP``

Joins room ``nat`` as ``behind``, publishes a tone and a test pattern and subscribes, with
the ICE servers the server sends in ``joined`` (as the web client does) and
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
from typing import Any

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


def _ice_servers(joined: dict[str, Any]) -> tuple[IceServer, ...]:
    return tuple(
        IceServer(urls=tuple(s["urls"]), username=s.get("username"), credential=s.get("credential"))
        for s in joined["ice_servers"]
    )


async def main(url: str, server: str, local: str) -> dict[str, object]:
    result: dict[str, object] = {"direct_path": _direct_path(server)}
    async with aiohttp.ClientSession() as http:
        # the ICE servers come with ``joined``; a subscribe offer may follow it at once,
        # so the client takes them while it reads ``joined`` (setting them after
        # ``join()`` returns could be too late for that offer)
        client = Client(
            http,
            url,
            answer=True,
            ice_from_joined=lambda joined: IceConfig(
                servers=_ice_servers(joined), addresses=(local,), relay_only=True
            ),
        )
        await client.connect()
        try:
            joined = await client.join("nat", "behind")
            result["ice_servers"] = joined["ice_servers"]
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.publish()
            async with asyncio.timeout(40):
                while await client.packets_received() < 30:
                    await asyncio.sleep(0.2)
            result["packets_received"] = await client.packets_received()
            result["media_after_s"] = round(loop.time() - started, 2)
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
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))), flush=True)
