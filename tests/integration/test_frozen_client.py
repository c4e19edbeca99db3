"""A frozen client leaves the room within about 6 s; a brief stall costs nobody their seat.

A real ``parley bot`` process publishes in a room with another participant (a raw
websocket client that records when each server message arrives). The bot is stopped
with SIGSTOP: its process is alive and its sockets are open, but it answers nothing.
ICE consent (``IceConfig.consent_interval`` x ``consent_failures``, by default 1 s x 6)
must remove it, as a browser drops a dead peer, and the other participant must get
``participant_left`` within 7-8 s, not 26 s as with 5 s x 6. First the bot stalls for
3 s and resumes: it must stay.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from sfu.config import IceConfig, SfuConfig
from signaling.server import ServerConfig

from ._wait import until
from .conftest import ServerFactory


class Watcher:
    """A websocket participant that keeps every server message with its arrival time."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._loop = asyncio.get_running_loop()

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append((self._loop.time(), json.loads(msg.data)))

    def arrivals(self, type_: str) -> list[float]:
        return [t for t, m in self.messages if m["type"] == type_]


def test_defaults_are_close_to_a_browser() -> None:
    ice = IceConfig()
    assert 1.0 <= ice.consent_interval <= 2.0  # RFC 7675 checks, randomised 0.8-1.2x
    assert 5.0 <= ice.consent_timeout <= 6.0  # browsers: about 5 s
    # the websocket's heartbeat waits for its pong (half the heartbeat) at least as long
    assert SfuConfig().websocket_heartbeat / 2 >= ice.consent_timeout - 1.0


async def test_a_sigstopped_bot_is_gone_within_8_s_and_a_3_s_stall_is_survived(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    srv = await server_factory(ServerConfig())  # the defaults are what is tested
    loop = asyncio.get_running_loop()
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley",
        "bot",
        "--url",
        srv.url,
        "--room",
        "frozen",
        "--name",
        "sleeper",
        "--duration",
        "60",
        "--json",
        str(tmp_path / "sleeper.json"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    watcher = Watcher()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{srv.url}/ws") as ws:
            await ws.send_json({"type": "join", "room": "frozen", "name": "watcher"})
            reader = asyncio.ensure_future(watcher.run(ws))

            def sleeper() -> Any:
                room = srv.sfu.rooms.get("frozen")
                if room is None:
                    return None
                return next((p for p in room.participants.values() if p.name == "sleeper"), None)

            def publishing() -> bool:
                p = sleeper()
                return (
                    p is not None
                    and len(p.tracks) == 2
                    and all(t.source.packets > 20 for t in p.tracks.values())
                )

            assert await until(publishing, 20.0), "the bot did not start publishing"
            participant = sleeper()
            # a brief stall: 3 s stopped, then running again; nobody is removed
            bot.send_signal(signal.SIGSTOP)
            await asyncio.sleep(3.0)
            bot.send_signal(signal.SIGCONT)
            packets = sum(t.source.packets for t in participant.tracks.values())
            assert await until(
                lambda: sum(t.source.packets for t in participant.tracks.values()) > packets + 20,
                5.0,
            ), "the bot's media did not resume after the stall"
            await asyncio.sleep(4.0)  # past the consent timeout, counted from the stall
            assert not participant.closed, participant.close_reason
            assert watcher.arrivals("participant_left") == []
            # frozen for good
            bot.send_signal(signal.SIGSTOP)
            stopped = loop.time()
            assert await until(lambda: watcher.arrivals("participant_left"), 12.0), (
                "the frozen bot was not removed"
            )
            left = watcher.arrivals("participant_left")[0] - stopped
            print(f"participant_left {left:.1f} s after SIGSTOP")  # shown with pytest -s
            assert 4.0 <= left <= 8.0, f"participant_left {left:.1f} s after SIGSTOP"
            assert participant.close_reason is not None
            assert participant.close_reason.startswith("peer connection"), participant.close_reason
            await ws.close()
            reader.cancel()
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGCONT)
            bot.kill()
            await bot.wait()
