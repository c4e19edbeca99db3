"""The page's layout at small and large windows (docs/web.md, "Controls").

At 420x300 the control bar is one row and takes a small part of the window, a remote
tile shows the whole picture (a bot's 4:3 video in a 16:9 tile keeps its frame counter),
and the device pickers show their device's whole name and do not look disabled; the same
bar stays one row at 800x600 and 1280x800.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loadgen.bot import BotConfig, run_bot

from .conftest import AppPage, OpenApp, RunningServer, wait_for

#: The control bar, its visible items and the device pickers, measured in the page.
_LAYOUT = """
() => {
  const bar = document.getElementById("controls");
  const box = (el) => { const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height}; };
  const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const items = [...bar.querySelectorAll("button, select")].filter(shown).map((el) => ({id: el.id, ...box(el)}));
  const canvas = document.createElement("canvas").getContext("2d");
  const pickers = [...document.querySelectorAll("#controls select")].filter(shown).map((select) => {
    const style = getComputedStyle(select);
    canvas.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const text = select.selectedOptions[0]?.textContent ?? "";
    return {
      id: select.id, text, disabled: select.disabled, color: style.color, opacity: style.opacity,
      // the room the text has: the box less its padding and the arrow (about 20 px)
      room: select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20,
      textWidth: canvas.measureText(text).width, ...box(select),
    };
  });
  const button = getComputedStyle(document.getElementById("mic"));
  return {width: innerWidth, height: innerHeight, bar: box(bar), items, pickers,
          buttonColor: button.color};
}
"""

_REMOTE_VIDEOS = """
() => [...window.parleyApp.tiles.values()].filter((t) => !t.self).map((t) => ({
  name: t.label.textContent, fit: getComputedStyle(t.video).objectFit,
  videoWidth: t.video.videoWidth, videoHeight: t.video.videoHeight,
}))
"""


def _check_bar(layout: dict[str, Any]) -> None:
    bar, items = layout["bar"], layout["items"]
    assert items, layout
    # one row: every control's top within a few pixels of the others', all inside the window
    tops = [i["top"] for i in items]
    assert max(tops) - min(tops) <= 3, f"the control bar wraps: {items}"
    assert all(0 <= i["left"] and i["right"] <= layout["width"] for i in items), items
    assert bar["height"] <= 0.2 * layout["height"], f"the control bar is {bar['height']} px high"


def _check_pickers(layout: dict[str, Any]) -> None:
    assert {p["id"] for p in layout["pickers"]} == {"mic-select", "cam-select"}, layout
    for picker in layout["pickers"]:
        assert picker["text"], picker
        assert not picker["disabled"], f"{picker['id']} is disabled"
        # looks like the other controls, not greyed out
        assert picker["color"] == layout["buttonColor"] and picker["opacity"] == "1", picker
        # (clientWidth is rounded to whole pixels)
        assert picker["textWidth"] <= picker["room"] + 1, f"{picker['id']} cuts its text: {picker}"
        assert 0 <= picker["left"] and picker["right"] <= layout["width"], picker
        assert 0 <= picker["top"] and picker["bottom"] <= layout["height"], picker


async def _layout(page: AppPage) -> dict[str, Any]:
    return await page.evaluate(_LAYOUT)


async def test_the_control_bar_is_one_row_and_remote_pictures_are_whole(
    server: RunningServer, open_app: OpenApp
) -> None:
    ada = await open_app(
        server.url, "room=l1&name=Ada&autojoin=1&size=320x180", width=420, height=300
    )
    await ada.wait_published()
    bot = asyncio.ensure_future(
        run_bot(BotConfig(url=server.url, room="l1", name="bot", duration=30.0))
    )
    try:

        async def bot_video() -> list[dict[str, Any]] | None:
            videos = await ada.evaluate(_REMOTE_VIDEOS)
            return videos if videos and videos[0]["videoHeight"] > 0 else None

        videos = await wait_for(bot_video, 15.0)
        assert videos, await ada.remote_tiles()
        # the bot's picture is 4:3 in a 16:9 tile: shown whole, letterboxed
        assert videos[0]["videoWidth"] * 3 == videos[0]["videoHeight"] * 4, videos
        assert [v["fit"] for v in videos] == ["contain"], videos

        # the pickers are filled once the devices are known
        async def pickers_filled() -> bool:
            return bool(
                await ada.evaluate(
                    "() => document.getElementById('mic-select').options.length > 0"
                    " && document.getElementById('cam-select').options.length > 0"
                )
            )

        assert await wait_for(pickers_filled, 5.0)
        small = await _layout(ada)
        _check_bar(small)
        # too narrow for the pickers in the row: "Devices" opens them above the bar
        assert small["pickers"] == [], small["pickers"]
        await ada.page.click("#devices-toggle")
        _check_pickers(await _layout(ada))
        await ada.page.keyboard.press("Escape")
        assert (await _layout(ada))["pickers"] == []

        # larger windows: still one row, the pickers in it
        for width, height in ((800, 600), (1280, 800)):
            await ada.page.set_viewport_size({"width": width, "height": height})
            layout = await _layout(ada)
            _check_bar(layout)
            _check_pickers(layout)
        # a double click fills the tile instead (the user's choice)
        await ada.page.dblclick(".tile:not(.self)")
        assert [v["fit"] for v in await ada.evaluate(_REMOTE_VIDEOS)] == ["cover"]
    finally:
        bot.cancel()
