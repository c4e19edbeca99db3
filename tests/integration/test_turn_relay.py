"""A participant behind a network with no path to Parley's media but a coturn relay.

Three network namespaces, made like ``loadgen/impair`` makes them (veth pairs, no
forwarding): the server's (``10.99.201.2``), the client's (``10.99.202.2``) and this test's
in between (``10.99.201.1`` and ``10.99.202.1``), where Debian's ``coturn`` listens on the
client's side and relays from the server's side. The client reaches the server's
websocket only through a TCP forwarder here (the reverse proxy of a real deployment) and
no UDP at all: with ``iceTransportPolicy: relay`` its only candidates are coturn's. A
second participant on the server's side publishes and subscribes directly. Media must
flow both ways: server to the client through the relay, and the client's through the
relay to the server and on to the other participant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from loadgen.impair.link import ImpairedLink
from sfu.config import IceConfig

from ._clients import Client
from ._parley_process import parley_command, parley_serve

ROOT = Path(__file__).resolve().parents[2]
PORT = 8090
TURN_PORT = 3478
TURN_USER, TURN_PASSWORD = "parley", "relay-test-secret"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _tcp_forwarder(listen: str, target: str) -> AsyncIterator[None]:
    """``listen`` -> ``target`` (the websocket's reverse proxy, TCP only)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target, PORT)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, listen, PORT)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def _process(args: list[str], ready: str | None, log: list[str]) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT
    )
    assert proc.stdout is not None

    async def collect() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            log.append(line.decode(errors="replace").rstrip())

    reader = asyncio.ensure_future(collect())
    try:
        if ready is not None:
            async with asyncio.timeout(30):
                while not any(ready in line for line in log):
                    if proc.returncode is not None:
                        raise AssertionError("\n".join(log))
                    await asyncio.sleep(0.05)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(reader, return_exceptions=True)


def _coturn(listen: str, relay: str, workdir: Path) -> list[str]:
    turnserver = shutil.which("turnserver")
    assert turnserver is not None, "coturn is not installed (apt-get install coturn)"
    return [
        turnserver, "-n", f"--listening-ip={listen}", f"--relay-ip={relay}",
        f"--listening-port={TURN_PORT}", "--min-port=49152", "--max-port=49500",
        "--lt-cred-mech", f"--user={TURN_USER}:{TURN_PASSWORD}", "--realm=parley",
        "--no-tls", "--no-dtls", "--no-cli", "--no-software-attribute",
        "--log-file=stdout", "--simple-log", "--verbose",
        f"--pidfile={workdir / 'turnserver.pid'}", f"--userdb={workdir / 'turndb'}",
    ]  # fmt: skip


async def test_media_both_ways_through_a_coturn_relay_only(tmp_path: Path) -> None:
    server_link, client_link = ImpairedLink(201), ImpairedLink(202)
    server_ip, client_ip = server_link.peer_address, client_link.peer_address
    relay_ip, turn_ip = server_link.host_address, client_link.host_address
    turn_log: list[str] = []
    server_log: list[str] = []
    async with server_link, client_link:
        serve = [*parley_command(), "serve", "--host", server_ip, "--port", str(PORT)]
        serve += ["--allow-anonymous"]  # a test network of its own, not a public address
        turn = f"turn:{turn_ip}:{TURN_PORT}?transport=udp,{TURN_USER},{TURN_PASSWORD}"
        serve += ["--ice-address", server_ip, "--ice-server", turn]
        async with (
            _process(_coturn(turn_ip, relay_ip, tmp_path), "Total General servers", turn_log),
            _process(server_link.command(serve), "Parley serving on", server_log),
            _tcp_forwarder(turn_ip, server_ip),
            aiohttp.ClientSession() as http,
        ):
            url = f"http://{server_ip}:{PORT}"
            direct = Client(http, url, answer=True, ice=IceConfig(addresses=(relay_ip,)))
            await direct.connect()
            try:
                await direct.join("nat", "direct")
                await direct.publish()
                relay_client = [
                    sys.executable, "-m", "tests.integration._relay_client",
                    f"http://{turn_ip}:{PORT}", f"{server_ip}:{PORT}", client_ip,
                ]  # fmt: skip
                proc = await asyncio.create_subprocess_exec(
                    *client_link.command(relay_client),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=ROOT,
                )
                async with asyncio.timeout(90):
                    out, err = await proc.communicate()
                received_direct = await direct.packets_received()
            finally:
                await direct.close()
                for pc in (direct.pub_pc, direct.sub_pc):
                    if pc is not None:
                        await pc.close()
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert str(result["direct_path"]).startswith("unreachable"), result
    print(result)
    assert "error" not in result, (result, turn_log[-30:], server_log[-30:])
    assert result["local_candidate_types"] == ["relay"], result
    assert int(result["packets_received"]) >= 30, result
    # the relayed participant's media went through coturn to the server and on
    assert received_direct >= 30, received_direct
    assert any("ALLOCATE" in line and "success" in line for line in turn_log), turn_log[-30:]


async def test_the_server_hands_turn_to_clients_and_allocates_none_itself(tmp_path: Path) -> None:
    """``--ice-server turn:...`` is for clients: Parley's own connections gather no relay
    candidate (each would cost every join a round trip to the TURN server and load it)."""
    turn_log: list[str] = []
    turn = f"turn:127.0.0.1:{TURN_PORT}?transport=udp,{TURN_USER},{TURN_PASSWORD}"
    async with (
        _process(_coturn("127.0.0.1", "127.0.0.1", tmp_path), "Total General servers", turn_log),
        parley_serve("--ice-server", turn) as server,
        aiohttp.ClientSession() as http,
    ):
        client = await Client(http, server.url, answer=True).connect()
        try:
            joined = await client.join("turn", "ann")
            answer = await client.publish()
            await asyncio.sleep(1)  # an allocation would have been logged by now
        finally:
            await client.close()
            if client.pub_pc is not None:
                await client.pub_pc.close()
    assert joined["ice_servers"] == [
        {
            "urls": [f"turn:127.0.0.1:{TURN_PORT}?transport=udp"],
            "username": TURN_USER,
            "credential": TURN_PASSWORD,
        }
    ]
    assert "typ host" in answer["sdp"] and "typ relay" not in answer["sdp"], answer["sdp"]
    assert not [line for line in turn_log if "ALLOCATE" in line], turn_log
