// A libwebrtc client of Parley (the npm package @roamhq/wrtc), for tests/interop/test_libwebrtc.py.
// Joins a room over Parley's websocket signaling (docs/protocol.md), publishes a moving I420
// pattern and a 440 Hz tone through wrtc's nonstandard sources, receives what the server
// offers through RTCVideoSink/RTCAudioSink, and after --duration s prints a JSON summary.
// Usage: node client.mjs --url http://127.0.0.1:8080 --room R [--name N] [--duration 12]
//        [--fps 15] [--width 320] [--height 240] [--no-publish] [--codecs opus,vp8]
// --codecs: sent as join's `codecs` (what this build decodes: it has no H.264)
import wrtc from "@roamhq/wrtc";
import WebSocket from "ws";

const { RTCPeerConnection, nonstandard } = wrtc;
const { RTCVideoSource, RTCAudioSource, RTCVideoSink, RTCAudioSink } = nonstandard;
const args = { name: "wrtc", duration: "12", fps: "15", width: "320", height: "240" };
for (let i = 2; i < process.argv.length; i++) {
  const key = process.argv[i].replace(/^--/, "");
  if (key === "no-publish") args.noPublish = true;
  else args[key] = process.argv[++i];
}
const [W, H, FPS, DURATION] = [+args.width, +args.height, +args.fps, +args.duration];
const t0 = Date.now();
const now = () => (Date.now() - t0) / 1000;
const config = { iceServers: [] }; // no STUN/TURN: loopback only
const summary = {
  name: args.name, sent: { video_frames: 0, audio_samples: 0 }, received: {},
  received_spans: {}, resolutions: [], published_tracks: [], subscribe_tracks: {},
  tracks_by_mid: {}, received_by_participant: {},
  events: [], errors: [], sdp: {}, stats: {},
};
const event = (what) => summary.events.push([Math.round(now() * 1000) / 1000, what]);
const error = (what) => { summary.errors.push(String(what)); event(`error: ${what}`); };
const ws = new WebSocket(args.url.replace(/^http/, "ws") + "/ws");
const send = (message) => ws.send(JSON.stringify(message));

// The protocol has no trickle ICE: send a description once gathering is complete.
async function gathered(pc) {
  while (pc.iceGatheringState !== "complete") await new Promise((r) => setTimeout(r, 20));
  return pc.localDescription.sdp;
}

// ---- publish: a moving pattern (I420) and a tone (16-bit PCM, 10 ms chunks) ----
const pub = new RTCPeerConnection(config);
const video = new RTCVideoSource();
const audio = new RTCAudioSource();
const timers = [];
async function publish() {
  pub.addTransceiver(video.createTrack(), { direction: "sendonly" });
  pub.addTransceiver(audio.createTrack(), { direction: "sendonly" });
  await pub.setLocalDescription(await pub.createOffer());
  summary.sdp.publish_offer = await gathered(pub);
  send({ type: "publish_offer", sdp: summary.sdp.publish_offer });
  const data = new Uint8ClampedArray(W * H * 1.5).fill(128);
  timers.push(setInterval(() => {
    const n = summary.sent.video_frames++;
    for (let y = 0; y < H; y++) data.fill((y + 4 * n) % 256, y * W, (y + 1) * W); // luma bars
    video.onFrame({ width: W, height: H, data });
  }, 1000 / FPS));
  let due = Date.now();
  timers.push(setInterval(() => {
    for (; due <= Date.now(); due += 10) { // catch up on a late timer: 100 chunks a second
      const samples = new Int16Array(480);
      for (let i = 0; i < 480; i++) {
        const s = summary.sent.audio_samples++;
        samples[i] = 8000 * Math.sin((2 * Math.PI * 440 * s) / 48000);
      }
      audio.onData({ samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 });
    }
  }, 10));
}

// ---- subscribe: count what the sinks deliver ----
const sub = new RTCPeerConnection(config);
const sinks = [];
function count(key, n, mid) {
  summary.received[key] = (summary.received[key] ?? 0) + n;
  // whose: the latest subscribe_offer says what a (possibly reused) m-line carries
  const participant = summary.subscribe_tracks[mid]?.participant ?? "(inactive m-line)";
  const whose = (summary.received_by_participant[participant] ??= {});
  whose[key] = (whose[key] ?? 0) + n;
  const span = (summary.received_spans[key] ??= [now(), now()]);
  span[1] = now();
}
sub.ontrack = ({ track, transceiver }) => {
  const mid = transceiver.mid;
  event(`track ${track.kind} mid ${mid}`);
  if (sinks.some((sink) => sink.mid === mid)) return; // a reused m-line: its sink still counts
  if (track.kind === "video") {
    const sink = new RTCVideoSink(track);
    sink.onframe = ({ frame }) => {
      count("video_frames", 1, mid);
      if (!summary.resolutions.some(([w, h]) => w === frame.width && h === frame.height))
        summary.resolutions.push([frame.width, frame.height]);
    };
    sinks.push(Object.assign(sink, { mid }));
  } else {
    const sink = new RTCAudioSink(track);
    sink.ondata = ({ numberOfFrames }) => count("audio_samples", numberOfFrames, mid);
    sinks.push(Object.assign(sink, { mid }));
  }
};
async function answer(message) {
  summary.sdp.subscribe_offer ??= message.sdp; // the first one (a fixture)
  summary.subscribe_tracks = message.tracks;
  for (const [mid, t] of Object.entries(message.tracks)) {
    const seen = (summary.tracks_by_mid[mid] ??= []);
    if (!seen.some((s) => s.track === t.track)) seen.push(t);
  }
  await sub.setRemoteDescription({ type: "offer", sdp: message.sdp });
  await sub.setLocalDescription(await sub.createAnswer());
  const sdp = await gathered(sub);
  summary.sdp.subscribe_answer ??= sdp;
  send({ type: "subscribe_answer", sdp });
}

// ---- signaling ----
let finish;
const done = new Promise((resolve) => (finish = resolve));
const join = { type: "join", room: args.room, name: args.name };
if (args.codecs) join.codecs = args.codecs.split(",");
ws.on("open", () => send(join));
ws.on("error", (e) => { error(`websocket: ${e.message}`); finish(); });
ws.on("close", () => finish());
ws.on("message", async (raw) => {
  const message = JSON.parse(raw.toString());
  try {
    if (message.type === "joined") {
      event("joined");
      summary.id = message.id;
      if (!args.noPublish) await publish();
    } else if (message.type === "publish_answer") {
      event("publish_answer");
      summary.sdp.publish_answer = message.sdp;
      summary.published_tracks = message.tracks;
      await pub.setRemoteDescription({ type: "answer", sdp: message.sdp });
    } else if (message.type === "subscribe_offer") {
      event("subscribe_offer");
      await answer(message);
    } else if (message.type === "error") {
      error(`server error ${message.code}: ${message.message}`);
    } else if (message.type === "left") {
      summary.left_reason = message.reason;
      finish();
    }
  } catch (e) {
    error(e.stack ?? e);
  }
});
pub.onconnectionstatechange = () => event(`publish ${pub.connectionState}`);
sub.onconnectionstatechange = () => event(`subscribe ${sub.connectionState}`);

// ---- leave after --duration s, with getStats' counters of both connections ----
setTimeout(async () => {
  summary.counted_at_s = now();
  for (const [name, pc, type] of [["publish", pub, "outbound-rtp"], ["subscribe", sub, "inbound-rtp"]]) {
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type !== type) return;
      const { kind, packetsSent, packetsReceived, packetsLost, framesEncoded, framesDecoded } = s;
      (summary.stats[name] ??= []).push({ kind, packetsSent, packetsReceived, packetsLost, framesEncoded, framesDecoded });
    });
  }
  send({ type: "leave" });
  setTimeout(finish, 3000);
}, DURATION * 1000);
setTimeout(() => { error("no end"); finish(); }, (DURATION + 20) * 1000);

await done;
timers.forEach(clearInterval);
sinks.forEach((sink) => sink.stop());
pub.close();
sub.close();
ws.close();
process.stdout.write(JSON.stringify(summary) + "\n");
process.exit(summary.errors.length ? 1 : 0);
