// @ts-check
/**
 * Parley's browser client: the signaling protocol (docs/protocol.md) and the two peer
 * connections, with no DOM access. A UI module imports it:
 *
 *     import { ParleyClient } from "/static/parley-client.js";
 *     const client = new ParleyClient({ room: "standup", name: "Ada" });
 *     client.on("track", (e) => attach(e.detail.stream, e.detail.participant));
 *     await client.join();
 *     await client.publish(await navigator.mediaDevices.getUserMedia({ audio: true, video: true }));
 *
 * One ParleyClient is one session: join, publish, receive, leave. Everything the user
 * asked for (the local stream, mute state, layer requests) is kept apart from the
 * session state (websocket, peer connections, remote tracks) so that a reconnect loop
 * can tear a session down and build a new one from the same wishes; see
 * docs/browser-client.md.
 *
 * ICE: both peer connections use exactly the `ice_servers` the server sends in `joined`
 * (an empty list means none). The browser's defaults are never used.
 */

/** Protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * The simulcast layers published by default, lowest first. `rid`s are what the server
 * sees; it answers with `a=simulcast:recv q;h;f`.
 * @type {ReadonlyArray<RTCRtpEncodingParameters>}
 */
export const DEFAULT_SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 }),
]);

// ------------------------------------------------------------------ types

/**
 * @typedef {"audio" | "video"} TrackKind
 * @typedef {{id: string, kind: TrackKind, layers?: string[], muted?: boolean}} TrackInfo  `layers`: the RIDs
 *     of a simulcast video track, lowest first as published
 * @typedef {{id: string, name: string, tracks: TrackInfo[]}} ParticipantInfo
 * @typedef {{participant: string, track: string, kind: TrackKind}} SubscribedTrackInfo
 * @typedef {{id: string, kind: TrackKind, mid: string}} PublishedTrackInfo
 * @typedef {string | number} RequestId
 * @typedef {{type: string, request_id?: RequestId, [key: string]: any}} Message
 */

/**
 * A participant as this client knows it (never yourself).
 * @typedef {object} Participant
 * @property {string} id
 * @property {string} name
 * @property {Map<string, TrackInfo>} tracks  published tracks by track id
 */

/**
 * A remote track being received on the subscribe connection.
 * @typedef {object} RemoteTrack
 * @property {string} participant  participant id
 * @property {string} trackId      the server's track id (`a-…`, `v-…`)
 * @property {TrackKind} kind
 * @property {string} mid          subscribe m-line carrying it now
 * @property {MediaStreamTrack} track  the receiver's track (the same object may carry
 *     another remote track later: always go through the `track` / `trackremoved` events)
 * @property {MediaStream} stream  a stream holding just `track`, made for this mapping
 * @property {RTCRtpReceiver} receiver  for getStats()
 * @property {LayerInfo | null} layer  what the server last said it forwards (`layer` message)
 */

/**
 * What the server forwards of one video track to this client (`layer` message).
 * @typedef {object} LayerInfo
 * @property {string} track
 * @property {string | null} rid   simulcast layer forwarded, null without simulcast
 * @property {number} width
 * @property {number} height
 * @property {boolean} paused
 */

/**
 * What this client asked the server to forward of a remote track (`set_layer`).
 * @typedef {object} LayerRequest
 * @property {number} [maxWidth]   widest video wanted, pixels (0–7680)
 * @property {number} [maxHeight]  tallest video wanted, pixels (0–4320)
 * @property {boolean} [paused]    true: forward nothing of this track for now
 */

/**
 * @typedef {object} ServerError
 * @property {string} code       stable code (docs/protocol.md, "Error codes")
 * @property {string} message
 * @property {string} [request]  type of the message that caused it
 * @property {RequestId} [request_id]
 */

/**
 * @typedef {object} PublishOptions
 * @property {boolean} [simulcast=true]  three layers (DEFAULT_SIMULCAST_ENCODINGS) or one
 * @property {RTCRtpEncodingParameters[]} [encodings]  custom video encodings (simulcast)
 * @property {string} [videoCodec="video/VP8"]  codec put first in the offer; "" to leave
 *     the browser's order
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} room
 * @property {string} name
 * @property {string} [token]      passed to the server's admission check
 * @property {string} [url]        server base URL (http[s]://host[:port][/prefix]);
 *     defaults to the page's origin. The websocket is `{url}/ws`.
 * @property {number} [gatherTimeoutMs=5000]  longest wait for ICE gathering (the
 *     server does not trickle: SDPs carry their candidates)
 * @property {number} [requestTimeoutMs=10000]  longest wait for a reply, and for the
 *     browser to apply an SDP
 * @property {number} [connectTimeoutMs=5000]  longest wait for the websocket to open
 * @property {boolean} [reconnect=true]  after the websocket or ICE drops (or the server
 *     ends our participation on its own, or says it shuts down), join the same room
 *     again with the same name and republish, backing off between attempts
 * @property {number} [reconnectMinDelayMs=250]  first wait before a rejoin attempt
 * @property {number} [reconnectMaxDelayMs=2000]  longest wait between attempts (the wait
 *     doubles each attempt up to this, with ±25% jitter; it never stops trying)
 * @property {number} [keepaliveIntervalMs=10000]  a `ping` this often while joined; no
 *     `pong` within `requestTimeoutMs` counts as a lost connection (0: no pings)
 * @property {number} [iceDisconnectedTimeoutMs=5000]  a peer connection "disconnected"
 *     this long counts as lost ("failed" counts at once)
 * @property {typeof WebSocket} [WebSocketImpl]  for tests or non-browser hosts
 * @property {typeof RTCPeerConnection} [PeerConnectionImpl]
 */

/** @typedef {"new" | "joining" | "joined" | "reconnecting" | "closed"} ClientState */

/**
 * Events a ParleyClient dispatches (all CustomEvents; read `event.detail`).
 * @typedef {object} ParleyEventMap
 * @property {CustomEvent<{id: string, room: string, participants: Participant[], iceServers: RTCIceServer[]}>} joined
 * @property {CustomEvent<Participant>} participantjoined
 * @property {CustomEvent<Participant>} participantleft
 * @property {CustomEvent<{participant: string, track: TrackInfo}>} trackpublished
 * @property {CustomEvent<{participant: string, trackId: string, kind: TrackKind | null}>} trackunpublished
 * @property {CustomEvent<RemoteTrack>} track         a remote track started arriving
 * @property {CustomEvent<RemoteTrack>} trackremoved  it stopped (its m-line was reused or dropped)
 * @property {CustomEvent<PublishedTrackInfo[]>} published  the server accepted our tracks
 * @property {CustomEvent<LayerInfo>} layer
 * @property {CustomEvent<{participant: string, trackId: string, muted: boolean}>} trackmuted
 *     the server's operator muted (or unmuted) a track: nobody receives it meanwhile
 * @property {CustomEvent<{kind: TrackKind, muted: boolean}>} mute
 * @property {CustomEvent<ServerError>} servererror   every `error` message from the server
 * @property {CustomEvent<{during: string, message: string}>} clienterror  applying a server
 *     message failed here (e.g. the browser rejected an SDP); later messages still apply
 * @property {CustomEvent<{connection: "publish" | "subscribe", state: RTCPeerConnectionState}>} connectionstatechange
 * @property {CustomEvent<{reason: string}>} left      the server ended our participation
 * @property {CustomEvent<{code: number, reason: string}>} disconnected  the websocket closed without `left`
 * @property {CustomEvent<{state: ClientState, previous: ClientState}>} statechange
 * @property {CustomEvent<{attempt: number, delayMs: number, reason: string}>} reconnecting  the
 *     session was lost; attempt `attempt` starts in `delayMs`
 * @property {CustomEvent<{attempt: number}>} reconnectattempt  attempt `attempt` starts now
 * @property {CustomEvent<{url: string}>} redirected  the server answered `join` with
 *     `redirect` (another node of a cluster serves the room): the join goes on at `url`;
 *     a later rejoin starts again at `options.url`
 * @property {CustomEvent<{reason: string, retryAfterMs: number, reconnect: boolean}>} servershutdown
 *     the server said it is stopping (`server_shutdown`); the session ends at once and, unless
 *     reconnecting is off or the server said `reconnect: false` (then the client closes),
 *     the first rejoin waits about `retryAfterMs`
 * @property {CustomEvent<{id: string, attempts: number}>} reconnected  joined again (and
 *     republished); `id` is our new participant id
 * @property {CustomEvent<{participant: string | null}>} activespeaker  the server's
 *     `active_speaker` message (servers that send it)
 * @property {CustomEvent<DataMessage>} data  a data channel message relayed from another
 *     participant (docs/protocol.md, "Data channel")
 * @property {CustomEvent<{open: boolean}>} datachannel  our data channel opened or closed
 * @property {CustomEvent<{reason: string}>} closed    the session is over (always last)
 */

/**
 * A data channel message as received: who sent it, and what (a text message's JSON
 * value, or a binary message's payload bytes).
 * @typedef {object} DataMessage
 * @property {string} from       the sender's participant id
 * @property {unknown} data      JSON value, or a Uint8Array when `binary`
 * @property {boolean} binary
 */

/**
 * @typedef {object} SendOptions
 * @property {string[]} [to]  participant ids to send to (default: everyone else in the room)
 */

/** An `error` reply from the server, or a local failure, as an exception. */
export class ParleyError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {string} [request]
   */
  constructor(code, message, request) {
    super(`${code}: ${message}`);
    this.name = "ParleyError";
    this.code = code;
    this.request = request;
  }
}

// ------------------------------------------------------------------ signaling channel

/**
 * One websocket speaking the JSON protocol: requests carry a `request_id` and their
 * promise settles with the reply (or rejects with the `error` carrying the same id).
 * Everything else goes to `onmessage`, in order.
 */
export class SignalingChannel {
  /**
   * @param {string} url  ws:// or wss:// URL of `/ws`
   * @param {{WebSocketImpl?: typeof WebSocket, requestTimeoutMs?: number}} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    /** @type {typeof WebSocket} */
    this._WebSocket = options.WebSocketImpl ?? WebSocket;
    /** @type {WebSocket | null} */
    this.socket = null;
    this._nextId = 1;
    /** @type {Map<RequestId, {replies: string[], resolve: (m: Message) => void, reject: (e: Error) => void, timer: ReturnType<typeof setTimeout>}>} */
    this._pending = new Map();
    /** @type {(message: Message) => void} */
    this.onmessage = () => {};
    /** @type {(code: number, reason: string) => void} */
    this.onclose = () => {};
    /** Fails a pending `open()` when `close()` comes first. @type {(e: Error) => void} */
    this._abortOpen = () => {};
  }

  /**
   * Opens the websocket; resolves once it is open, rejects (`connection_failed`) when it
   * cannot be opened or is not open within `timeoutMs` (a server that accepts the TCP
   * connection but never answers must not hold a reconnect attempt forever).
   * @param {number} [timeoutMs=10000]
   */
  open(timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const ws = new this._WebSocket(this.url);
      this.socket = ws;
      let opened = false;
      const timer = setTimeout(() => {
        ws.onopen = null;
        ws.onclose = null;
        ws.onmessage = null;
        ws.close();
        reject(new ParleyError("connection_failed", `no answer from ${this.url} within ${timeoutMs} ms`));
      }, timeoutMs);
      this._abortOpen = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      ws.onopen = () => {
        clearTimeout(timer);
        opened = true;
        resolve(undefined);
      };
      ws.onmessage = (event) => this._receive(event.data);
      ws.onclose = (event) => {
        clearTimeout(timer);
        this._failPending(new ParleyError("connection_closed", `websocket closed (${event.code})`));
        if (!opened) reject(new ParleyError("connection_failed", `cannot open ${this.url}`));
        else this.onclose(event.code, event.reason);
      };
    });
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === this._WebSocket.OPEN;
  }

  /** @param {Message} message */
  send(message) {
    if (!this.socket || !this.isOpen) throw new ParleyError("not_connected", "websocket is not open");
    this.socket.send(JSON.stringify(message));
  }

  /**
   * Sends `message` with a fresh `request_id`; resolves with the first reply of one of
   * `replies` types that echoes it, rejects with the `error` that does.
   * @param {Message} message
   * @param {string[]} replies
   * @param {number} [timeoutMs]
   * @returns {Promise<Message>}
   */
  request(message, replies, timeoutMs = this.requestTimeoutMs) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new ParleyError("timeout", `no reply to ${message.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { replies, resolve, reject, timer });
      try {
        this.send({ ...message, request_id: id });
      } catch (error) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(error);
      }
    });
  }

  /** @param {unknown} data */
  _receive(data) {
    if (typeof data !== "string") return;
    /** @type {unknown} */
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return; // the server only sends JSON objects
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return;
    const message = /** @type {Message} */ (parsed);
    if (typeof message.type !== "string") return;
    const id = message.request_id;
    const waiter = id === undefined ? undefined : this._pending.get(id);
    // the message goes to the client first (state updates, `servererror` events), then
    // settles the request, so a resolved request always sees up-to-date state
    this.onmessage(message);
    if (waiter && id !== undefined) {
      if (message.type === "error") {
        clearTimeout(waiter.timer);
        this._pending.delete(id);
        waiter.reject(new ParleyError(message.code, message.message, message.request));
      } else if (waiter.replies.includes(message.type)) {
        clearTimeout(waiter.timer);
        this._pending.delete(id);
        waiter.resolve(message);
      }
    }
  }

  /** @param {Error} error */
  _failPending(error) {
    for (const waiter of this._pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this._pending.clear();
  }

  /** Closes the websocket (idempotent); pending requests fail. */
  close() {
    this._failPending(new ParleyError("closed", "signaling closed"));
    this._abortOpen(new ParleyError("closed", "signaling closed"));
    const ws = this.socket;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      if (ws.readyState === this._WebSocket.CONNECTING || ws.readyState === this._WebSocket.OPEN) {
        ws.close(1000);
      }
    }
  }
}

// ------------------------------------------------------------------ helpers

/**
 * Resolves once `pc` finished gathering (or after `timeoutMs`: what was gathered by
 * then goes into the SDP).
 * @param {RTCPeerConnection} pc
 * @param {number} timeoutMs
 * @returns {Promise<void>}
 */
export function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * The websocket URL for a server base URL (`http://h:p/prefix` → `ws://h:p/prefix/ws`).
 * @param {string} base
 */
export function websocketUrl(base) {
  const url = new URL(base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.pathname = url.pathname.replace(/\/+$/, "") + "/ws";
  url.search = "";
  url.hash = "";
  return url.toString();
}

/** `redirect` answers followed for one join (a cluster redirects once; more is a loop). */
export const MAX_REDIRECTS = 3;

/** The label of the data channel the server relays (docs/protocol.md, "Data channel"). */
export const DATA_CHANNEL_LABEL = "parley";

/**
 * A data channel message to send: binary data (ArrayBuffer, typed array) gets the binary
 * envelope (a recipient count, each recipient id prefixed with its UTF-8 length, then
 * the payload); anything else is sent as the JSON text `{"data": ..., "to": [...]}`.
 * @param {unknown} data
 * @param {string[] | undefined} to
 * @returns {string | Uint8Array<ArrayBuffer>}
 */
export function encodeDataMessage(data, to) {
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    const payload = data instanceof ArrayBuffer
      ? new Uint8Array(data)
      : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const ids = (to ?? []).map((id) => new TextEncoder().encode(id));
    if (ids.length > 255 || ids.some((id) => id.length === 0 || id.length > 255)) {
      throw new ParleyError("invalid_field", "at most 255 recipients, ids of 1 to 255 bytes");
    }
    const out = new Uint8Array(1 + ids.reduce((n, id) => n + 1 + id.length, 0) + payload.length);
    out[0] = ids.length;
    let pos = 1;
    for (const id of ids) {
      out[pos] = id.length;
      out.set(id, pos + 1);
      pos += 1 + id.length;
    }
    out.set(payload, pos);
    return out;
  }
  /** @type {{data: unknown, to?: string[]}} */
  const body = { data };
  if (to !== undefined) body.to = [...to];
  return JSON.stringify(body);
}

/**
 * A relayed message as the server sends it; null when it cannot be read.
 * @param {string | ArrayBuffer} message
 * @returns {DataMessage | null}
 */
export function decodeDataMessage(message) {
  if (typeof message === "string") {
    try {
      const value = JSON.parse(message);
      if (value === null || typeof value !== "object" || typeof value.from !== "string") return null;
      return { from: value.from, data: value.data, binary: false };
    } catch {
      return null;
    }
  }
  const bytes = new Uint8Array(message);
  if (bytes.length < 1 || bytes.length < 1 + bytes[0]) return null;
  const from = new TextDecoder().decode(bytes.subarray(1, 1 + bytes[0]));
  return { from, data: bytes.slice(1 + bytes[0]), binary: true };
}

/** @param {TrackInfo} t @returns {TrackInfo} */
function toTrackInfo(t) {
  /** @type {TrackInfo} */
  const track = { id: t.id, kind: t.kind };
  if (Array.isArray(t.layers)) track.layers = [...t.layers];
  if (t.muted === true) track.muted = true;
  return track;
}

/** @param {ParticipantInfo} info @returns {Participant} */
function toParticipant(info) {
  return {
    id: info.id,
    name: info.name,
    tracks: new Map((info.tracks ?? []).map((t) => [t.id, toTrackInfo(t)])),
  };
}

// ------------------------------------------------------------------ session scope

/**
 * What lives and dies with one session (one websocket, its peer connections): the queue
 * its server messages are handled in, its publish negotiations, and every wait on the
 * browser. A peer-connection promise in flight when the connection is closed never
 * settles in Chromium (`setRemoteDescription`, `createOffer`, `setLocalDescription`: the
 * spec says to "abort these steps"), so nothing of a session may wait on one without
 * `guard`: when the session ends, or after a timeout, the wait fails instead of hanging,
 * and the next session starts with queues of its own.
 */
export class SessionScope {
  constructor() {
    this.over = false;
    /** Server messages of this session, handled one at a time, in order. */
    this.inbox = Promise.resolve();
    /** Publish negotiations of this session (one `publish_offer` in flight). @type {Promise<unknown>} */
    this.publishChain = Promise.resolve();
    /** @type {(error: Error) => void} */
    let end = () => {};
    /** Rejects when the session ends. @type {Promise<never>} */
    this.ended = new Promise((_, reject) => {
      end = reject;
    });
    this.ended.catch(() => {});
    this._end = end;
  }

  /** Ends the session: every guarded wait fails with `closed`. Idempotent. */
  end() {
    if (this.over) return;
    this.over = true;
    this._end(new ParleyError("closed", "session ended"));
  }

  /**
   * `promise`, unless the session ends first (rejects `closed`) or `timeoutMs` passes
   * (rejects `timeout`, naming `what`).
   * @template T
   * @param {Promise<T>} promise
   * @param {string} what
   * @param {number} timeoutMs
   * @returns {Promise<T>}
   */
  guard(promise, what, timeoutMs) {
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    /** @type {Promise<never>} */
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new ParleyError("timeout", `${what}: nothing within ${timeoutMs} ms`)), timeoutMs);
    });
    return Promise.race([promise, this.ended, timeout]).finally(() => clearTimeout(timer));
  }
}

/**
 * The wait before rejoin attempt `attempt` (1, 2, …): `min` doubled each attempt up to
 * `max`, times a random factor in [0.75, 1.25) so that the clients of a restarted server
 * do not all come back at once. With a server hint (`server_shutdown`'s
 * `retry_after_ms`) the first wait is the hint times [1, 1.25) instead.
 * @param {number} attempt
 * @param {{min: number, max: number, hintMs?: number | null, random?: () => number}} options
 * @returns {number} milliseconds
 */
export function reconnectDelay(attempt, { min, max, hintMs = null, random = Math.random }) {
  if (attempt === 1 && hintMs !== null && hintMs > 0) return Math.round(hintMs * (1 + 0.25 * random()));
  const base = Math.min(max, min * 2 ** Math.min(30, attempt - 1));
  return Math.round(base * (0.75 + 0.5 * random()));
}

// ------------------------------------------------------------------ client

/**
 * A Parley session in the browser. See the module comment and docs/browser-client.md.
 */
export class ParleyClient extends EventTarget {
  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    this.options = {
      gatherTimeoutMs: 5000,
      requestTimeoutMs: 10_000,
      connectTimeoutMs: 5000,
      reconnect: true,
      reconnectMinDelayMs: 250,
      reconnectMaxDelayMs: 2000,
      iceDisconnectedTimeoutMs: 5000,
      keepaliveIntervalMs: 10_000,
      url: globalThis.location ? globalThis.location.origin : "",
      ...options,
    };
    /** @type {ClientState} */
    this.state = "new";
    /**
     * When each phase of the first join happened, in ms since `join()` (the names of
     * `loadgen/join_phases.py`: `ws_open`, `joined`, `publish.offer_sent`, …,
     * `subscribe.first_frame`, which the page marks with `markJoinPhase`).
     * @type {Record<string, number>}
     */
    this.joinPhases = {};
    /** @type {number | null} */
    this._joinStart = null;
    /** Rejoin attempts made since the session was lost (0 when not reconnecting). */
    this.reconnectAttempt = 0;
    /** @type {Promise<void> | null} the running reconnect loop */
    this._reconnecting = null;
    /** Wakes the reconnect loop's wait early (`close()`, `reconnectNow()`). */
    this._wakeReconnect = () => {};

    // What the user wants. Survives a session: a reconnect re-applies it.
    /** @type {MediaStream | null} */
    this._localStream = null;
    /** @type {PublishOptions} */
    this._publishOptions = {};
    /** @type {Record<TrackKind, boolean>} */
    this._muted = { audio: false, video: false };
    /** @type {Map<string, LayerRequest>} by remote track id */
    this._layerRequests = new Map();

    // The session: rebuilt from scratch by `_startSession()`.
    /** @type {SessionScope | null} the current session's queues and waits */
    this._scope = null;
    /** @type {SignalingChannel | null} */
    this.signaling = null;
    /** @type {string | null} our participant id */
    this.id = null;
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** @type {Map<string, Participant>} */
    this.participants = new Map();
    /** @type {RTCPeerConnection | null} */
    this.publishConnection = null;
    /** @type {RTCPeerConnection | null} */
    this.subscribeConnection = null;
    /** @type {RTCDataChannel | null} the "parley" data channel, on the publish connection */
    this.dataChannel = null;
    /** @type {RTCPeerConnection | null} the publish connection it was opened on */
    this._dataPc = null;
    /** @type {PublishedTrackInfo[]} what the server published of ours */
    this.publishedTracks = [];
    /** @type {Map<string, RemoteTrack>} by subscribe mid */
    this._remoteByMid = new Map();
    /** @type {Map<string, LayerInfo>} by remote track id */
    this._layers = new Map();
    this._leaving = false;
    this._leftReason = "left";
    /** @type {string | null} set when the server sent `left` on its own */
    this._serverLeft = null;
    /** @type {Map<RTCPeerConnection, ReturnType<typeof setTimeout>>} ICE "disconnected" timers */
    this._iceTimers = new Map();
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._keepalive = undefined;
    /** @type {string | null} who the server says is speaking (`active_speaker`) */
    this.activeSpeaker = null;
  }

  /** The state, unnarrowed (it changes across awaits). @returns {ClientState} */
  _stateNow() {
    return this.state;
  }

  /** @param {ClientState} state */
  _setState(state) {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this._emit("statechange", { state, previous });
  }

  // ---------------------------------------------------------- events

  /**
   * Adds a typed listener; returns a function that removes it.
   * @template {keyof ParleyEventMap} K
   * @param {K} type
   * @param {(event: ParleyEventMap[K]) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    const l = /** @type {EventListener} */ (/** @type {unknown} */ (listener));
    this.addEventListener(type, l);
    return () => this.removeEventListener(type, l);
  }

  /**
   * @template {keyof ParleyEventMap} K
   * @param {K} type
   * @param {ParleyEventMap[K]["detail"]} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---------------------------------------------------------- public API

  /** Remote tracks being received now. @returns {RemoteTrack[]} */
  get remoteTracks() {
    return [...this._remoteByMid.values()];
  }

  /** @param {string} trackId @returns {RemoteTrack | undefined} */
  remoteTrack(trackId) {
    return this.remoteTracks.find((t) => t.trackId === trackId);
  }

  /** @param {TrackKind} kind */
  isMuted(kind) {
    return this._muted[kind];
  }

  /** Whether the data channel is open (`send` works). */
  get dataOpen() {
    return this.dataChannel !== null && this.dataChannel.readyState === "open";
  }

  /**
   * Sends a data channel message, relayed by the server to everyone else in the room or
   * only to `options.to` (participant ids). Binary data (ArrayBuffer, typed arrays) goes
   * as bytes, anything else as JSON. The data channel rides on the publish connection:
   * it opens once `publish()` connected (event `datachannel`); `publish(new MediaStream())`
   * publishes the data channel alone. Throws a ParleyError
   * `wrong_state` when it is not open. A message the server refuses (too large, over the
   * rate limit) is dropped and reported as a `servererror` (`data_too_large`,
   * `data_rate_limited`, `bad_data`).
   * @param {unknown} data
   * @param {SendOptions} [options]
   */
  send(data, options = {}) {
    const channel = this.dataChannel;
    if (!channel || channel.readyState !== "open") {
      throw new ParleyError("wrong_state", "the data channel is not open (publish first)");
    }
    const message = encodeDataMessage(data, options.to);
    // two calls: RTCDataChannel.send's overloads take a string or bytes, not the union
    if (typeof message === "string") channel.send(message);
    else channel.send(message);
  }

  /**
   * Calls `callback(sender, data)` for every data channel message received; returns a
   * function that stops it. (The same as listening to the `data` event.)
   * @param {(sender: string, data: unknown, binary: boolean) => void} callback
   * @returns {() => void}
   */
  onData(callback) {
    return this.on("data", (event) => callback(event.detail.from, event.detail.data, event.detail.binary));
  }

  /** @param {RTCPeerConnection} pc */
  _openDataChannel(pc) {
    const channel = pc.createDataChannel(DATA_CHANNEL_LABEL);
    channel.binaryType = "arraybuffer";
    this._dataPc = pc;
    this.dataChannel = channel;
    channel.addEventListener("open", () => {
      if (this.dataChannel === channel) this._emit("datachannel", { open: true });
    });
    channel.addEventListener("close", () => {
      if (this.dataChannel === channel) {
        this.dataChannel = null;
        this._emit("datachannel", { open: false });
      }
    });
    channel.addEventListener("message", (event) => {
      const message = decodeDataMessage(event.data);
      if (message && this.dataChannel === channel) this._emit("data", message);
    });
  }

  /**
   * Opens the websocket and joins the room. Resolves with our participant id; rejects
   * with a ParleyError (`join_refused`, …) when the server refuses.
   * @returns {Promise<string>}
   */
  async join() {
    if (this.state !== "new") throw new ParleyError("wrong_state", `join() when ${this.state}`);
    this._joinStart = performance.now();
    return this._startSession();
  }

  /**
   * Notes `phase` of the first join now (the first time wins; see `joinPhases`).
   * @param {string} phase
   */
  markJoinPhase(phase) {
    if (this._joinStart === null || phase in this.joinPhases) return;
    this.joinPhases[phase] = Math.round((performance.now() - this._joinStart) * 10) / 10;
  }

  /**
   * Publishes `stream`'s first audio and first video track on the publish connection.
   * Video goes out as three simulcast layers unless `options.simulcast` is false.
   * Resolves with the tracks the server published (ids, kinds, mids).
   * @param {MediaStream} stream
   * @param {PublishOptions} [options]
   * @returns {Promise<PublishedTrackInfo[]>}
   */
  async publish(stream, options = {}) {
    if (this.state !== "joined") throw new ParleyError("wrong_state", `publish() when ${this.state}`);
    if (this._localStream) throw new ParleyError("wrong_state", "already publishing");
    this._localStream = stream;
    this._publishOptions = { ...options };
    return this._negotiatePublish();
  }

  /**
   * Swaps the published track of `track.kind` for `track` (another camera or
   * microphone) without renegotiating. The published stream now holds `track`; the old
   * track is returned (the caller stops it). A muted kind stays muted.
   * @param {MediaStreamTrack} track
   * @returns {Promise<MediaStreamTrack>}
   */
  async replaceTrack(track) {
    const stream = this._localStream;
    const kind = /** @type {TrackKind} */ (track.kind);
    const old = stream ? (kind === "audio" ? stream.getAudioTracks() : stream.getVideoTracks())[0] : undefined;
    if (!stream || !old) throw new ParleyError("wrong_state", `not publishing ${kind}`);
    stream.removeTrack(old);
    stream.addTrack(track);
    await this._applyMute(kind);
    return old;
  }

  /**
   * Mutes or unmutes our published audio or video. A muted track sends nothing at all
   * (`RTCRtpSender.replaceTrack(null)`: no RTP reaches the server, unlike
   * `track.enabled = false` which keeps sending silence / black frames). The local
   * MediaStreamTrack is left alone, so a local preview keeps working.
   * @param {TrackKind} kind
   * @param {boolean} muted
   */
  async setMuted(kind, muted) {
    this._muted[kind] = muted;
    await this._applyMute(kind);
    this._emit("mute", { kind, muted });
  }

  /**
   * Asks the server what to forward of remote track `trackId`: at most `maxWidth` ×
   * `maxHeight` (the size of the tile that shows it), or nothing while `paused`.
   * Fields left out are not sent and keep their earlier value (the server keeps them
   * too); to lift a limit, send the largest value (7680 wide, 4320 high). The server
   * confirms what it forwards with a `layer` event.
   * @param {string} trackId
   * @param {LayerRequest} request
   */
  setLayer(trackId, request) {
    if (request.maxWidth !== undefined) checkedSize("maxWidth", request.maxWidth, 7680);
    if (request.maxHeight !== undefined) checkedSize("maxHeight", request.maxHeight, 4320);
    /** @type {LayerRequest} */
    const wanted = { ...this._layerRequests.get(trackId), ...request };
    this._layerRequests.set(trackId, wanted);
    // sent now if we receive that track, else as soon as a subscribe_offer maps it
    if (this.remoteTrack(trackId)) this._sendLayerRequest(trackId);
  }

  /** Sends everything we want of `trackId` (the server keeps fields left out). */
  _sendLayerRequest(/** @type {string} */ trackId) {
    const wanted = this._layerRequests.get(trackId);
    if (!wanted || !this.signaling || this.state !== "joined") return;
    /** @type {Message} */
    const message = { type: "set_layer", track: trackId };
    if (wanted.maxWidth !== undefined) message.max_width = wanted.maxWidth;
    if (wanted.maxHeight !== undefined) message.max_height = wanted.maxHeight;
    if (wanted.paused !== undefined) message.paused = Boolean(wanted.paused);
    this.signaling.send(message);
  }


  /** What the server last said it forwards of `trackId` (`layer` message), if anything. */
  layer(/** @type {string} */ trackId) {
    return this._layers.get(trackId) ?? null;
  }

  /**
   * Round trip to the server (`ping` → `pong`); resolves with the time it took, in ms.
   * @returns {Promise<number>}
   */
  async ping() {
    if (!this.signaling) throw new ParleyError("not_connected", "not connected");
    const start = performance.now();
    await this.signaling.request({ type: "ping" }, ["pong"]);
    return performance.now() - start;
  }

  /**
   * Leaves the room (`leave`, waits for `left` at most `timeoutMs`) and closes.
   * @param {number} [timeoutMs=2000]
   */
  async leave(timeoutMs = 2000) {
    this._leaving = true;
    if (this.state === "joined" && this.signaling && this.signaling.isOpen) {
      try {
        await this.signaling.request({ type: "leave" }, ["left"], timeoutMs);
      } catch {
        // gone already, or too slow: closing is what matters
      }
    }
    this.close(this._leftReason);
  }

  /**
   * Closes the websocket and both peer connections. Idempotent. The local stream is the
   * caller's: it is not stopped.
   * @param {string} [reason="closed"]
   */
  close(reason = "closed") {
    if (this.state === "closed") return;
    this._teardownSession();
    this._setState("closed");
    this._wakeReconnect();
    this._emit("closed", { reason });
  }

  /** While reconnecting: try now instead of waiting out the backoff. */
  reconnectNow() {
    this._wakeReconnect();
  }

  // ---------------------------------------------------------- session

  /**
   * Builds a session from the user's wishes: websocket, join, publish (if a stream was
   * given), mute state. A reconnect loop calls this again after `_teardownSession()`.
   * @returns {Promise<string>}
   */
  async _startSession() {
    const rejoin = this.state === "reconnecting";
    if (!rejoin) this._setState("joining");
    this._leaving = false;
    this._serverLeft = null;
    // a session of our own: nothing left over from the last one (a handler stuck on its
    // closed peer connection, say) can hold this one up
    const scope = new SessionScope();
    this._scope = scope;
    /** @param {string} url */
    const channel = (url) => {
      const signaling = new SignalingChannel(url, {
        WebSocketImpl: this.options.WebSocketImpl,
        requestTimeoutMs: this.options.requestTimeoutMs,
      });
      this.signaling = signaling;
      signaling.onmessage = (message) => {
        // handled at once, not behind the queue: the session is over
        if (message.type === "server_shutdown") this._onServerShutdown(signaling, message);
        else if (message.type !== "redirect") this._enqueue(message);
      };
      signaling.onclose = (code, reason) => this._onSignalingClosed(signaling, code, reason);
      return signaling;
    };
    // always through the page's own server (the entry): it knows where the room is now
    let signaling = channel(websocketUrl(this.options.url));
    try {
      await signaling.open(this.options.connectTimeoutMs);
      this.markJoinPhase("ws_open");
      /** @type {Message} */
      const join = { type: "join", room: this.options.room, name: this.options.name };
      if (this.options.token !== undefined) join.token = this.options.token;
      let reply = await signaling.request(join, ["joined", "redirect"]);
      for (let hops = 0; reply.type === "redirect"; hops++) {
        // another node of the cluster serves the room (parley serve --redis): join there
        if (hops >= MAX_REDIRECTS) throw new ParleyError("redirect_loop", `more than ${MAX_REDIRECTS} redirects`);
        signaling.onclose = () => {};
        signaling.close();
        if (this._scope !== scope) throw new ParleyError("closed", "session ended");
        this._emit("redirected", { url: String(reply.url) });
        signaling = channel(String(reply.url));
        await signaling.open(this.options.connectTimeoutMs);
        reply = await signaling.request(join, ["joined", "redirect"]);
      }
      // `joined` went into the inbox before the request settled
      await scope.guard(scope.inbox, "handling joined", this.options.requestTimeoutMs);
      if (this._scope !== scope) throw new ParleyError("closed", "session ended");
    } catch (error) {
      if (this._scope === scope) this._teardownSession();
      if (this._scope === null && this._stateNow() !== "closed") this._setState(rejoin ? "reconnecting" : "new");
      throw error;
    }
    if (this._localStream) await this._negotiatePublish();
    return /** @type {string} */ (this.id);
  }

  /** Drops everything of the current session (not the user's wishes). */
  _teardownSession() {
    const scope = this._scope;
    this._scope = null;
    if (scope) scope.end();
    const signaling = this.signaling;
    this.signaling = null;
    if (signaling) signaling.close();
    for (const pc of [this.publishConnection, this.subscribeConnection]) {
      if (pc) pc.close();
    }
    clearInterval(this._keepalive);
    for (const timer of this._iceTimers.values()) clearTimeout(timer);
    this._iceTimers.clear();
    this.publishConnection = null;
    this.subscribeConnection = null;
    if (this.dataChannel) {
      this.dataChannel = null;
      this._emit("datachannel", { open: false });
    }
    const removed = [...this._remoteByMid.values()];
    this._remoteByMid.clear();
    for (const remote of removed) this._emit("trackremoved", remote);
    this.publishedTracks = [];
    // a UI that follows the events sees everybody go (they come back with `joined`)
    const gone = [...this.participants.values()];
    this.participants.clear();
    for (const participant of gone) this._emit("participantleft", participant);
    this._layers.clear();
    this.id = null;
    if (this.activeSpeaker !== null) {
      this.activeSpeaker = null;
      this._emit("activespeaker", { participant: null });
    }
  }

  /**
   * @param {SignalingChannel} signaling
   * @param {number} code
   * @param {string} reason
   */
  _onSignalingClosed(signaling, code, reason) {
    if (signaling !== this.signaling || this.state === "closed") return;
    if (this._leaving) {
      this.close(this._leftReason);
      return;
    }
    const why = this._serverLeft ?? `websocket closed (${code}${reason ? ` ${reason}` : ""})`;
    if (this._serverLeft === null) this._emit("disconnected", { code, reason });
    this._sessionLost(why, null, this._serverLeft !== null ? this._leftReason : "disconnected");
  }

  /**
   * The server says it stops (`server_shutdown`): the session is over now, whether or
   * not the websocket's close follows; rejoin after about the server's `retry_after_ms`.
   * @param {SignalingChannel} signaling
   * @param {Message} message
   */
  _onServerShutdown(signaling, message) {
    if (signaling !== this.signaling || this.state === "closed") return;
    const reason = typeof message.reason === "string" && message.reason ? message.reason : "server shutdown";
    const hint = Number(message.retry_after_ms);
    // a hint is a hint: never more than a minute, whatever the server says
    const retryAfterMs = Number.isFinite(hint) ? Math.min(60_000, Math.max(0, Math.round(hint))) : 0;
    const reconnect = message.reconnect !== false; // absent (older servers): true
    this._emit("servershutdown", { reason, retryAfterMs, reconnect });
    if (this._leaving || !reconnect) {
      this.close(this._leftReason);
      return;
    }
    this._sessionLost(`the server is shutting down: ${reason}`, retryAfterMs, reason);
  }

  /**
   * The session is gone (websocket closed, ICE failed, the server ended it or shuts
   * down): reconnect, or close (with `closeReason`) when reconnecting is off. A join()
   * still in progress fails instead (the caller decides).
   * @param {string} reason
   * @param {number | null} [retryAfterMs]  the server's hint for the first wait
   * @param {string} [closeReason]
   */
  _sessionLost(reason, retryAfterMs = null, closeReason = "disconnected") {
    if (this.state === "closed" || this._leaving) return;
    if (this.state === "new" || this.state === "joining") {
      this._teardownSession(); // join() sees its session end and rejects
      return;
    }
    if (!this.options.reconnect) {
      this.close(closeReason);
      return;
    }
    if (this._reconnecting) {
      // a rejoin in progress lost its session: the loop sees the failure and goes on
      this._teardownSession();
      return;
    }
    this._teardownSession();
    this._setState("reconnecting");
    this._reconnecting = this._reconnectLoop(reason, retryAfterMs).finally(() => {
      this._reconnecting = null;
    });
  }

  /**
   * Rejoins until it works, `join_refused`, or `close()`. Every wait in it ends: the
   * backoff's timer, and each step of an attempt (websocket open, join, publish) has a
   * timeout or fails when its session ends.
   * @param {string} reason why the last session (or attempt) ended
   * @param {number | null} hintMs  the server's `retry_after_ms`, if it sent one
   */
  async _reconnectLoop(reason, hintMs) {
    const { reconnectMinDelayMs: min, reconnectMaxDelayMs: max } = this.options;
    for (let attempt = 1; ; attempt++) {
      this.reconnectAttempt = attempt;
      const delayMs = reconnectDelay(attempt, { min, max, hintMs });
      this._emit("reconnecting", { attempt, delayMs, reason });
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        this._wakeReconnect = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
      this._wakeReconnect = () => {};
      if (this._stateNow() !== "reconnecting") return;
      this._emit("reconnectattempt", { attempt });
      try {
        const id = await this._startSession();
        if (this._stateNow() !== "joined") throw new ParleyError("connection_closed", "lost again while rejoining");
        this.reconnectAttempt = 0;
        this._emit("reconnected", { id, attempts: attempt });
        return;
      } catch (error) {
        if (this._stateNow() === "closed") return;
        const code = error instanceof ParleyError ? error.code : "";
        reason = error instanceof Error ? error.message : String(error);
        if (code === "join_refused") {
          this.close(`join refused: ${reason}`);
          return;
        }
        if (this._stateNow() === "joined") {
          // joined, but republishing failed for a reason a retry will not change
          // (`servererror` told the UI): keep the session
          if (!RETRYABLE.has(code)) return;
          this._teardownSession();
        }
        this._setState("reconnecting");
      }
    }
  }

  /** Pings the server while joined; a missing `pong` means the connection is gone. */
  _startKeepalive() {
    clearInterval(this._keepalive);
    const interval = this.options.keepaliveIntervalMs;
    const signaling = this.signaling;
    if (!interval || !signaling) return;
    this._keepalive = setInterval(() => {
      signaling.request({ type: "ping" }, ["pong"]).catch((error) => {
        if (this.signaling !== signaling || error.code !== "timeout") return;
        this._sessionLost("no answer from the server");
      });
    }, interval);
  }

  /** @param {RTCIceServer[]} iceServers */
  _newPeerConnection(/** @type {"publish" | "subscribe"} */ role, iceServers) {
    const Impl = this.options.PeerConnectionImpl ?? RTCPeerConnection;
    // never the browser's default ICE servers: exactly the server's list, maybe empty
    const pc = new Impl({ iceServers });
    pc.addEventListener("iceconnectionstatechange", () => {
      if (pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed") {
        this.markJoinPhase(`${role}.ice_connected`);
      }
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc !== this.publishConnection && pc !== this.subscribeConnection) return;
      const state = pc.connectionState;
      if (state === "connected") this.markJoinPhase(`${role}.dtls_connected`);
      this._emit("connectionstatechange", { connection: role, state });
      const timer = this._iceTimers.get(pc);
      if (timer !== undefined) clearTimeout(timer);
      this._iceTimers.delete(pc);
      if (state === "failed") this._sessionLost(`${role} connection failed`);
      else if (state === "disconnected") {
        // ICE may come back by itself; if not, rejoin
        this._iceTimers.set(pc, setTimeout(() => {
          this._iceTimers.delete(pc);
          if (pc.connectionState !== "connected") this._sessionLost(`${role} connection lost`);
        }, this.options.iceDisconnectedTimeoutMs));
      }
    });
    return pc;
  }

  // ---------------------------------------------------------- publishing

  /** @returns {Promise<PublishedTrackInfo[]>} */
  _negotiatePublish() {
    const scope = this._scope;
    if (!scope) return Promise.reject(new ParleyError("wrong_state", "not joined"));
    const run = async () => {
      const signaling = this.signaling;
      const stream = this._localStream;
      if (this._scope !== scope || !signaling) throw new ParleyError("closed", "session ended");
      if (!stream) throw new ParleyError("wrong_state", "nothing to publish");
      const timeout = this.options.requestTimeoutMs;
      const pc = this.publishConnection ?? this._newPeerConnection("publish", this.iceServers);
      this.publishConnection = pc;
      if (pc.getTransceivers().length === 0 && this._dataPc !== pc) {
        this._addLocalTracks(pc, stream);
        this._openDataChannel(pc);
      }
      const offer = await scope.guard(pc.createOffer(), "creating the publish offer", timeout);
      await scope.guard(pc.setLocalDescription(offer), "applying the publish offer", timeout);
      await scope.guard(waitForIceGathering(pc, this.options.gatherTimeoutMs), "gathering", timeout);
      const local = /** @type {RTCSessionDescription} */ (pc.localDescription);
      this.markJoinPhase("publish.offer_sent");
      const answer = await signaling.request({ type: "publish_offer", sdp: local.sdp }, ["publish_answer"]);
      this.markJoinPhase("publish.answer_received");
      if (this._scope !== scope) throw new ParleyError("closed", "session ended");
      await scope.guard(pc.setRemoteDescription({ type: "answer", sdp: answer.sdp }), "applying the publish answer", timeout);
      this.publishedTracks = /** @type {PublishedTrackInfo[]} */ (answer.tracks ?? []);
      for (const kind of /** @type {TrackKind[]} */ (["audio", "video"])) await this._applyMute(kind);
      this._emit("published", this.publishedTracks);
      return this.publishedTracks;
    };
    const result = scope.publishChain.then(run, run);
    scope.publishChain = result.catch(() => {});
    return result;
  }

  /**
   * @param {RTCPeerConnection} pc
   * @param {MediaStream} stream
   */
  _addLocalTracks(pc, stream) {
    const options = this._publishOptions;
    const audio = stream.getAudioTracks()[0];
    const video = stream.getVideoTracks()[0];
    if (audio) pc.addTransceiver(audio, { direction: "sendonly", streams: [stream] });
    if (video) {
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: "sendonly", streams: [stream] };
      if (options.encodings) init.sendEncodings = options.encodings.map((e) => ({ ...e }));
      else if (options.simulcast !== false) {
        init.sendEncodings = DEFAULT_SIMULCAST_ENCODINGS.map((e) => ({ ...e }));
      }
      const transceiver = pc.addTransceiver(video, init);
      preferCodec(transceiver, options.videoCodec ?? "video/VP8");
    }
  }

  /**
   * Puts the wish for `kind` (muted or the local track) on our sender. A session that
   * ends meanwhile is no failure: the next one applies the wish when it publishes.
   * @param {TrackKind} kind
   */
  async _applyMute(kind) {
    const pc = this.publishConnection;
    const scope = this._scope;
    const stream = this._localStream;
    if (!pc || !scope || !stream) return;
    const local = kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
    if (!local) return;
    for (const transceiver of pc.getTransceivers()) {
      const sender = transceiver.sender;
      if (transceiver.receiver.track.kind !== kind || transceiver.currentDirection === "stopped") continue;
      const wanted = this._muted[kind] ? null : local;
      if (sender.track === wanted) continue;
      try {
        await scope.guard(sender.replaceTrack(wanted), `replacing the ${kind} track`, this.options.requestTimeoutMs);
      } catch (error) {
        if (!scope.over) throw error;
        return;
      }
    }
  }

  // ---------------------------------------------------------- server messages

  /** @param {Message} message */
  _enqueue(message) {
    const scope = this._scope;
    if (!scope) return;
    scope.inbox = scope.inbox
      .then(() => {
        if (this._scope === scope) return this._handle(message, scope);
      })
      .catch((error) => {
        if (scope.over) return; // the session ended under it: nothing to report
        // a failure to apply a server message must not stop the ones after it
        this._emit("clienterror", {
          during: message.type,
          message: error instanceof Error ? error.message : String(error),
        });
      });
  }

  /**
   * @param {Message} message
   * @param {SessionScope} scope  the session it came in
   */
  async _handle(message, scope) {
    switch (message.type) {
      case "joined":
        return this._onJoined(message);
      case "participant_joined": {
        const participant = toParticipant(message.participant);
        this.participants.set(participant.id, participant);
        return this._emit("participantjoined", participant);
      }
      case "participant_left": {
        const participant = this.participants.get(message.id);
        if (!participant) return;
        this.participants.delete(message.id);
        for (const trackId of participant.tracks.keys()) this._layerRequests.delete(trackId);
        return this._emit("participantleft", participant);
      }
      case "track_published": {
        const participant = this.participants.get(message.participant);
        const track = toTrackInfo(message.track);
        if (participant) participant.tracks.set(track.id, track);
        return this._emit("trackpublished", { participant: message.participant, track });
      }
      case "track_unpublished": {
        const participant = this.participants.get(message.participant);
        const track = participant?.tracks.get(message.track);
        if (participant) participant.tracks.delete(message.track);
        this._layerRequests.delete(message.track);
        this._layers.delete(message.track);
        return this._emit("trackunpublished", {
          participant: message.participant,
          trackId: message.track,
          kind: track ? track.kind : null,
        });
      }
      case "track_muted": {
        const track = this.participants.get(message.participant)?.tracks.get(message.track);
        if (track) track.muted = Boolean(message.muted);
        return this._emit("trackmuted", {
          participant: message.participant,
          trackId: message.track,
          muted: Boolean(message.muted),
        });
      }
      case "subscribe_offer":
        return this._onSubscribeOffer(message, scope);
      case "layer": {
        /** @type {LayerInfo} */
        const layer = {
          track: message.track,
          rid: message.rid ?? null,
          width: message.width,
          height: message.height,
          paused: Boolean(message.paused),
        };
        this._layers.set(layer.track, layer);
        const remote = this.remoteTrack(layer.track);
        if (remote) remote.layer = layer;
        return this._emit("layer", layer);
      }
      case "error":
        return this._emit("servererror", {
          code: message.code,
          message: message.message,
          request: message.request,
          request_id: message.request_id,
        });
      case "active_speaker":
        this.activeSpeaker = typeof message.participant === "string" ? message.participant : null;
        return this._emit("activespeaker", { participant: this.activeSpeaker });
      case "left":
        this._leftReason = String(message.reason);
        // the operator ended it (removed, room closed): close instead of rejoining
        if (message.reconnect === false) this._leaving = true;
        // not asked for (the server shut down, our connection failed): we rejoin
        if (!this._leaving) this._serverLeft = `the server ended the session: ${this._leftReason}`;
        this._emit("left", { reason: this._leftReason });
        // the server closes the websocket next; `_onSignalingClosed` finishes
        return;
      default:
        // publish_answer / pong settle their requests; unknown types are ignored
        return;
    }
  }

  /** @param {Message} message */
  _onJoined(message) {
    this.id = message.id;
    this.iceServers = Array.isArray(message.ice_servers) ? message.ice_servers : [];
    this.participants.clear();
    for (const info of message.participants ?? []) {
      const participant = toParticipant(info);
      this.participants.set(participant.id, participant);
    }
    // layer requests are kept across a rejoin for the tracks still there (they are
    // re-sent when the new subscribe offers map them); the others' tracks are gone for
    // good (after a server restart every track id is new)
    for (const trackId of [...this._layerRequests.keys()]) {
      if (![...this.participants.values()].some((p) => p.tracks.has(trackId))) this._layerRequests.delete(trackId);
    }
    this.markJoinPhase("joined");
    this._setState("joined");
    this._startKeepalive();
    this._emit("joined", {
      id: message.id,
      room: message.room,
      participants: [...this.participants.values()],
      iceServers: this.iceServers,
    });
  }

  /**
   * @param {Message} message
   * @param {SessionScope} scope
   */
  async _onSubscribeOffer(message, scope) {
    const signaling = this.signaling;
    if (!signaling) return;
    this.markJoinPhase("subscribe.offer_received");
    const timeout = this.options.requestTimeoutMs;
    const pc = this.subscribeConnection ?? this._newPeerConnection("subscribe", this.iceServers);
    this.subscribeConnection = pc;
    await scope.guard(pc.setRemoteDescription({ type: "offer", sdp: message.sdp }), "applying a subscribe offer", timeout);
    const answer = await scope.guard(pc.createAnswer(), "creating a subscribe answer", timeout);
    await scope.guard(pc.setLocalDescription(answer), "applying a subscribe answer", timeout);
    await scope.guard(waitForIceGathering(pc, this.options.gatherTimeoutMs), "gathering", timeout);
    if (this._scope !== scope) return;
    signaling.send({
      type: "subscribe_answer",
      sdp: /** @type {RTCSessionDescription} */ (pc.localDescription).sdp,
    });
    this.markJoinPhase("subscribe.answer_sent");
    this._mapRemoteTracks(pc, /** @type {Record<string, SubscribedTrackInfo>} */ (message.tracks ?? {}));
  }

  /**
   * Maps the subscribe connection's m-lines to remote tracks through the offer's
   * `tracks` (by transceiver mid): a mid may carry a different track than before.
   * @param {RTCPeerConnection} pc
   * @param {Record<string, SubscribedTrackInfo>} tracks
   */
  _mapRemoteTracks(pc, tracks) {
    /** @type {Map<string, RTCRtpTransceiver>} */
    const byMid = new Map();
    for (const transceiver of pc.getTransceivers()) {
      if (transceiver.mid !== null) byMid.set(transceiver.mid, transceiver);
    }
    // first everything that stopped, so a UI never shows two tracks in one slot
    for (const [mid, remote] of [...this._remoteByMid]) {
      const now = tracks[mid];
      if (now && now.track === remote.trackId && byMid.get(mid)?.receiver === remote.receiver) continue;
      this._remoteByMid.delete(mid);
      this._emit("trackremoved", remote);
    }
    for (const [mid, info] of Object.entries(tracks)) {
      if (this._remoteByMid.has(mid)) continue;
      const transceiver = byMid.get(mid);
      if (!transceiver) continue;
      const receiver = transceiver.receiver;
      /** @type {RemoteTrack} */
      const remote = {
        participant: info.participant,
        trackId: info.track,
        kind: info.kind,
        mid,
        track: receiver.track,
        stream: new MediaStream([receiver.track]),
        receiver,
        layer: this._layers.get(info.track) ?? null,
      };
      this._remoteByMid.set(mid, remote);
      // a layer request made before this subscription existed is sent now
      this._sendLayerRequest(info.track);
      this._emit("track", remote);
    }
  }
}

/** Failures a later rejoin attempt may not meet (the others are final). */
const RETRYABLE = new Set(["connection_failed", "connection_closed", "closed", "timeout", "not_connected"]);

/**
 * @param {string} name
 * @param {number} value
 * @param {number} max
 */
function checkedSize(name, value, max) {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${name} must be an integer from 0 to ${max}`);
  }
  return value;
}

/**
 * Puts `mimeType` first in the transceiver's codec list (the server answers with the
 * first codec it supports). Does nothing where codec preferences are not available.
 * @param {RTCRtpTransceiver} transceiver
 * @param {string} mimeType
 */
function preferCodec(transceiver, mimeType) {
  if (!mimeType || typeof transceiver.setCodecPreferences !== "function") return;
  const capabilities = RTCRtpReceiver.getCapabilities("video");
  if (!capabilities) return;
  const wanted = mimeType.toLowerCase();
  const first = capabilities.codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (first.length === 0) return;
  const rest = capabilities.codecs.filter((c) => c.mimeType.toLowerCase() !== wanted);
  try {
    transceiver.setCodecPreferences([...first, ...rest]);
  } catch {
    // keep the browser's order
  }
}
