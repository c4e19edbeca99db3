"""``parley bot`` keeps transport-cc in its subscribe answer and sends the feedback: the
server then estimates that bot's downlink with the send-side estimator (``sfu/gcc/``)
from the feedback it receives; with ``--no-transport-cc`` the bot answers as plain
aiortc does and the server stays on REMB (``sfu/bwe.py``). Both decode normally."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from sfu.bwe import BandwidthEstimator
from sfu.gcc.estimator import SendSideEstimator
from sfu.participant import Participant
from tests.integration.conftest import RunningServer

PARLEY = [sys.executable, "-m", "parley", "bot", "--room", "tcc"]


def _participant(server: RunningServer, name: str) -> Participant | None:
    room = server.sfu.rooms.get("tcc")
    if room is None:
        return None
    return next((p for p in room.participants.values() if p.name == name), None)


async def test_bot_subscriber_gets_the_send_side_estimator_unless_told_not_to(
    server: RunningServer, tmp_path: Path
) -> None:
    cam = await asyncio.create_subprocess_exec(
        *PARLEY, "--url", server.url, "--name", "cam", "--duration", "13",
        "--json", str(tmp_path / "cam.json"),
    )  # fmt: skip
    subscribers = [
        await asyncio.create_subprocess_exec(
            *PARLEY,
            "--url",
            server.url,
            "--name",
            name,
            "--no-publish",
            "--duration",
            "10",
            "--json",
            str(tmp_path / f"{name}.json"),
            *extra,
        )  # fmt: skip
        for name, extra in (("tcc", []), ("remb", ["--no-transport-cc"]))
    ]
    seen: dict[str, tuple[str, int]] = {}

    async def watch() -> None:
        """What the server holds of each subscriber, once it has received for a while."""
        deadline = time.monotonic() + 12.0
        while time.monotonic() < deadline:
            for name in ("tcc", "remb"):
                p = _participant(server, name)
                if p is not None and p.subscriptions and p.counters["rtcp_in"] > 20:
                    seen[name] = (type(p.bwe).__name__, p.counters["twcc_feedback"])
            await asyncio.sleep(0.5)

    await asyncio.gather(watch(), cam.wait(), *(s.wait() for s in subscribers))
    print("server side:", seen)
    assert seen["tcc"][0] == SendSideEstimator.__name__, seen
    assert seen["tcc"][1] > 30, seen  # about 10 a second, on the server's side
    assert seen["remb"][0] == BandwidthEstimator.__name__ and seen["remb"][1] == 0, seen

    for name, negotiated in (("tcc", True), ("remb", False)):
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        assert summary["ok"], (name, summary["verdict"])
        twcc = summary["transport_cc"]
        print(name, twcc)
        assert twcc["enabled"] is negotiated and twcc["negotiated"] is negotiated, twcc
        if negotiated:
            assert twcc["feedback_sent"] > 40 and twcc["packets_recorded"] > 300, twcc
            assert twcc["tap_errors"] == 0, twcc
            # arrival times are the kernel's (sfu/aiortc_adapter/arrival_stamps.py): all
            # but the very first packets (the first read turns the stamping on)
            tapped = twcc["kernel_stamped"] + twcc["loop_stamped"]
            assert tapped > 300 and twcc["loop_stamped"] <= 0.02 * tapped, twcc
        else:
            assert twcc["feedback_sent"] == twcc["packets_recorded"] == 0, twcc
        # the subscribe connection's sockets hold 2 MB (the kernel reports twice that)
        assert summary["receive_buffers"] and min(summary["receive_buffers"]) >= 4 << 20
        # aiortc still decodes everything (the tap only looks)
        tracks = {t["kind"]: t for t in summary["tracks"]}
        assert tracks["video"]["frames_decoded"] > 60, (name, tracks["video"])
        assert tracks["audio"]["frames_decoded"] > 200, (name, tracks["audio"])
