"""Data channels, Chromium <-> bot: the bundled page's chat box and ``ParleyClient.send``
exchange messages with a ``parley bot --data-every`` process through the server's SCTP
data channels (docs/protocol.md, "Data channel"); a page without camera and microphone
publishes the data channel alone and gets the room's messages, not targeted ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from .conftest import AppPage, OpenApp, RunningServer, wait_for

REPO = Path(__file__).resolve().parents[2]
ROOM = "chat1"


async def _chat_lines(page: AppPage) -> list[str]:
    return await page.evaluate(
        "() => [...document.querySelectorAll('#chat-log li')].map((li) => li.textContent)"
    )


async def test_page_and_bot_exchange_data_channel_messages(
    server: RunningServer, open_app: OpenApp, tmp_path: Path
) -> None:
    bot_json = tmp_path / "bot.json"
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parley", "bot", "--url", server.url, "--room", ROOM,
        "--name", "bot", "--duration", "20", "--data-every", "0.5", "--data-to", "ada",
        "--json", str(bot_json), cwd=REPO, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        page = await open_app(server.url, f"room={ROOM}&name=ada&autojoin=1&size=320x240")
        # a watcher without camera and microphone: opening the chat publishes the data
        # channel alone
        watcher = await open_app(server.url, f"room={ROOM}&name=cy&autojoin=1&camera=0&mic=0")
        page_id = await page.wait_published()

        async def watcher_joined() -> bool:
            return await watcher.client_state() == "joined"

        assert await wait_for(watcher_joined, 15.0), watcher.report()
        await watcher.page.click("#chat summary")

        async def watcher_data_open() -> bool:
            return await watcher.evaluate("() => window.parleyApp.client.dataOpen")

        assert await wait_for(watcher_data_open, 15.0), watcher.report()

        async def bot_id() -> str | None:
            return await page.evaluate(
                "() => [...window.parleyApp.client.participants.values()]"
                ".find((p) => p.name === 'bot')?.id ?? null"
            )

        bot_pid = await wait_for(bot_id, 15.0)
        assert bot_pid, page.report()

        # the bot's periodic messages, addressed to "ada" by name, show in her chat box
        async def bot_lines() -> list[str]:
            return [line for line in await _chat_lines(page) if line.startswith("bot: ")]

        assert await wait_for(bot_lines, 15.0), (await _chat_lines(page), page.report())
        assert '"name":"bot"' in (await bot_lines())[0]
        # the page answers through the chat box (text) and the client API (binary)
        assert await wait_for(lambda: page.evaluate("() => window.parleyApp.client.dataOpen"), 5.0)
        await page.page.click("#chat summary")
        await page.page.fill("#chat-input", "hello from chromium")
        await page.page.click("#chat-send")
        assert "You: hello from chromium" in await _chat_lines(page)

        async def watcher_got_it() -> bool:
            return "ada: hello from chromium" in await _chat_lines(watcher)

        assert await wait_for(watcher_got_it, 5.0), await _chat_lines(watcher)
        await page.evaluate(
            "(to) => window.parleyApp.client.send(new Uint8Array([1, 2, 3]), {to: [to]})",
            bot_pid,
        )
        # too large: refused by the server, shown in the chat box, the page stays joined
        await page.evaluate("() => window.parleyApp.client.send({text: 'x'.repeat(20000)})")

        async def refused() -> bool:
            return any("larger than" in line for line in await _chat_lines(page))

        assert await wait_for(refused, 5.0), await _chat_lines(page)
        await asyncio.wait_for(bot.wait(), 40.0)
    finally:
        if bot.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                bot.kill()
            await bot.wait()

    summary: dict[str, Any] = json.loads(bot_json.read_text())
    data = summary["data"]
    got = data["received_first"]
    assert {"from": page_id, "data": {"text": "hello from chromium"}} in got, data
    assert {"from": page_id, "data": "010203"} in got, data
    assert data["received_from"] == {page_id: 2}, data  # the oversize one never came
    assert data["sent"] >= 10, data
    assert await page.client_state() == "joined"  # the refusal did not end the session
    # the bot's messages went to ada alone; the oversize one to nobody
    assert not any(line.startswith(("bot: ", "ada: x")) for line in await _chat_lines(watcher))
