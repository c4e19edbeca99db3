// @ts-check
/**
 * Parley's page: the join form, the call grid, the controls. All protocol and peer
 * connection work is `parley-client.js`'s; this module only turns its events into DOM
 * and the user's clicks into its calls. See docs/web.md.
 *
 * URL parameters: `room`, `name`, `token` fill the form in; `autojoin=1` joins at once;
 * `stats=1` shows the stats overlays; `size=WxH` sets the camera size (default 1280x720);
 * `camera=0` / `mic=0` join without sending that.
 */

import { DEFAULT_SIMULCAST_ENCODINGS, ParleyClient, ParleyError, websocketUrl } from "./parley-client.js";

/** @typedef {import("./parley-client.js").RemoteTrack} RemoteTrack */
/** @typedef {import("./parley-client.js").Participant} Participant */
/** @typedef {import("./parley-client.js").LayerRequest} LayerRequest */

/** Debounce of layer requests after a tile is resized (ms). */
const LAYER_DEBOUNCE_MS = 250;
/**
 * A tile asks for at most this multiple of its rendered size. The server forwards the
 * largest layer within the request; with layers each twice the size of the one below
 * (Chromium's, the bot's), asking for just under twice the size gets the smallest layer
 * that is at least as large as the tile: sharp, and no larger than it needs.
 */
const LAYER_HEADROOM = 1.9;
/** Audio level (0–1) above which a participant counts as speaking, and for how long after. */
const SPEAKING_LEVEL = 0.02;
const SPEAKING_HOLD_MS = 600;
const LEVEL_INTERVAL_MS = 200;
const STATS_INTERVAL_MS = 1000;
/** Smallest tile width (CSS px) before the grid scrolls. */
const MIN_TILE_WIDTH = 160;

// ------------------------------------------------------------------ DOM helpers

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {{new (): T}} type
 * @returns {T}
 */
function byId(id, type) {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`#${id} missing`);
  return el;
}

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

const ui = {
  status: byId("status", HTMLElement),
  retryNow: byId("retry-now", HTMLButtonElement),
  roomLabel: byId("room-label", HTMLElement),
  notice: byId("notice", HTMLElement),
  noticeText: byId("notice-text", HTMLElement),
  noticeClose: byId("notice-close", HTMLButtonElement),
  lobby: byId("lobby", HTMLElement),
  form: byId("join-form", HTMLFormElement),
  room: byId("room", HTMLInputElement),
  name: byId("name", HTMLInputElement),
  token: byId("token", HTMLInputElement),
  withCamera: byId("with-camera", HTMLInputElement),
  withMic: byId("with-mic", HTMLInputElement),
  joinButton: byId("join", HTMLButtonElement),
  call: byId("call", HTMLElement),
  grid: byId("grid", HTMLElement),
  controls: byId("controls", HTMLElement),
  mic: byId("mic", HTMLButtonElement),
  cam: byId("cam", HTMLButtonElement),
  micSelect: byId("mic-select", HTMLSelectElement),
  camSelect: byId("cam-select", HTMLSelectElement),
  pickers: byId("device-pickers", HTMLElement),
  devicesToggle: byId("devices-toggle", HTMLButtonElement),
  statsToggle: byId("stats-toggle", HTMLButtonElement),
  copyLink: byId("copy-link", HTMLButtonElement),
  enableSound: byId("enable-sound", HTMLButtonElement),
  leave: byId("leave", HTMLButtonElement),
  chat: byId("chat", HTMLDetailsElement),
  chatUnread: byId("chat-unread", HTMLElement),
  chatLog: byId("chat-log", HTMLOListElement),
  chatForm: byId("chat-form", HTMLFormElement),
  chatInput: byId("chat-input", HTMLInputElement),
  chatSend: byId("chat-send", HTMLButtonElement),
};

/**
 * @param {string} text
 * @param {"error" | "info"} [kind="error"]
 */
function showNotice(text, kind = "error") {
  ui.noticeText.textContent = text;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
}

function clearNotice() {
  ui.notice.hidden = true;
  ui.noticeText.textContent = "";
}

/**
 * The status line (an aria-live region). `spoken`, when given, is what screen readers
 * get instead of `text`: a countdown ticks in `text` several times a second, and only
 * changes of `spoken` are announced.
 * @param {"idle" | "connecting" | "connected" | "reconnecting" | "error"} state
 * @param {string} text
 * @param {string} [spoken]
 */
function setStatus(state, text, spoken) {
  ui.status.dataset.state = state;
  ui.retryNow.hidden = state !== "reconnecting";
  // "Connection lost. " is left out on narrow windows (the rest says enough)
  const lost = "Connection lost. ";
  const shown = text.startsWith(lost) ? [element("span", "wide-only", lost), text.slice(lost.length)] : [text];
  if (spoken === undefined) {
    if (ui.status.textContent !== text) ui.status.replaceChildren(...shown);
    return;
  }
  let visual = ui.status.querySelector(".visual");
  let said = ui.status.querySelector(".sr-only");
  if (!visual || !said) {
    visual = element("span", "visual");
    visual.setAttribute("aria-hidden", "true");
    said = element("span", "sr-only");
    ui.status.replaceChildren(visual, said);
  }
  visual.replaceChildren(...shown);
  if (said.textContent !== spoken) said.textContent = spoken;
}

/**
 * A control's words: its label (shown on wide screens, read by screen readers) and its
 * tooltip.
 * @param {HTMLButtonElement} button
 * @param {string} text
 */
function setLabel(button, text) {
  const label = button.querySelector(".label");
  if (label) label.textContent = text;
  else button.textContent = text;
  button.title = text;
}

/** @param {boolean} open */
function showPickers(open) {
  ui.pickers.classList.toggle("open", open);
  ui.devicesToggle.setAttribute("aria-expanded", String(open));
}

/** @param {string} name */
function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const letters = parts.length > 1 ? [parts[0], parts[parts.length - 1]] : parts;
  return letters.map((p) => [...p][0] ?? "").join("").toUpperCase() || "?";
}

/** @param {number} bitsPerSecond */
function formatBitrate(bitsPerSecond) {
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(2)} Mbit/s`;
  return `${Math.round(bitsPerSecond / 1e3)} kbit/s`;
}

// ------------------------------------------------------------------ tiles

/** One participant's tile: video, name, speaking highlight, stats overlay. */
class Tile {
  /**
   * @param {string} id  participant id ("self" for us)
   * @param {string} name
   * @param {boolean} self
   */
  constructor(id, name, self) {
    this.id = id;
    this.name = name;
    this.self = self;
    this.el = element("div", `tile${self ? " self" : ""} novideo`);
    this.el.dataset.participant = id;
    this.video = /** @type {HTMLVideoElement} */ (element("video"));
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.video.muted = true; // sound goes through the <audio> element
    this.placeholder = element("div", "placeholder", initials(name));
    this.label = element("div", "name", self ? `${name} (you)` : name);
    this.badges = element("div", "badges");
    this.stats = element("pre", "stats");
    this.el.append(this.video, this.placeholder, this.label, this.badges, this.stats);
    /** @type {HTMLAudioElement | null} */
    this.audio = null;
    /** @type {RemoteTrack | null} */
    this.videoTrack = null;
    /** @type {RemoteTrack | null} */
    this.audioTrack = null;
    this.visible = true;
    /** @type {{maxWidth: number, maxHeight: number} | null} what we last asked for */
    this.asked = null;
    this.lastRequest = "";
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.layerTimer = undefined;
    this.speakingUntil = 0;
    /** @type {number | undefined} RTP timestamp of the last audio level seen */
    this.lastRtpTimestamp = undefined;
    /** @type {{at: number, bytes: number, frames: number} | null} */
    this.lastSample = null;
    this.stalledSamples = 0;
    this.video.addEventListener("resize", () => this.scheduleLayerRequest(0));
    if (!self) {
      // the whole picture (letterboxed) by default; a double click fills the tile (cropped)
      this.el.title = "Double-click: fill the tile / show the whole picture";
      this.el.addEventListener("dblclick", () => {
        this.el.classList.toggle("fill");
        this.scheduleLayerRequest(0);
      });
    }
  }

  /** @param {string} text @param {boolean} on */
  badge(text, on) {
    const existing = [...this.badges.children].find((b) => b.textContent === text);
    if (on && !existing) this.badges.append(element("span", "", text));
    if (!on && existing) existing.remove();
  }

  /** Sends this tile's layer request after `delayMs` (restarted by each call). @param {number} delayMs */
  scheduleLayerRequest(delayMs) {
    clearTimeout(this.layerTimer);
    this.layerTimer = setTimeout(() => sendLayerRequest(this), delayMs);
  }

  /** @param {boolean} speaking */
  setSpeaking(speaking) {
    this.el.classList.toggle("speaking", speaking);
  }
}

// ------------------------------------------------------------------ the app

/** @type {ParleyClient | null} */
let client = null;
/** @type {MediaStream | null} */
let localStream = null;
/** @type {Tile | null} */
let selfTile = null;
/** @type {Map<string, Tile>} by participant id */
const tiles = new Map();
/** @type {ReturnType<typeof setInterval> | undefined} */
let statsTimer;
/** @type {ReturnType<typeof setInterval> | undefined} */
let levelTimer;
let currentRoom = "";
/**
 * Where the reconnect loop is: attempt `attempt` starts at `at` (performance.now()), or
 * runs now (`trying`). Shown as a countdown in the status line.
 */
const reconnectView = { attempt: 0, at: 0, trying: false };
/** @type {ReturnType<typeof setInterval> | undefined} ticks the countdown */
let reconnectTicker;

const params = new URLSearchParams(location.search);

/** The server's base URL: the directory this page is served from (a prefix is kept). */
const serverBase = new URL(".", location.href).href;

const resizeObserver = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const tile = tileOf(entry.target);
    if (tile) tile.scheduleLayerRequest(LAYER_DEBOUNCE_MS);
  }
});

const intersectionObserver = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      const tile = tileOf(entry.target);
      if (!tile || tile.visible === entry.isIntersecting) continue;
      tile.visible = entry.isIntersecting;
      tile.scheduleLayerRequest(0);
    }
  },
  { threshold: 0 },
);

/** @param {Element} target */
function tileOf(target) {
  const id = target instanceof HTMLElement ? target.dataset.participant : undefined;
  return id === undefined ? undefined : tiles.get(id);
}

/**
 * What a tile needs of its video: the size the video is shown at × devicePixelRatio,
 * with headroom; paused when out of view. A remote video fits inside its tile
 * (object-fit: contain) unless the user made it fill the tile (cover).
 * @param {Tile} tile
 * @returns {Required<LayerRequest>}
 */
function layerRequestFor(tile) {
  const rect = tile.el.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const aspect = tile.video.videoWidth && tile.video.videoHeight
    ? tile.video.videoWidth / tile.video.videoHeight
    : 16 / 9;
  // contain: the tile scaled down to the video's aspect; cover: scaled up to it
  const fill = tile.self || tile.el.classList.contains("fill");
  const scale = fill ? Math.max(rect.width / aspect, rect.height) : Math.min(rect.width / aspect, rect.height);
  const width = Math.ceil(scale * aspect * dpr * LAYER_HEADROOM);
  const height = Math.ceil(scale * dpr * LAYER_HEADROOM);
  return {
    maxWidth: Math.min(7680, Math.max(0, width)),
    maxHeight: Math.min(4320, Math.max(0, height)),
    paused: !tile.visible || rect.width === 0,
  };
}

/** @param {Tile} tile */
function sendLayerRequest(tile) {
  const remote = tile.videoTrack;
  if (!client || !remote || tile.self) return;
  const request = layerRequestFor(tile);
  const key = JSON.stringify(request);
  if (key === tile.lastRequest) return;
  tile.lastRequest = key;
  tile.asked = { maxWidth: request.maxWidth, maxHeight: request.maxHeight };
  try {
    client.setLayer(remote.trackId, request);
  } catch (error) {
    console.warn("set_layer", error);
  }
}

/**
 * @param {string} id
 * @param {string} name
 * @param {boolean} [self=false]
 */
function addTile(id, name, self = false) {
  const existing = tiles.get(id);
  if (existing) return existing;
  const tile = new Tile(id, name, self);
  tiles.set(id, tile);
  if (self) ui.grid.prepend(tile.el);
  else ui.grid.append(tile.el);
  resizeObserver.observe(tile.el);
  intersectionObserver.observe(tile.el);
  layoutGrid();
  return tile;
}

/** @param {string} id */
function removeTile(id) {
  const tile = tiles.get(id);
  if (!tile) return;
  clearTimeout(tile.layerTimer);
  resizeObserver.unobserve(tile.el);
  intersectionObserver.unobserve(tile.el);
  tile.video.srcObject = null;
  if (tile.audio) tile.audio.srcObject = null;
  tile.el.remove();
  tiles.delete(id);
  if (tile === selfTile) selfTile = null;
  layoutGrid();
}

/**
 * Sizes the grid's columns so that every 16:9 tile is as large as the stage allows;
 * below MIN_TILE_WIDTH the grid scrolls (and tiles out of view are paused).
 */
function layoutGrid() {
  const n = Math.max(1, tiles.size);
  const style = getComputedStyle(ui.call);
  const gap = 8;
  const width = ui.call.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const height = ui.call.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
  if (width <= 0 || height <= 0) return;
  let best = { cols: 1, tileWidth: 0 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const byWidth = (width - gap * (cols - 1)) / cols;
    const byHeight = ((height - gap * (rows - 1)) / rows) * (16 / 9);
    const tileWidth = Math.floor(Math.min(byWidth, byHeight));
    if (tileWidth > best.tileWidth) best = { cols, tileWidth };
  }
  if (best.tileWidth < MIN_TILE_WIDTH) {
    const cols = Math.max(1, Math.floor((width + gap) / (MIN_TILE_WIDTH + gap)));
    best = { cols, tileWidth: Math.floor(Math.min(width, (width - gap * (cols - 1)) / cols)) };
  }
  ui.grid.style.setProperty("--cols", String(best.cols));
  ui.grid.style.setProperty("--tile-width", `${best.tileWidth}px`);
}

new ResizeObserver(() => layoutGrid()).observe(ui.call);

/** @param {Tile} tile @param {MediaStream} stream */
function showVideo(tile, stream) {
  tile.video.srcObject = stream;
  tile.video.play().catch(() => {});
}

/** @param {RemoteTrack} remote */
function onTrack(remote) {
  const participant = client?.participants.get(remote.participant);
  const tile = addTile(remote.participant, participant?.name ?? "?");
  if (remote.kind === "video") {
    tile.videoTrack = remote;
    tile.lastRequest = "";
    tile.lastSample = null;
    showVideo(tile, remote.stream);
    // the first remote frame on screen: the page's join time (client.joinPhases)
    const joining = client;
    tile.video.requestVideoFrameCallback?.(() => joining?.markJoinPhase("subscribe.first_frame"));
    sendLayerRequest(tile);
  } else {
    tile.audioTrack = remote;
    if (!tile.audio) {
      tile.audio = /** @type {HTMLAudioElement} */ (element("audio"));
      tile.audio.autoplay = true;
      tile.el.append(tile.audio);
    }
    tile.audio.srcObject = remote.stream;
    tile.audio.play().catch(() => {
      // autoplay with sound needs a user gesture here: offer a button
      ui.enableSound.hidden = false;
    });
  }
}

/** @param {RemoteTrack} remote */
function onTrackRemoved(remote) {
  const tile = tiles.get(remote.participant);
  if (!tile) return;
  if (tile.videoTrack === remote) {
    tile.videoTrack = null;
    tile.video.srcObject = null;
    tile.el.classList.add("novideo");
    tile.stats.textContent = "";
  }
  if (tile.audioTrack === remote) {
    tile.audioTrack = null;
    if (tile.audio) tile.audio.srcObject = null;
    tile.setSpeaking(false);
  }
}

// ------------------------------------------------------------------ status

function updateStatus() {
  if (client?.state !== "reconnecting") {
    clearInterval(reconnectTicker);
    reconnectTicker = undefined;
  }
  if (!client) {
    setStatus("idle", "Not connected");
    return;
  }
  switch (client.state) {
    case "new":
    case "joining":
      setStatus("connecting", "Connecting…");
      return;
    case "reconnecting": {
      // a countdown to the next attempt, then "now": the line never stands still
      reconnectTicker ??= setInterval(updateStatus, 200);
      const { attempt, at, trying } = reconnectView;
      const left = Math.max(0, at - performance.now()) / 1000;
      setStatus(
        "reconnecting",
        attempt === 0
          ? "Connection lost. Reconnecting…"
          : trying || left === 0
            ? `Connection lost. Reconnecting now (attempt ${attempt})…`
            : `Connection lost. Reconnecting in ${left.toFixed(1)} s (attempt ${attempt})…`,
        attempt === 0 ? "Connection lost. Reconnecting." : `Connection lost. Reconnecting, attempt ${attempt}.`,
      );
      return;
    }
    case "closed":
      setStatus("idle", "Not connected");
      return;
    case "joined": {
      const states = [client.publishConnection, client.subscribeConnection]
        .filter((pc) => pc !== null)
        .map((pc) => /** @type {RTCPeerConnection} */ (pc).connectionState);
      if (states.includes("failed") || states.includes("disconnected")) {
        setStatus("reconnecting", "Media connection interrupted…");
      } else if (states.some((s) => s === "new" || s === "connecting")) {
        setStatus("connecting", "Connected, starting media…");
      } else {
        const others = client.participants.size;
        setStatus("connected", `Connected · ${others === 0 ? "nobody else here yet" : `${others + 1} in the room`}`);
      }
    }
  }
}

// ------------------------------------------------------------------ media

/** @returns {{width: number, height: number}} */
function captureSize() {
  const match = /^(\d{2,4})x(\d{2,4})$/.exec(params.get("size") ?? "");
  return match ? { width: Number(match[1]), height: Number(match[2]) } : { width: 1280, height: 720 };
}

/**
 * @param {{audio: boolean, video: boolean}} wanted
 * @param {{audio?: string, video?: string}} [devices]  device ids
 * @returns {MediaStreamConstraints}
 */
function constraints(wanted, devices = {}) {
  const { width, height } = captureSize();
  /** @type {MediaTrackConstraints} */
  const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
  if (devices.video) video.deviceId = { exact: devices.video };
  /** @type {MediaTrackConstraints} */
  const audio = { echoCancellation: true, noiseSuppression: true };
  if (devices.audio) audio.deviceId = { exact: devices.audio };
  return { audio: wanted.audio ? audio : false, video: wanted.video ? video : false };
}

/**
 * The camera and microphone, or what of them we can get. Returns null (and says why)
 * when we get nothing: the user still joins, to watch and listen.
 * @param {{audio: boolean, video: boolean}} wanted
 * @returns {Promise<MediaStream | null>}
 */
async function openMedia(wanted) {
  if (!wanted.audio && !wanted.video) return null;
  if (!navigator.mediaDevices?.getUserMedia) {
    showNotice("This browser cannot use a camera or microphone here (it needs HTTPS). You can still watch and listen.");
    return null;
  }
  /** @type {unknown} */
  let firstError = null;
  const attempts = [wanted];
  if (wanted.audio && wanted.video) attempts.push({ audio: true, video: false }, { audio: false, video: true });
  for (const attempt of attempts) {
    try {
      return await navigator.mediaDevices.getUserMedia(constraints(attempt));
    } catch (error) {
      firstError ??= error;
      const name = error instanceof DOMException ? error.name : "";
      if (name === "NotAllowedError" || name === "SecurityError") break; // asking again will not help
    }
  }
  showNotice(mediaErrorText(firstError));
  return null;
}

/** @param {unknown} error */
function mediaErrorText(error) {
  const name = error instanceof DOMException ? error.name : "";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera and microphone access was refused, so the others cannot see or hear you. " +
        "You can still watch and listen. To take part, allow the camera and microphone for this site " +
        "in the browser's settings, then leave and join again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera or microphone was found. You can still watch and listen.";
    case "NotReadableError":
    case "AbortError":
      return "The camera or microphone could not be started (another program may be using it). " +
        "You can still watch and listen.";
    default:
      return `The camera and microphone could not be opened (${error instanceof Error ? error.message : String(error)}). ` +
        "You can still watch and listen.";
  }
}

/** Fills the device pickers (labels are known once a device was granted). */
async function refreshDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [select, kind] of /** @type {const} */ ([[ui.micSelect, "audioinput"], [ui.camSelect, "videoinput"]])) {
    const trackKind = kind === "audioinput" ? "audio" : "video";
    const current = localStream
      ? (trackKind === "audio" ? localStream.getAudioTracks() : localStream.getVideoTracks())[0]
      : undefined;
    const currentId = current?.getSettings().deviceId;
    select.replaceChildren();
    let n = 0;
    for (const device of devices) {
      if (device.kind !== kind || !device.deviceId) continue;
      n += 1;
      const option = /** @type {HTMLOptionElement} */ (element("option", "", device.label || `${trackKind === "audio" ? "Microphone" : "Camera"} ${n}`));
      option.value = device.deviceId;
      option.selected = device.deviceId === currentId;
      select.append(option);
    }
    // one device is still a choice to show (not greyed out): it names what is in use
    select.hidden = n === 0 || !current;
    select.disabled = false;
    select.title = select.selectedOptions[0]?.textContent ?? "";
  }
  ui.devicesToggle.hidden = ui.micSelect.hidden && ui.camSelect.hidden;
  if (ui.devicesToggle.hidden) showPickers(false);
}

/**
 * Switches to another camera or microphone.
 * @param {"audio" | "video"} kind
 * @param {string} deviceId
 */
async function switchDevice(kind, deviceId) {
  if (!client || !localStream) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia(
      constraints({ audio: kind === "audio", video: kind === "video" }, { [kind]: deviceId }),
    );
    const track = kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
    const old = await client.replaceTrack(track);
    old.stop();
    if (selfTile && kind === "video") showVideo(selfTile, localStream);
  } catch (error) {
    showNotice(`Could not switch the ${kind === "audio" ? "microphone" : "camera"}: ${mediaErrorText(error)}`);
  }
  await refreshDevices();
}

function stopLocalMedia() {
  if (localStream) for (const track of localStream.getTracks()) track.stop();
  localStream = null;
}

// ------------------------------------------------------------------ join / leave

/**
 * The claims of a join token (a JWT), read without checking it (the server does), or
 * null when it is not one.
 * @param {string} token
 * @returns {Record<string, unknown> | null}
 */
function tokenClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload + "=".repeat((4 - (payload.length % 4)) % 4)));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** @param {unknown} error */
function joinErrorText(error) {
  if (error instanceof ParleyError) {
    switch (error.code) {
      case "join_refused":
        return `The server refused to let you into the room: ${error.message.replace(/^join_refused: /, "")}`;
      case "connection_failed":
      case "connection_closed":
        return `Cannot reach the Parley server (${websocketUrl(serverBase)}). Check your connection, or try again in a moment.`;
      case "timeout":
        return "The server did not answer in time. Try again in a moment.";
      case "token_required":
        return "This server needs a join token: open the link your host gave you (it ends in ?token=…).";
      case "token_expired":
        return "Your join token has expired: ask your host for a new link.";
      case "token_invalid":
      case "token_wrong_room":
        return `The server did not accept your join token: ${error.message.replace(/^token_\w+: /, "")}`;
      case "invalid_field":
        return `The server did not accept the room or name: ${error.message.replace(/^invalid_field: /, "")}`;
      default:
        return `Could not join: ${error.message}`;
    }
  }
  return `Could not join: ${error instanceof Error ? error.message : String(error)}`;
}

/**
 * @param {{room: string, name: string, token: string, camera: boolean, mic: boolean}} request
 */
async function join(request) {
  if (client) return;
  clearNotice();
  ui.joinButton.disabled = true;
  currentRoom = request.room;
  setStatus("connecting", "Opening camera and microphone…");
  localStream = await openMedia({ audio: request.mic, video: request.camera });

  /** @type {import("./parley-client.js").ClientOptions} */
  const options = { room: request.room, name: request.name, url: serverBase };
  if (request.token) options.token = request.token;
  const c = new ParleyClient(options);
  client = c;
  app.client = c;
  wireClient(c);
  setStatus("connecting", "Connecting…");
  try {
    await c.join();
  } catch (error) {
    client = null;
    c.close("join failed");
    stopLocalMedia();
    ui.joinButton.disabled = false;
    showNotice(joinErrorText(error));
    setStatus("error", "Not connected");
    return;
  }
  enterCall(request.name);
  // the address bar now holds a link that joins this room (without the token)
  const url = new URL(location.href);
  url.search = new URLSearchParams({ room: request.room, name: request.name }).toString();
  history.replaceState(null, "", url);
  if (localStream) {
    try {
      await c.publish(localStream);
    } catch (error) {
      // (lost meanwhile: the rejoin republishes, nothing to tell)
      if (client === c && c.state === "joined") {
        showNotice(`Your camera and microphone could not be sent: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }
  await refreshDevices();
  updateControls();
}

/** @param {ParleyClient} c */
function wireClient(c) {
  const mine = () => client === c;
  c.on("statechange", () => mine() && updateStatus());
  c.on("connectionstatechange", () => mine() && updateStatus());
  c.on("joined", (e) => {
    if (!mine()) return;
    for (const participant of e.detail.participants) addTile(participant.id, participant.name);
    updateStatus();
  });
  c.on("participantjoined", (e) => {
    if (!mine()) return;
    addTile(e.detail.id, e.detail.name);
    updateStatus();
  });
  c.on("participantleft", (e) => {
    if (!mine()) return;
    removeTile(e.detail.id);
    updateStatus();
  });
  c.on("track", (e) => mine() && onTrack(e.detail));
  c.on("trackremoved", (e) => mine() && onTrackRemoved(e.detail));
  c.on("layer", () => mine() && renderStats());
  c.on("activespeaker", (e) => {
    if (!mine()) return;
    for (const tile of tiles.values()) {
      const id = tile.self ? c.id : tile.id;
      tile.el.classList.toggle("floor", id !== null && id === e.detail.participant);
    }
  });
  c.on("reconnecting", (e) => {
    if (!mine()) return;
    Object.assign(reconnectView, { attempt: e.detail.attempt, at: performance.now() + e.detail.delayMs, trying: false });
    updateStatus();
  });
  c.on("reconnectattempt", (e) => {
    if (!mine()) return;
    Object.assign(reconnectView, { attempt: e.detail.attempt, at: performance.now(), trying: true });
    updateStatus();
  });
  c.on("servershutdown", (e) => {
    if (!mine()) return;
    // said at once: the websocket's close may take a moment, or never come
    showNotice(`The server stopped: ${e.detail.reason}. You will rejoin as soon as it is back.`, "info");
  });
  c.on("reconnected", () => {
    if (!mine()) return;
    Object.assign(reconnectView, { attempt: 0, at: 0, trying: false });
    showNotice("Reconnected.", "info");
    setTimeout(() => ui.notice.dataset.kind === "info" && ui.noticeText.textContent === "Reconnected." && clearNotice(), 3000);
    updateStatus();
  });
  c.on("servererror", (e) => {
    if (!mine()) return;
    console.warn("server error", e.detail);
    if (e.detail.request === "publish_offer") showNotice(`The server did not accept your camera and microphone: ${e.detail.message}`);
    if (e.detail.code.startsWith("data_") || e.detail.code === "bad_data") chatLine("", e.detail.message);
  });
  c.on("clienterror", (e) => mine() && console.warn("client error", e.detail));
  c.on("datachannel", (e) => mine() && chatEnabled(e.detail.open));
  c.onData((sender, data, binary) => {
    if (!mine()) return;
    chatLine(c.participants.get(sender)?.name ?? sender, chatText(data, binary));
  });
  c.on("closed", (e) => {
    if (!mine()) return;
    const reason = e.detail.reason;
    leaveCall();
    if (reason.startsWith("join refused")) {
      showNotice(`The server refused to let you back into the room: ${reason.replace(/^join refused: (join_refused: )?/, "")}`);
    } else if (reason !== "left" && reason !== "join failed") {
      showNotice(`You are no longer in the room (${reason}).`);
    }
  });
}

// ------------------------------------------------------------------ chat

/** Lines kept in the chat log. */
const CHAT_KEEP = 200;
let chatUnread = 0;

/**
 * Appends one line to the chat log.
 * @param {string} from  who said it ("" for the page's own notes)
 * @param {string} text
 */
function chatLine(from, text) {
  const item = element("li", from ? "" : "system");
  if (from) item.append(element("span", "from", `${from}: `));
  item.append(document.createTextNode(text));
  ui.chatLog.append(item);
  while (ui.chatLog.childElementCount > CHAT_KEEP) ui.chatLog.firstElementChild?.remove();
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  if (from && !ui.chat.open) {
    chatUnread += 1;
    ui.chatUnread.textContent = String(chatUnread);
    ui.chatUnread.hidden = false;
  }
}

/**
 * What a data channel message says, as text: `{text}` from pages, anything else as JSON.
 * @param {unknown} data
 * @param {boolean} binary
 */
function chatText(data, binary) {
  if (binary) return `[${data instanceof Uint8Array ? data.length : 0} bytes]`;
  if (data && typeof data === "object" && "text" in data && typeof data.text === "string") return data.text;
  const json = JSON.stringify(data) ?? "";
  return json.length > 300 ? `${json.slice(0, 300)}…` : json;
}

/** @param {boolean} open */
function chatEnabled(open) {
  ui.chatInput.disabled = !open;
  ui.chatSend.disabled = !open;
}

function sendChat() {
  const c = client;
  const text = ui.chatInput.value.trim();
  if (!c || !text) return;
  try {
    c.send({ text });
    chatLine("You", text);
    ui.chatInput.value = "";
  } catch (error) {
    chatLine("", `Not sent: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** @param {string} name */
function enterCall(name) {
  ui.lobby.hidden = true;
  ui.call.hidden = false;
  ui.controls.hidden = false;
  ui.roomLabel.hidden = false;
  ui.roomLabel.textContent = currentRoom;
  document.title = `${currentRoom} · Parley`;
  const self = addTile("self", name, true);
  selfTile = self;
  if (localStream && localStream.getVideoTracks().length > 0) {
    showVideo(self, localStream);
    self.el.classList.remove("novideo");
  }
  layoutGrid();
  updateControls();
  statsTimer = setInterval(() => void collectStats(), STATS_INTERVAL_MS);
  levelTimer = setInterval(() => void collectLevels(), LEVEL_INTERVAL_MS);
  updateStatus();
}

/** Back to the lobby: drops tiles, timers and the camera. */
function leaveCall() {
  const c = client;
  client = null;
  clearInterval(statsTimer);
  clearInterval(levelTimer);
  for (const id of [...tiles.keys()]) removeTile(id);
  stopLocalMedia();
  ui.chatLog.replaceChildren();
  chatEnabled(false);
  if (c) c.close("left");
  ui.call.hidden = true;
  ui.controls.hidden = true;
  ui.roomLabel.hidden = true;
  ui.lobby.hidden = false;
  ui.joinButton.disabled = false;
  ui.enableSound.hidden = true;
  showPickers(false);
  document.title = "Parley";
  setStatus("idle", "Not connected");
}

async function leave() {
  const c = client;
  if (!c) return;
  ui.leave.disabled = true;
  client = null; // events from now on are ours to ignore
  try {
    await c.leave(1500);
  } finally {
    client = c;
    leaveCall();
    ui.leave.disabled = false;
    showNotice(`You left ${currentRoom}.`, "info");
  }
}

function updateControls() {
  const c = client;
  const audio = localStream?.getAudioTracks()[0];
  const video = localStream?.getVideoTracks()[0];
  ui.mic.disabled = !c || !audio;
  ui.cam.disabled = !c || !video;
  const micMuted = !!c && c.isMuted("audio");
  const camMuted = !!c && c.isMuted("video");
  setLabel(ui.mic, !audio ? "No microphone" : micMuted ? "Unmute" : "Mute");
  ui.mic.setAttribute("aria-pressed", String(micMuted));
  setLabel(ui.cam, !video ? "No camera" : camMuted ? "Start video" : "Stop video");
  ui.cam.setAttribute("aria-pressed", String(camMuted));
  if (selfTile) {
    selfTile.badge("muted", !audio || micMuted);
    selfTile.el.classList.toggle("novideo", !video || camMuted);
  }
}

/** @param {"audio" | "video"} kind */
async function toggleMute(kind) {
  const c = client;
  if (!c) return;
  const done = c.setMuted(kind, !c.isMuted(kind)); // the wish is recorded at once
  updateControls();
  await done;
}

// ------------------------------------------------------------------ levels and stats

/** Speaking highlight from the audio level of what each tile receives (or sends). */
async function collectLevels() {
  const c = client;
  if (!c) return;
  const now = performance.now();
  for (const tile of tiles.values()) {
    let level = 0;
    if (tile.self) {
      level = await selfAudioLevel(c);
    } else if (tile.audioTrack) {
      // A source's entry outlives its packets (and browsers differ on the clock of its
      // `timestamp`): a source counts only while its RTP timestamp keeps moving.
      for (const source of tile.audioTrack.receiver.getSynchronizationSources()) {
        const moved = source.rtpTimestamp !== tile.lastRtpTimestamp;
        tile.lastRtpTimestamp = source.rtpTimestamp;
        if (moved) level = Math.max(level, source.audioLevel ?? 0);
      }
    }
    if (level > SPEAKING_LEVEL) tile.speakingUntil = now + SPEAKING_HOLD_MS;
    tile.setSpeaking(tile.speakingUntil > now);
  }
}

/** @param {ParleyClient} c */
async function selfAudioLevel(c) {
  const pc = c.publishConnection;
  if (!pc || c.isMuted("audio")) return 0;
  const sender = pc.getSenders().find((s) => s.track?.kind === "audio");
  if (!sender) return 0;
  for (const s of (await sender.getStats()).values()) {
    if (s.type === "media-source" && s.kind === "audio") return s.audioLevel ?? 0;
  }
  return 0;
}

/** Stats of one remote tile, refreshed every second. @type {WeakMap<Tile, string>} */
const tileStats = new WeakMap();

async function collectStats() {
  const c = client;
  if (!c) return;
  const now = performance.now();
  for (const tile of tiles.values()) {
    if (tile.self) {
      tileStats.set(tile, await selfStats(c));
      continue;
    }
    let bytes = 0;
    let frames = 0;
    /** @type {any} */
    let video = null;
    for (const remote of [tile.videoTrack, tile.audioTrack]) {
      if (!remote) continue;
      for (const s of (await remote.receiver.getStats()).values()) {
        if (s.type !== "inbound-rtp") continue;
        bytes += s.bytesReceived ?? 0;
        if (s.kind === "video") {
          video = s;
          frames = s.framesDecoded ?? 0;
        }
      }
    }
    const last = tile.lastSample;
    tile.lastSample = { at: now, bytes, frames };
    const seconds = last ? (now - last.at) / 1000 : 0;
    const bitrate = last && seconds > 0 ? ((bytes - last.bytes) * 8) / seconds : 0;
    const fps = video?.framesPerSecond ?? (last && seconds > 0 ? (frames - last.frames) / seconds : 0);
    // no new frame for two seconds: show the name instead of a frozen picture
    tile.stalledSamples = last && frames === last.frames ? tile.stalledSamples + 1 : 0;
    tile.el.classList.toggle("novideo", !tile.videoTrack || frames === 0 || tile.stalledSamples >= 2);
    const lines = [];
    const width = video?.frameWidth ?? tile.video.videoWidth;
    const height = video?.frameHeight ?? tile.video.videoHeight;
    lines.push(tile.videoTrack ? `${width || 0}×${height || 0} · ${Math.round(fps)} fps` : "no video");
    lines.push(formatBitrate(bitrate));
    const layer = tile.videoTrack ? c.layer(tile.videoTrack.trackId) : null;
    if (layer) {
      const size = `${layer.width}×${layer.height}`;
      lines.push(layer.paused ? "layer: paused" : layer.rid === null ? `layer: ${size} (single)` : `layer: ${layer.rid} ${size}`);
    }
    if (tile.asked) lines.push(`asked: ≤${tile.asked.maxWidth}×${tile.asked.maxHeight}${tile.visible ? "" : " (paused)"}`);
    tileStats.set(tile, lines.join("\n"));
    tile.el.dataset.fps = String(Math.round(fps));
  }
  renderStats();
}

/** What we send: per simulcast layer its size and frame rate, and the total bitrate. */
let selfLast = { at: 0, bytes: 0 };

/** @param {ParleyClient} c */
async function selfStats(c) {
  const pc = c.publishConnection;
  if (!pc) return "not sending";
  const lines = [];
  let bytes = 0;
  /** @type {any[]} */
  const layers = [];
  for (const s of (await pc.getStats()).values()) {
    if (s.type !== "outbound-rtp") continue;
    bytes += s.bytesSent ?? 0;
    if (s.kind === "video") layers.push(s);
  }
  // lowest first, as published (rids in DEFAULT_SIMULCAST_ENCODINGS order)
  const rank = (/** @type {any} */ s) => {
    const i = DEFAULT_SIMULCAST_ENCODINGS.findIndex((e) => e.rid === s.rid);
    return i >= 0 ? i : s.frameHeight ?? 0;
  };
  layers.sort((a, b) => rank(a) - rank(b));
  for (const s of layers) {
    const size = s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : "off";
    lines.push(`${s.rid ?? "video"}: ${size}${s.frameWidth ? ` · ${Math.round(s.framesPerSecond ?? 0)} fps` : ""}`);
  }
  const now = performance.now();
  const seconds = (now - selfLast.at) / 1000;
  if (selfLast.at > 0 && seconds > 0) lines.push(`sending ${formatBitrate(((bytes - selfLast.bytes) * 8) / seconds)}`);
  selfLast = { at: now, bytes };
  return lines.join("\n") || "not sending";
}

function renderStats() {
  if (!document.body.classList.contains("show-stats")) return;
  for (const tile of tiles.values()) {
    const text = tileStats.get(tile);
    if (text !== undefined && tile.stats.textContent !== text) tile.stats.textContent = text;
  }
}

/** @param {boolean} on */
function showStats(on) {
  document.body.classList.toggle("show-stats", on);
  ui.statsToggle.setAttribute("aria-pressed", String(on));
  renderStats();
}

// ------------------------------------------------------------------ wiring

/**
 * The public face of the page for tests and the console: the current client and tiles.
 * @type {{client: ParleyClient | null, tiles: Map<string, Tile>, layerRequestFor: typeof layerRequestFor}}
 */
const app = { client: null, tiles, layerRequestFor };
/** @type {any} */ (window).parleyApp = app;

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!ui.form.reportValidity()) return;
  void join({
    room: ui.room.value,
    name: ui.name.value,
    token: ui.token.value,
    camera: ui.withCamera.checked,
    mic: ui.withMic.checked,
  });
});
ui.mic.addEventListener("click", () => void toggleMute("audio"));
ui.cam.addEventListener("click", () => void toggleMute("video"));
ui.micSelect.addEventListener("change", () => void switchDevice("audio", ui.micSelect.value));
ui.camSelect.addEventListener("change", () => void switchDevice("video", ui.camSelect.value));
ui.devicesToggle.addEventListener("click", () => showPickers(!ui.pickers.classList.contains("open")));
// the narrow layout's pickers panel closes on Escape and on a click elsewhere
document.addEventListener("keydown", (event) => event.key === "Escape" && showPickers(false));
document.addEventListener("pointerdown", (event) => {
  const target = event.target instanceof Node ? event.target : null;
  if (target && !ui.pickers.contains(target) && !ui.devicesToggle.contains(target)) showPickers(false);
});
ui.statsToggle.addEventListener("click", () => showStats(!document.body.classList.contains("show-stats")));
ui.leave.addEventListener("click", () => void leave());
ui.chatForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sendChat();
});
ui.chat.addEventListener("toggle", () => {
  if (!ui.chat.open) return;
  chatUnread = 0;
  ui.chatUnread.hidden = true;
  ui.chatInput.focus();
  const c = client;
  // a page that sends no camera or microphone publishes the data channel alone, once
  // the chat is opened (watchers that never chat keep a single peer connection)
  if (c && c.state === "joined" && !localStream && !c.publishConnection) {
    c.publish(new MediaStream()).catch((error) => {
      if (client === c) chatLine("", `No chat: ${error instanceof Error ? error.message : String(error)}`);
    });
  }
});
ui.noticeClose.addEventListener("click", clearNotice);
ui.retryNow.addEventListener("click", () => client?.reconnectNow());
ui.copyLink.addEventListener("click", () => {
  const url = new URL(location.href);
  url.search = new URLSearchParams({ room: currentRoom }).toString();
  navigator.clipboard?.writeText(url.href).then(
    () => showNotice(`Link copied: ${url.href}`, "info"),
    () => showNotice(`Share this link: ${url.href}`, "info"),
  );
});
ui.enableSound.addEventListener("click", () => {
  for (const tile of tiles.values()) tile.audio?.play().catch(() => {});
  ui.enableSound.hidden = true;
});
navigator.mediaDevices?.addEventListener?.("devicechange", () => void refreshDevices());
window.addEventListener("pagehide", () => client?.close("page closed"));

// the form from the URL; `autojoin=1` joins at once
ui.room.value = params.get("room") ?? "";
ui.name.value = params.get("name") ?? "";
ui.token.value = params.get("token") ?? "";
// a link with only a token: its room and name fill the form in
if (ui.token.value) {
  const claims = tokenClaims(ui.token.value);
  if (!ui.room.value && typeof claims?.room === "string" && claims.room !== "*") ui.room.value = claims.room;
  if (!ui.name.value && typeof claims?.name === "string") ui.name.value = claims.name || String(claims.sub ?? "");
}
if (params.get("camera") === "0") ui.withCamera.checked = false;
if (params.get("mic") === "0") ui.withMic.checked = false;
showStats(params.get("stats") === "1");
if (params.get("autojoin") === "1" && ui.form.checkValidity()) {
  ui.form.requestSubmit();
} else {
  (ui.room.value ? ui.name : ui.room).focus();
}
