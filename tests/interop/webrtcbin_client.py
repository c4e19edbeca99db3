#!/usr/bin/python3
"""A GStreamer webrtcbin client of Parley: joins a room over Parley's websocket protocol
(docs/protocol.md), publishes ``videotestsrc`` as VP8 (or H.264: ``--video-codec h264``)
and ``audiotestsrc`` as Opus on its
publish connection, answers the server's subscribe offers on its subscribe connection,
decodes what it receives and prints a JSON summary (frames encoded and decoded).

Run with Debian's ``/usr/bin/python3`` (python3-gi, GStreamer 1.22, gir1.2-nice-0.1);
only the standard library besides gi, so it needs nothing from the project's venv:

    /usr/bin/python3 tests/interop/webrtcbin_client.py --url http://127.0.0.1:8080 \\
        --room demo --name gst --duration 12

webrtcbin runs with its standard settings (``bundle-policy=max-bundle``, no STUN/TURN
server). The one thing done to it is the client's own business: libnice never gathers
on loopback by itself, so the ICE agent of each webrtcbin is given ``--ice-address``
(``nice_agent_add_local_address``) and ICE-TCP is turned off.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading
import time
import traceback
from typing import Any
from urllib.parse import urlparse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

VIDEO_CAPS = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
H264_CAPS = "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000"
#: the published video's encoder and payloader (--video-codec): VP8 (libvpx) or H.264
#: (openh264enc, constrained baseline, from gstreamer1.0-plugins-bad; rtph264pay sends
#: packetization-mode 1, SPS and PPS in band before each IDR)
VIDEO_ENCODERS = {
    "vp8": "vp8enc name=venc deadline=1 cpu-used=8 target-bitrate=300000 keyframe-max-dist=30 "
    f"! rtpvp8pay pt=96 ! {VIDEO_CAPS}",
    "h264": "openh264enc name=venc bitrate=300000 gop-size=30 complexity=low "
    "! video/x-h264,profile=constrained-baseline ! h264parse "
    f"! rtph264pay pt=102 ! {H264_CAPS}",
}
#: what decodes each received video encoding
VIDEO_DECODERS = {
    "VP8": "rtpvp8depay ! vp8dec ! videoconvert",
    "H264": "rtph264depay ! h264parse ! avdec_h264 ! videoconvert",
}
START = time.monotonic()
AUDIO_CAPS = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000"


class WebSocket:
    """A minimal RFC 6455 client (text frames, ping/pong, close): the standard library
    has none and the client must not need the project's venv."""

    def __init__(self, url: str) -> None:
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:80]!r}")
        self.sock.settimeout(None)
        self._lock = threading.Lock()
        self.closed = False

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self._lock:
            self.sock.sendall(header + mask + masked)

    def send_json(self, message: dict[str, Any]) -> None:
        if not self.closed:
            self._send_frame(0x1, json.dumps(message).encode())

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("websocket closed")
            data += chunk
        return data

    def receive(self) -> dict[str, Any] | None:
        """The next JSON message, or None once the server closed the connection."""
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                self.closed = True
                return None
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1):
                message += payload
                if b0 & 0x80:
                    return json.loads(message)

    def close(self) -> None:
        if not self.closed:
            try:
                self._send_frame(0x8, struct.pack("!H", 1000))
            except OSError:
                pass
            self.closed = True
        self.sock.close()


def counter(
    pad: Gst.Pad, counts: dict[str, int], key: str, spans: dict[str, list[float]] | None = None
) -> None:
    """Count the buffers through ``pad`` in ``counts[key]``; with ``spans``, keep the
    times (s since ``START``) of the first and the last one in ``spans[key]``."""

    def probe(_pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        counts[key] += 1
        if spans is not None:
            now = round(time.monotonic() - START, 3)
            spans.setdefault(key, [now, now])[1] = now
        return Gst.PadProbeReturn.OK

    pad.add_probe(Gst.PadProbeType.BUFFER, probe)


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = GLib.MainLoop()
        self.ws = WebSocket(args.url)
        self.sent = {"video_frames": 0, "audio_buffers": 0}
        self.received = {"video_frames": 0, "audio_buffers": 0}
        #: received: [first, last] decoded buffer, s since the start
        self.received_spans: dict[str, list[float]] = {}
        self.summary: dict[str, Any] = {
            "name": args.name, "sent": self.sent, "received": self.received,
            "received_spans": self.received_spans, "errors": [],
            "published_tracks": [], "subscribe_tracks": {}, "events": [],
            "tracks_by_mid": {}, "received_by_mid": {}, "subscribe_answers": [],
        }  # fmt: skip
        self.started = START
        self._ice_agents: list[Any] = []  # the Python wrappers must outlive webrtcbin
        self.pub_pipe: Gst.Pipeline | None = None
        self.sub_pipe: Gst.Pipeline | None = None
        self.sub: Any = None
        self._pending_answer = False
        self.sdp: dict[str, str] = {}
        sys.excepthook = self._exception  # exceptions in GLib callbacks land here

    def _exception(self, kind: Any, value: BaseException, tb: Any) -> None:
        traceback.print_exception(kind, value, tb)
        self.error(f"{kind.__name__}: {value}")

    # ------------------------------------------------------------ helpers

    def event(self, what: str) -> None:
        self.summary["events"].append([round(time.monotonic() - self.started, 2), what])

    def error(self, what: str) -> None:
        self.summary["errors"].append(what)
        self.event("error: " + what)

    def _webrtcbin(self, pipe: Gst.Pipeline, name: str) -> Any:
        webrtc = pipe.get_by_name(name)
        ice = webrtc.get_property("ice-agent")
        self._ice_agents.append(ice)
        ice.set_property("ice-tcp", False)
        address = Nice.Address.new()
        address.set_from_string(self.args.ice_address)
        ice.get_property("agent").add_local_address(address)
        webrtc.connect(
            "notify::connection-state",
            lambda w, _p: self.event(f"{name} {w.get_property('connection-state').value_nick}"),
        )
        return webrtc

    @staticmethod
    def _gathered(webrtc: Any) -> bool:
        return bool(
            webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE
        )

    def _set_local(self, webrtc: Any, description: Any, then: Any) -> None:
        """Set ``description`` as the local one; once webrtcbin has applied it (its
        promise) and gathering is complete, ``then(local SDP text)``."""

        def applied(_promise: Gst.Promise) -> None:
            GLib.idle_add(lambda: self._when_gathered(webrtc, then) and False)

        webrtc.emit("set-local-description", description, Gst.Promise.new_with_change_func(applied))

    def _when_gathered(self, webrtc: Any, then: Any) -> None:
        """Run ``then(sdp_text)`` with the local description once ICE gathering is
        complete (the protocol has no trickle ICE: candidates travel in the SDP)."""
        done = [False]

        def check(*_args: Any) -> bool:
            if not done[0] and self._gathered(webrtc):
                done[0] = True
                then(webrtc.get_property("local-description").sdp.as_text())
            return False

        webrtc.connect("notify::ice-gathering-state", lambda *_a: GLib.idle_add(check))
        GLib.idle_add(check)

    # ------------------------------------------------------------ publish

    def publish(self) -> None:
        a = self.args
        self.pub_pipe = Gst.parse_launch(
            "webrtcbin name=pub bundle-policy=max-bundle "
            f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={a.width},"
            f"height={a.height},framerate={a.fps}/1 ! videoconvert ! queue ! "
            f"{VIDEO_ENCODERS[a.video_codec]} ! pub. "
            "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! "
            "audioresample ! queue ! opusenc name=aenc ! rtpopuspay pt=111 ! "
            f"{AUDIO_CAPS} ! pub."
        )
        counter(self.pub_pipe.get_by_name("venc").get_static_pad("src"), self.sent, "video_frames")
        counter(self.pub_pipe.get_by_name("aenc").get_static_pad("src"), self.sent, "audio_buffers")
        pub = self._webrtcbin(self.pub_pipe, "pub")
        self.pub = pub
        pub.connect("on-negotiation-needed", self._on_negotiation_needed)
        self._watch_bus(self.pub_pipe)
        self.pub_pipe.set_state(Gst.State.PLAYING)

    def _on_negotiation_needed(self, pub: Any) -> None:
        index = 0
        while (transceiver := pub.emit("get-transceiver", index)) is not None:
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
            index += 1

        def created(promise: Gst.Promise) -> None:
            reply = promise.get_reply()
            offer = reply.get_value("offer")
            self._set_local(pub, offer, self._send_publish_offer)

        pub.emit("create-offer", None, Gst.Promise.new_with_change_func(created))

    def _send_publish_offer(self, sdp: str) -> None:
        if self.args.offer_setup != "actpass":
            # webrtcbin itself always offers actpass; an offer that names the role is as
            # valid (RFC 8842), and webrtcbin takes the role the answer leaves it
            sdp = sdp.replace("a=setup:actpass", f"a=setup:{self.args.offer_setup}")
        self.sdp["publish_offer"] = sdp
        self.ws.send_json({"type": "publish_offer", "sdp": sdp})
        self.event("publish_offer sent")

    def _on_publish_answer(self, message: dict[str, Any]) -> None:
        self.sdp["publish_answer"] = message["sdp"]
        self.summary["published_tracks"] = message.get("tracks", [])
        self._set_remote(self.pub, message["sdp"], GstWebRTC.WebRTCSDPType.ANSWER)

    def _set_remote(self, webrtc: Any, text: str, kind: Any, then: Any = None) -> None:
        ok, sdp = GstSdp.SDPMessage.new_from_text(text)
        if ok != GstSdp.SDPResult.OK:
            self.error(f"unparseable SDP from the server: {ok}")
            return
        description = GstWebRTC.WebRTCSessionDescription.new(kind, sdp)
        promise = Gst.Promise.new_with_change_func(lambda _p: then() if then else None)
        webrtc.emit("set-remote-description", description, promise)

    # ------------------------------------------------------------ subscribe

    def _subscriber(self) -> Any:
        if self.sub is None:
            self.sub_pipe = Gst.Pipeline.new("subscribe")
            webrtc = Gst.ElementFactory.make("webrtcbin", "sub")
            webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            self.sub_pipe.add(webrtc)
            self.sub = self._webrtcbin(self.sub_pipe, "sub")
            self.sub.connect("pad-added", self._on_pad)
            self._watch_bus(self.sub_pipe)
            self.sub_pipe.set_state(Gst.State.PLAYING)
        return self.sub

    def _on_subscribe_offer(self, message: dict[str, Any]) -> None:
        self.summary["subscribe_tracks"] = message.get("tracks", {})
        # every track each mid ever carried (the server may reuse inactive m-lines)
        for mid, track in message.get("tracks", {}).items():
            known = self.summary["tracks_by_mid"].setdefault(mid, [])
            if track not in known:
                known.append(track)
        self.sdp["subscribe_offer"] = message["sdp"]
        sub = self._subscriber()

        def applied() -> None:
            GLib.idle_add(self._answer)

        self._set_remote(sub, message["sdp"], GstWebRTC.WebRTCSDPType.OFFER, applied)

    def _answer(self) -> bool:
        sub = self.sub

        def created(promise: Gst.Promise) -> None:
            reply = promise.get_reply()
            answer = reply.get_value("answer")
            if answer is None:
                self.error(f"webrtcbin made no answer: {reply.to_string()}")
                return
            self._set_local(sub, answer, self._send_subscribe_answer)

        sub.emit("create-answer", None, Gst.Promise.new_with_change_func(created))
        return False

    def _send_subscribe_answer(self, sdp: str) -> None:
        self.sdp.setdefault("subscribe_answer", sdp)
        self.summary["subscribe_answers"].append(sdp)
        self.ws.send_json({"type": "subscribe_answer", "sdp": sdp})
        self.event("subscribe_answer sent")

    def _on_pad(self, _webrtc: Any, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        s = caps.get_structure(0)
        media, encoding = s.get_string("media"), (s.get_string("encoding-name") or "").upper()
        if media == "video" and encoding in VIDEO_DECODERS:
            chain, key = VIDEO_DECODERS[encoding], "video_frames"
        elif media == "audio" and encoding == "OPUS":
            chain, key = "rtpopusdepay ! opusdec ! audioconvert", "audio_buffers"
        else:
            self.error(f"received {media} {encoding}: not decoded")
            chain, key = "", ""
        transceiver = pad.get_property("transceiver")
        mid = transceiver.get_property("mid") if transceiver is not None else None
        self.event(f"receiving {media} {encoding} on mid {mid}")
        self.summary.setdefault("received_encodings", {})[str(mid)] = encoding
        if chain:
            bin_ = Gst.parse_bin_from_description(
                f"queue ! {chain} ! fakesink name=sink sync=false async=false", True
            )
        else:
            bin_ = Gst.parse_bin_from_description("fakesink name=sink async=false", True)
        assert self.sub_pipe is not None
        self.sub_pipe.add(bin_)
        bin_.sync_state_with_parent()
        pad.link(bin_.get_static_pad("sink"))
        if key:
            sink = bin_.get_by_name("sink").get_static_pad("sink")
            counter(sink, self.received, key, self.received_spans)
            if mid is not None:  # decoded per m-line too: {"kind", "buffers", "span"}
                per_mid = self.summary["received_by_mid"].setdefault(
                    mid, {"kind": media, "buffers": 0}
                )
                counter(sink, per_mid, "buffers", per_mid.setdefault("spans", {}))

    # ------------------------------------------------------------ signaling and lifecycle

    def _watch_bus(self, pipe: Gst.Pipeline) -> None:
        bus = pipe.get_bus()
        bus.add_signal_watch()

        def on_message(_bus: Gst.Bus, message: Gst.Message) -> None:
            if message.type == Gst.MessageType.ERROR:
                err, _debug = message.parse_error()
                self.error(f"{message.src.get_name()}: {err.message}")

        bus.connect("message", on_message)

    def _reader(self) -> None:
        try:
            while (message := self.ws.receive()) is not None:
                GLib.idle_add(self._handle, message)
        except (OSError, ConnectionError, ValueError) as exc:
            if not self.ws.closed:
                GLib.idle_add(self.error, f"websocket: {exc!r}")
        GLib.idle_add(self.loop.quit)

    def _handle(self, message: dict[str, Any]) -> bool:
        kind = message.get("type")
        if kind == "joined":
            self.summary["id"] = message.get("id")
            self.event("joined")
            if self.args.publish:
                self.publish()
        elif kind == "publish_answer":
            self.event("publish_answer")
            self._on_publish_answer(message)
        elif kind == "subscribe_offer":
            self.event("subscribe_offer")
            self._on_subscribe_offer(message)
        elif kind == "error":
            self.error(f"server error {message.get('code')}: {message.get('message')}")
        elif kind == "left":
            self.summary["left_reason"] = message.get("reason")
            self.loop.quit()
        return False

    def _leave(self) -> bool:
        self.summary["counted_at_s"] = round(time.monotonic() - self.started, 2)
        self.summary["counts_at_leave"] = {
            "sent": dict(self.sent), "received": dict(self.received)
        }  # fmt: skip
        self.ws.send_json({"type": "leave"})
        GLib.timeout_add_seconds(3, self.loop.quit)
        return False

    def run(self) -> dict[str, Any]:
        threading.Thread(target=self._reader, daemon=True).start()
        join: dict[str, Any] = {"type": "join", "room": self.args.room, "name": self.args.name}
        if self.args.reuse_mlines != "default":
            join["reuse_mlines"] = self.args.reuse_mlines == "true"
        self.ws.send_json(join)
        GLib.timeout_add(int(self.args.duration * 1000), self._leave)
        GLib.timeout_add(int((self.args.duration + 20) * 1000), self.loop.quit)  # a bound
        self.loop.run()
        for pipe in (self.pub_pipe, self.sub_pipe):
            if pipe is not None:
                pipe.set_state(Gst.State.NULL)
        self.ws.close()
        self.summary["sdp"] = self.sdp
        return self.summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--name", default="webrtcbin")
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--ice-address", default="127.0.0.1")
    parser.add_argument(
        "--offer-setup",
        choices=("actpass", "active", "passive"),
        default="actpass",
        help="the a=setup of the publish offer sent (passive: Parley must be the DTLS client)",
    )
    parser.add_argument(
        "--reuse-mlines",
        choices=("default", "true", "false"),
        default="default",
        help="join's reuse_mlines (default: not sent; the server then reuses m-lines)",
    )
    parser.add_argument("--no-publish", dest="publish", action="store_false")
    parser.add_argument(
        "--video-codec",
        choices=sorted(VIDEO_ENCODERS),
        default="vp8",
        help="the published video's codec (h264: openh264enc, packetization-mode 1)",
    )
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()
    Gst.init(None)
    summary = Client(args).run()
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0 if not summary["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
