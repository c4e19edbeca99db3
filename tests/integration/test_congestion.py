"""Congestion with real impairment: a subscriber behind a 300 kbit/s veth link in its own
network namespace (tc tbf), next to an unconstrained one."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from loadgen.impair.link import ImpairedLink, Shape
from sfu.config import IceConfig, SfuConfig
from sfu.forwarder import Forwarder
from sfu.participant import Participant
from sfu.room import Sfu
from signaling.server import SFU_KEY, ServerConfig, create_app

ROOM = "congested"
#: ``parley bot`` in its own process (so bots do not share the server's event loop)
BOT = [sys.executable, "-m", "parley", "bot", "--room", ROOM]


async def _serve(addresses: tuple[str, ...]) -> tuple[web.AppRunner, Sfu, int]:
    config = ServerConfig(sfu=SfuConfig(ice=IceConfig(addresses=addresses)))
    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    # every address of this namespace: lo and the veth ends the test creates
    site = web.TCPSite(runner, "0.0.0.0", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, app[SFU_KEY], port


def _participant(sfu: Sfu, name: str) -> Participant | None:
    room = sfu.rooms.get(ROOM)
    if room is None:
        return None
    return next((p for p in room.participants.values() if p.name == name), None)


def _video_forwarder(sfu: Sfu, name: str) -> Forwarder | None:
    """The forwarder of the (only) remote video track subscriber ``name`` receives."""
    p = _participant(sfu, name)
    if p is None:
        return None
    return next((s.forwarder for s in p.subscriptions.values() if s.forwarder.is_video), None)


def _video_rid(sfu: Sfu, name: str) -> str | None:
    f = _video_forwarder(sfu, name)
    if f is None:
        return None
    return f.current.rid if f.current is not None else "paused"


def _audio_loss(summary: dict[str, Any], after_ms: float) -> tuple[int, int]:
    """(packets, lost) of the remote audio track from the first whole second after
    ``after_ms`` of the bot's clock to the last whole one: RTP sequence numbers the bot
    saw, a duplicate counted once (aiortc's own counters count duplicates as received)."""
    (audio,) = [t for t in summary["tracks"] if t["kind"] == "audio"]
    first = int(after_ms / 1000) + 1
    received = sum(audio["audio_packets_per_second"][first:-1])
    missing = sum(audio["audio_packets_missing_per_second"][first:-1])
    return received + missing, missing


def _print_figures(
    summary_path: Path,
    trace: list[tuple[float, str | None, str | None]],
    limited_at: float,
    lifted_at: float,
) -> None:
    """The figures to compare between versions: time to the first switch down, seconds
    paused and layer changes while limited, time back to f, audio lost while limited."""
    limited = [s for t, s, _ in trace if limited_at <= t <= lifted_at]
    down = next((t - limited_at for t, s, _ in trace if t >= limited_at and s != "f"), None)
    up = next((t - lifted_at for t, s, _ in trace if t >= lifted_at and s == "f"), None)
    changes = sum(1 for a, b in zip(limited, limited[1:], strict=False) if a != b)
    figures: dict[str, Any] = {
        "switch_down_s": down and round(down, 1),
        "paused_s_while_limited": round(0.1 * limited.count("paused"), 1),
        "layer_changes_while_limited": changes,
        "back_to_f_s": up and round(up, 1),
    }
    try:
        summary = json.loads(summary_path.read_text())
        layers = [e for e in summary["events"] if e["type"] == "layer"]
        reached_f = next(i for i, e in enumerate(layers) if e["rid"] == "f")
        limited_ms = next(e["t_ms"] for e in layers[reached_f:] if e["rid"] != "f")
        for label, after in (("audio_from_switch", 0), ("audio_after_2.5s", 2500)):
            packets, lost = _audio_loss(summary, limited_ms + after)
            figures[label] = f"{lost}/{packets} lost"
    except (OSError, ValueError, StopIteration, KeyError) as e:
        figures["audio"] = f"not measured: {e!r}"
    print("figures:", figures)


@pytest.mark.parametrize("transport_cc", [True, False], ids=["transport-cc", "remb"])
async def test_a_subscriber_behind_300_kbits_drops_layers_and_recovers(
    tmp_path: Path, transport_cc: bool
) -> None:
    """The subscriber bots keep transport-cc (``parley bot``'s default: the server
    estimates with ``sfu/gcc/``), or answer as plain aiortc does (``--no-transport-cc``:
    REMB, ``sfu/bwe.py``)."""
    link = ImpairedLink(0)
    async with link:
        runner, sfu, port = await _serve(("127.0.0.1", link.host_address))
        try:
            await _run_scenario(link, sfu, port, tmp_path, transport_cc)
        finally:
            await runner.cleanup()


async def _run_scenario(
    link: ImpairedLink, sfu: Sfu, port: int, tmp_path: Path, transport_cc: bool
) -> None:
    url = f"http://127.0.0.1:{port}"
    remb_only = [] if transport_cc else ["--no-transport-cc"]
    # every bot in its own process: the server's event loop stays the server's
    publisher = await asyncio.create_subprocess_exec(
        *BOT, "--url", url, "--name", "cam", "--simulcast", "--duration", "42",
        "--json", str(tmp_path / "cam.json"),
    )  # fmt: skip
    free = await asyncio.create_subprocess_exec(
        *BOT, "--url", url, "--name", "free", "--no-publish", "--duration", "40",
        "--json", str(tmp_path / "free.json"), *remb_only,
    )  # fmt: skip
    await asyncio.sleep(1.0)
    summary_path = tmp_path / "slow.json"
    slow = await asyncio.create_subprocess_exec(
        *link.command(
            [
                *BOT, "--url", f"http://{link.host_address}:{port}",
                "--name", "slow", "--no-publish", "--duration", "38",
                "--ice-address", link.peer_address, "--json", str(summary_path),
                # starved on purpose: aiortc's receiver stalls on the limit's holes (see
                # docs/congestion.md); this test judges what the SFU forwards, below
                "--max-freeze-ms", "60000", *remb_only,
            ]
        )
    )  # fmt: skip
    trace: list[tuple[float, str | None, str | None]] = []
    estimator: list[Any] = []
    pacing: list[tuple[float, int]] = []
    estimators: list[tuple[float, str]] = []

    async def watch(until: float) -> None:
        while time.monotonic() < until:
            trace.append((time.monotonic(), _video_rid(sfu, "slow"), _video_rid(sfu, "free")))
            slow_p = _participant(sfu, "slow")
            if slow_p is not None:
                estimator[:] = slow_p.bwe.events
                estimators.append((time.monotonic(), type(slow_p.bwe).__name__))
                pacing.append((time.monotonic(), slow_p.pacer.paced_packets))
            await asyncio.sleep(0.1)

    t0 = time.monotonic()
    await watch(t0 + 9.0)
    assert trace[-1][1:] == ("f", "f"), trace[-5:]
    limited_at = time.monotonic()
    await asyncio.to_thread(link.shape, Shape(rate_kbit=300))
    await watch(limited_at + 12.0)
    lifted_at = time.monotonic()
    await asyncio.to_thread(link.shape, Shape())
    await watch(lifted_at + 16.0)
    await asyncio.gather(slow.wait(), publisher.wait(), free.wait())

    compact = [(round(t - t0, 1), s, f) for t, s, f in trace]
    changes = [c for i, c in enumerate(compact) if i == 0 or c[1:] != compact[i - 1][1:]]
    events = [(round(t - t0, 1), what, cap and round(cap)) for t, what, cap in estimator]
    context = (round(limited_at - t0, 1), round(lifted_at - t0, 1), changes, events)
    # printed whole (pytest shows a failing test's output; assertion messages are cut)
    used = {name for t, name in estimators if t >= limited_at - 5.0}
    print("estimator:", used)
    print("limited, lifted, layer changes, estimator events:", context)
    print("paced packets:", [(round(t - t0, 1), n) for t, n in pacing[::5]])
    _print_figures(summary_path, trace, limited_at, lifted_at)

    # the variant runs the estimator it is about
    assert used == {"SendSideEstimator" if transport_cc else "BandwidthEstimator"}, used

    def first(after: float, wanted: set[str]) -> float | None:
        return next((t - after for t, s, _ in trace if t >= after and s in wanted), None)

    paused = [t for t, s, _ in trace if limited_at <= t <= lifted_at and s == "paused"]
    if transport_cc:
        # the table: a lower layer within 2 s (0.4-0.6 s measured), never a pause
        down = first(limited_at, {"q", "h"})
        assert down is not None and down < 2.0, (down, context)
        assert not paused, context
    else:
        # REMB only: a probe's overshoot is blamed on the probe now (it paused 1.5-2.8 s in
        # 2 runs of 4 before; 0 of 7 after), but aiortc's REMB collapsing to ~100 kbit/s
        # at the onset, with loss evidence, can still pause q (8 s in one CI run of
        # 2026-12-07): not asserted here, issue 14 stays open for it (docs/congestion.md)
        down = first(limited_at, {"q", "paused"})
        # REMB only, 4 s (loosened from 3 s during issue 14): since REMB probes need
        # proof, the onset on this path goes through `h` (a loss decrease), and `q`
        # waits for the next report past the 2 s after that switch: 1.0-3.9 s measured
        # (docs/congestion.md, "Where issue 14 stands"); a REMB-only receiver gets
        # less than the table, which holds with transport-cc
        assert down is not None and down < 4.0, (down, context)
    # the unconstrained subscriber keeps the top layer all along
    free_from = next(t for t, _, free in trace if free == "f")
    assert free_from < limited_at, trace
    assert {free for t, _, free in trace if free_from <= t <= lifted_at + 14} == {"f"}, context
    # recovery: back to f within 15 s of lifting the limit, only ever going up meanwhile
    up = first(lifted_at, {"f"})
    assert up is not None and up < 15.0, (up, context)
    order = {"paused": 0, "q": 1, "h": 2, "f": 3}
    # (REMB only: aiortc computes its REMB over about the last second, so for a second
    # after the lift it still describes the limit and may still lower the layer: a CI
    # run of 2026-12-07 paused q 0.2 s after the lift on REMBs of 129-95 kbit/s sent
    # from 0.4 s before it; transport-cc feedback reports each packet within 0.1 s)
    settle = 0.0 if transport_cc else 1.0
    climb = [s for t, s, _ in trace if lifted_at + settle <= t <= lifted_at + up]
    assert all(order[a] <= order[b] for a, b in zip(climb, climb[1:], strict=False)), context
    # the pacer held video back while the estimate was capped: from the limit until the
    # climb back to f (a down switch straight to q may need no pacing at all: its
    # keyframe can fit the bucket; the climb's keyframes of h and f under the cap do not)
    paced = [n for t, n in pacing if limited_at <= t <= lifted_at + up]
    assert paced and paced[-1] > paced[0], (paced, context)

    summary = json.loads(summary_path.read_text())
    assert summary["ok"], (summary["failed"], summary)
    # audio keeps flowing through the limited phase, once the 3 s of reaction are over
    # (the bot's clock: its first layer change after it had reached f is the downswitch)
    layers = [e for e in summary["events"] if e["type"] == "layer"]
    reached_f = next(i for i, e in enumerate(layers) if e["rid"] == "f")
    limited_ms = next(e["t_ms"] for e in layers[reached_f:] if e["rid"] != "f")
    packets, lost = _audio_loss(summary, limited_ms + 2500)
    assert packets > 500 and lost <= 0.01 * packets, (packets, lost, context)


async def test_five_percent_loss_is_repaired(tmp_path: Path) -> None:
    """5 % random loss toward a subscriber (iptables in its namespace): video stays smooth
    thanks to NACK/RTX from the SFU cache, audio loses under 1 % thanks to redundancy."""
    link = ImpairedLink(1)
    async with link:
        runner, sfu, port = await _serve(("127.0.0.1", link.host_address))
        try:
            await asyncio.to_thread(link.shape, Shape(loss=0.05))
            url = f"http://127.0.0.1:{port}"
            publisher = await asyncio.create_subprocess_exec(
                *BOT, "--url", url, "--name", "cam", "--duration", "24",
                "--json", str(tmp_path / "cam.json"),
            )  # fmt: skip
            await asyncio.sleep(1.0)
            summary_path = tmp_path / "lossy.json"
            lossy = await asyncio.create_subprocess_exec(
                *link.command(
                    [
                        *BOT, "--url", f"http://{link.host_address}:{port}",
                        "--name", "lossy", "--no-publish", "--duration", "20",
                        "--ice-address", link.peer_address, "--json", str(summary_path),
                        # the verdict's loss counts the whole run on a link losing 5 %,
                        # audio before the SFU's redundancy starts too: what is left
                        # after repair is asserted below
                        "--max-loss", "10",
                    ]
                )
            )  # fmt: skip
            await asyncio.gather(lossy.wait(), publisher.wait())
        finally:
            await runner.cleanup()
    summary = json.loads(summary_path.read_text())
    assert summary["ok"], (summary["failed"], summary)
    tracks = {t["kind"]: t for t in summary["tracks"]}
    video, audio = tracks["video"], tracks["audio"]
    assert video["frames_decoded"] > 150, video
    # no freeze over a second (measured: 130-140 ms in four runs; aiortc receivers NACK a
    # packet once, and the SFU sends retransmissions twice against a lost one)
    assert video["max_freeze_ms"] < 1000, video
    # audio: packets that never arrived (RTP sequence numbers seen by the receiver, a
    # duplicate counted once) once redundancy is on: it starts with the first receiver
    # report showing loss. (Decoded frames would overstate it: aiortc's audio jitter
    # buffer discards the frames it prefetched around each hole, about 5 per packet.)
    first = int(audio["first_frame_ms"] / 1000) + 3
    received = sum(audio["audio_packets_per_second"][first:-1])
    missing = sum(audio["audio_packets_missing_per_second"][first:-1])
    assert received > 500, audio["audio_packets_per_second"]
    assert missing <= 0.01 * (received + missing), (
        missing,
        audio["audio_packets_missing_per_second"],
    )


async def test_a_publisher_behind_a_narrow_uplink_keeps_the_layers_that_arrive(
    tmp_path: Path,
) -> None:
    """The publisher's uplink (1.5 Mbit/s) takes q and h but not f: it stops sending f (as browsers do on
    loss), and subscribers keep what still arrives: the one asking for 720 gets h."""
    link = ImpairedLink(2)
    async with link:
        runner, sfu, port = await _serve(("127.0.0.1", link.host_address))
        try:
            await asyncio.to_thread(link.shape, None, Shape(rate_kbit=1500))
            url = f"http://127.0.0.1:{port}"
            cam = await asyncio.create_subprocess_exec(
                *link.command(
                    [
                        *BOT, "--url", f"http://{link.host_address}:{port}", "--name", "cam",
                        "--simulcast", "--duration", "28", "--ice-address", link.peer_address,
                        "--json", str(tmp_path / "cam.json"),
                    ]
                )
            )  # fmt: skip
            # the watchers join once the publisher has seen its uplink and dropped f: the
            # first seconds, all three layers at once through 1.5 Mbit/s, lose packets of
            # q and h that may never be repaired, and aiortc's video jitter buffer stalls
            # on such a hole for 512 packets (half a minute of q); browsers would not
            await asyncio.sleep(5.0)
            watchers = [
                await asyncio.create_subprocess_exec(
                    *BOT,
                    "--url",
                    url,
                    "--name",
                    f"h{height}",
                    "--no-publish",
                    "--max-height",
                    str(height),
                    "--duration",
                    "20",
                    "--json",
                    str(tmp_path / f"h{height}.json"),
                    # aiortc's jitter buffer stalls on the uplink's holes (below), and
                    # the packets the publisher's uplink drops are lost for good: the
                    # verdict is about joining and decoding, not smoothness or loss here
                    "--max-freeze-ms",
                    "60000",
                    "--max-loss",
                    "100",
                )  # fmt: skip
                for height in (180, 720)
            ]
            log: list[tuple[float, str | None, int]] = []

            log_180: list[tuple[float, str | None, int]] = []

            async def watch_720() -> None:
                loop = asyncio.get_running_loop()
                for _ in range(42):
                    await asyncio.sleep(0.5)
                    for name, into in (("h720", log), ("h180", log_180)):
                        f = _video_forwarder(sfu, name)
                        if f is not None and not f.closed:  # (closed: the watcher leaves)
                            rid = f.current.rid if f.current is not None else None
                            into.append((loop.time(), rid, f.packets_sent))

            await asyncio.gather(cam.wait(), *(w.wait() for w in watchers), watch_720())
        finally:
            await runner.cleanup()
    cam_summary = json.loads((tmp_path / "cam.json").read_text())
    uplink = cam_summary["simulcast"]["uplink"]
    # f goes off (and, tried again now and then, off again); q and h stay on all along
    assert [n for _, n in uplink["changes"]][:1] == [2], uplink
    assert min(n for _, n in uplink["changes"]) == 2, uplink
    for height, size in ((180, [320, 180]), (720, [640, 360])):
        summary = json.loads((tmp_path / f"h{height}.json").read_text())
        assert summary["ok"], (summary["failed"], summary)
        (video,) = [t for t in summary["tracks"] if t["kind"] == "video"]
        assert video["resolutions"][-1] == size, (height, video)
        # (not "many frames": packets the publisher's uplink lost for good leave holes in
        # what the SFU forwards, and aiortc's video jitter buffer releases nothing past a
        # hole until 512 packets later; measured: 5-9 frames in some runs, 150-300 in
        # others. Browsers drop the incomplete frame and go on. What the SFU forwards is
        # checked below.)
        assert video["frames_decoded"] > 0, video
    # the SFU forwards the one asking for 720 what arrives, to the end, without a pause:
    # h, or f while the publisher tries it again
    end = log[-1][0]
    last = [(rid, sent) for t, rid, sent in log if t >= end - 5.0]
    assert {rid for rid, _ in last} <= {"h", "f"}, log
    assert last[-1][1] - last[0][1] > 100, log
    # and the one asking for 180 q, all along once it started
    started = [(rid, sent) for _, rid, sent in log_180 if rid is not None]
    assert started and {rid for rid, _ in started} == {"q"}, log_180
    assert started[-1][1] - started[0][1] > 100, log_180


@pytest.mark.parametrize("transport_cc", [True, False], ids=["transport-cc", "remb"])
async def test_parley_bot_runs_behind_an_impaired_link_of_its_own(
    tmp_path: Path, transport_cc: bool
) -> None:
    """``parley bot --link 3 --link-loss 3``: the bot makes the namespace, the veth pair
    and the loss itself, joins from 10.99.3.2, decodes video and hears the audio with
    the loss repaired."""
    runner, sfu, port = await _serve(("127.0.0.1", "10.99.3.1"))
    try:
        url = f"http://127.0.0.1:{port}"
        cam = await asyncio.create_subprocess_exec(
            *BOT, "--url", url, "--name", "cam", "--simulcast", "--duration", "18",
            "--json", str(tmp_path / "cam.json"),
        )  # fmt: skip
        await asyncio.sleep(1.0)
        summary_path = tmp_path / "slow.json"
        remb_only = [] if transport_cc else ["--no-transport-cc"]
        slow = await asyncio.create_subprocess_exec(
            *BOT, "--url", url, "--name", "slow", "--no-publish", "--duration", "14",
            "--link", "3", "--link-loss", "3", *remb_only, "--json", str(summary_path),
        )  # fmt: skip
        addresses: set[str] = set()

        async def watch() -> None:
            while slow.returncode is None:
                p = _participant(sfu, "slow")
                if p is not None and p.remote_address is not None:
                    addresses.add(p.remote_address)
                await asyncio.sleep(0.5)

        await asyncio.gather(slow.wait(), cam.wait(), watch())
    finally:
        await runner.cleanup()
    summary = json.loads(summary_path.read_text())
    assert summary["ok"], {k: v for k, v in summary.items() if k != "events"}
    assert slow.returncode == 0
    assert summary["link"]["bot_address"] == "10.99.3.2", summary["link"]
    assert summary["link"]["down"] == {"rate_kbit": None, "loss_pct": 3.0}
    assert addresses == {"10.99.3.2"}, addresses
    (video,) = [t for t in summary["tracks"] if t["kind"] == "video"]
    assert video["frames_decoded"] > 60, video
    (audio,) = [t for t in summary["tracks"] if t["kind"] == "audio"]
    received = sum(audio["audio_packets_per_second"][3:-1])
    missing = sum(audio["audio_packets_missing_per_second"][3:-1])
    assert received > 300 and missing <= 0.01 * (received + missing), (received, missing)
    assert "pl3h" not in {name for _, name in socket.if_nameindex()}  # the link is gone
