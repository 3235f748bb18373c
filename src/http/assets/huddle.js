// huddle.js — the JavaScript client of huddle (PROTOCOL.md §14). One ES module, no dependencies,
// for browsers and Node ≥ 20 (pass `WebSocket` from the `ws` package, or run Node with
// `--experimental-websocket`). Served by the server at `GET /huddle.js`.
//
//   import { Huddle } from "/huddle.js";
//   const h = new Huddle("ws://host:8080/ws", { token });
//   const sub = h.subscribe("odds");
//   sub.on("message", (msg) => render(msg.data));
//   sub.on("lost", () => reloadOdds());           // a gap the server could not replay
//
// What it does for the application:
//  - states connecting → connected → disconnected (→ connecting …), or closed after close();
//  - reconnects with exponential backoff and full jitter, the attempt count reset by each
//    connection_ack;
//  - after every connection_ack: sends the API key (a `refresh`, never in the URL), resubscribes
//    every channel with `since` = the last (offset, epoch) it saw (§10), then flushes the messages
//    queued while offline, in that order;
//  - drops any channel message at or below the known offset (no duplicate reaches the app);
//  - heartbeats, and a close when the server is silent for heartbeat_timeout (§5);
//  - refreshes an expiring token through `getToken` (§9).
// Bad input from the server never throws: it becomes an "error" event.

/**
 * One message in either direction (PROTOCOL.md §3). Fields that do not apply are absent.
 * @typedef {object} HuddleMessage
 * @property {string} event_type
 * @property {Record<string, any>} [data]
 * @property {string} [channel]
 * @property {number} [offset]     position in the channel (channel messages)
 * @property {string} [message_id]
 * @property {string} [reply_to]   the message_id of the client message this answers
 * @property {string} [timestamp]  RFC 3339, set by the server
 * @property {string} [user_id]
 */
/**
 * The data of `connection_ack` (§4).
 * @typedef {object} ConnectionAck
 * @property {string} connection_id
 * @property {string} server_time
 * @property {number} heartbeat_interval  seconds (fractional below 1 s)
 * @property {number} heartbeat_timeout   seconds
 * @property {string[]} supported_events
 * @property {string[]} subscriptions     channels subscribed by the endpoint itself (/ws/odds …)
 * @property {number} [expires_in]        seconds until the token expires
 */
/**
 * The data of a subscribe reply (§4, §10).
 * @typedef {object} SubscribeReply
 * @property {string} channel
 * @property {"subscribed"} status
 * @property {number} offset     the channel's last offset
 * @property {string} epoch
 * @property {boolean} [recovered] present when the subscription carried `since`
 */
/**
 * One entry of a publish reply (§7).
 * @typedef {object} PublishResult
 * @property {string} channel
 * @property {number} offset
 * @property {string} epoch
 * @property {number} recipients
 */
/** @typedef {{ offset: number, epoch: string }} Position */
/** @typedef {"connecting" | "connected" | "disconnected" | "closed"} State */
/** @typedef {{ state: State, previous: State }} StateChange */
/** @typedef {{ code: number, reason: string, retryIn: number }} Disconnected */
/** @typedef {{ offset: number, epoch: string, recovered?: boolean }} Subscribed */
/** @typedef {{ channel: string, offset: number, epoch: string }} Lost */
/**
 * @typedef {object} SubscribeOptions
 * @property {Record<string, Array<string|number>>} [filter]  §4 client filter
 * @property {boolean} [joinLeave]  also receive join/leave events (§10)
 * @property {Position} [since]     resume from this position on the first subscribe
 */
/**
 * @typedef {object} HuddleOptions
 * @property {string} [token]        sent as ?token=
 * @property {() => Promise<string>} [getToken]  a fresh token, before it expires and before a reconnect
 * @property {string} [apiKey]       sent in a `refresh` after each connection_ack, never in the URL
 * @property {string} [userId]       ?user_id= (development servers, tokens off)
 * @property {number} [minDelay=500]   ms, first reconnect delay bound
 * @property {number} [maxDelay=15000] ms, largest reconnect delay bound
 * @property {number} [queueLimit=1000] messages kept while disconnected
 * @property {boolean} [heartbeat=true]
 * @property {number} [connectTimeout=10000] ms from opening to connection_ack before retrying
 * @property {boolean} [autoConnect=true]
 * @property {any} [WebSocket]       constructor; default globalThis.WebSocket
 * @property {() => number} [random] in [0, 1); default Math.random
 */

/** An error from the server (`code` as in §4) or from the client itself. */
export class HuddleError extends Error {
  /**
   * @param {string} code  e.g. "forbidden", "outcome_unknown", "queue_full", "closed", "transport"
   * @param {string} message
   * @param {HuddleMessage} [event]  the server's error event, when there is one
   */
  constructor(code, message, event) {
    super(message);
    this.name = "HuddleError";
    this.code = code;
    this.event = event;
  }
}

/**
 * The reconnect delay before attempt `attempt` (0-based): full jitter, uniform in
 * [0, min(maxDelay, minDelay·2^attempt)] ms.
 * @param {number} attempt @param {number} minDelay @param {number} maxDelay
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoff(attempt, minDelay, maxDelay, random = Math.random) {
  const cap = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * (cap + 1));
}

/** Event types the client itself consumes; they never reach "message". */
const PROTOCOL = new Set(["connection_ack", "heartbeat", "user_subscription", "user_unsubscription", "refresh", "publish"]);
/** Names of client events; a server event_type with one of these names reaches "message" only. */
const RESERVED = new Set(["state", "connected", "disconnected", "error", "message", "lost"]);
/** Subscribe refusals that a resubscribe would only repeat. */
const PERMANENT = new Set(["forbidden", "invalid_channel", "invalid_message", "too_many_subscriptions"]);

/** A tiny event emitter; a throwing handler is reported asynchronously and does not stop the others. */
class Emitter {
  #handlers = new Map();
  /**
   * @param {string} name @param {(arg: any) => void} fn
   * @returns {() => void} removes the handler
   */
  on(name, fn) {
    if (!this.#handlers.has(name)) this.#handlers.set(name, new Set());
    this.#handlers.get(name).add(fn);
    return () => this.#handlers.get(name)?.delete(fn);
  }
  /** @param {string} name @param {any} arg */
  emit(name, arg) {
    for (const fn of [...(this.#handlers.get(name) ?? [])]) {
      try {
        fn(arg);
      } catch (e) {
        (globalThis.reportError ?? ((err) => setTimeout(() => { throw err; })))(e);
      }
    }
  }
}

/** One channel subscription; made by `Huddle.subscribe`. Events: message, subscribed, lost, error. */
export class Subscription extends Emitter {
  /** @type {Position | null} last (offset, epoch) seen: subscribe reply or message */
  position = null;
  /** true until unsubscribe() or a permanent refusal */
  active = true;
  #huddle;

  /** @param {Huddle} huddle @param {string} channel @param {SubscribeOptions} options */
  constructor(huddle, channel, options) {
    super();
    this.#huddle = huddle;
    this.channel = channel;
    this.options = options;
    if (options.since) this.position = { offset: options.since.offset, epoch: options.since.epoch };
  }

  /** Leaves the channel; nothing more is emitted. */
  unsubscribe() {
    if (!this.active) return;
    this.active = false;
    this.#huddle._unsubscribe(this);
  }

  /** The `data` of the subscribe request: since once there is a position. @returns {object} */
  _request() {
    const d = { channel: this.channel };
    if (this.options.filter) d.filter = this.options.filter;
    if (this.options.joinLeave) d.join_leave = true;
    if (this.position) d.since = { ...this.position };
    return d;
  }

  /**
   * A channel message: false when it is at or below the known offset (a duplicate).
   * @param {HuddleMessage} msg @returns {boolean}
   */
  _accept(msg) {
    if (typeof msg.offset !== "number") return true; // join/leave: not offset-numbered
    if (this.position && msg.offset <= this.position.offset) return false;
    if (this.position) this.position.offset = msg.offset;
    return true;
  }
}

/** The client. Events: state, connected, disconnected, error, message, lost, and any event_type. */
export class Huddle extends Emitter {
  /** @type {State} */
  state = "disconnected";
  /** @type {string | null} from the last connection_ack */
  connectionId = null;

  #url; #opts; #WS; #random;
  #token; #ws = null; #attempt = 0; #nextId = 0; #liveMs = 0;
  /** Bumped by every open and close, so a stale getToken() result is ignored. */
  #generation = 0;
  /** @type {Map<string, Subscription>} */
  #subs = new Map();
  /** @type {Array<{ msg: object, pending?: object }>} */
  #queue = [];
  /** @type {Map<string, { ok: (m: HuddleMessage) => void, fail: (e: HuddleError) => void, publish?: boolean }>} */
  #pending = new Map();
  #timers = {};

  /** @param {string} url e.g. "ws://host:8080/ws" @param {HuddleOptions} [options] */
  constructor(url, options = {}) {
    super();
    this.#url = url;
    const defaults = { minDelay: 500, maxDelay: 15000, queueLimit: 1000, heartbeat: true, connectTimeout: 10000 };
    this.#opts = { ...options };
    for (const [k, v] of Object.entries(defaults)) this.#opts[k] ??= v; // an explicit undefined too
    this.#WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WS !== "function") {
      throw new TypeError("huddle: no WebSocket here; pass { WebSocket } (e.g. from the ws package)");
    }
    this.#random = options.random ?? Math.random;
    this.#token = options.token;
    if (options.autoConnect !== false) this.connect();
  }

  /** Opens the connection (again after close()); does nothing while connecting or connected. */
  connect() {
    if (this.state === "connecting" || this.state === "connected") return;
    clearTimeout(this.#timers.retry);
    this.#open(false);
  }

  /** Closes with 1000 and stops reconnecting; queued publishes reject with code "closed". */
  close() {
    if (this.state === "closed") return;
    const ws = this.#ws;
    this.#generation++;
    this.#teardown();
    if (ws) try { ws.close(1000, "client closed"); } catch { /* already closed */ }
    for (const { pending } of this.#queue.splice(0)) pending?.fail(new HuddleError("closed", "client closed"));
    this.#setState("closed");
  }

  /**
   * Subscribes to `channel` (sent now, or once connected) and again after every reconnect.
   * Subscribing to a channel twice returns the same Subscription.
   * @param {string} channel @param {SubscribeOptions} [options] @returns {Subscription}
   */
  subscribe(channel, options = {}) {
    const known = this.#subs.get(channel);
    if (known) return known;
    const sub = new Subscription(this, channel, options);
    this.#subs.set(channel, sub);
    if (this.state === "connected") this.#sendSubscribe(sub);
    return sub;
  }

  /**
   * Publishes over the WebSocket (§7; needs the API key or a token with a publish claim).
   * Queued while disconnected. Rejects with a HuddleError: the server's code, "queue_full",
   * "closed", or "outcome_unknown" when the connection dropped before the reply (not resent).
   * @param {string} channel @param {string} eventType @param {Record<string, any>} [data]
   * @param {{ messageId?: string }} [options]
   * @returns {Promise<PublishResult[]>}
   */
  publish(channel, eventType, data = {}, options = {}) {
    return new Promise((resolve, reject) => {
      if (this.state === "closed") return reject(new HuddleError("closed", "the client is closed"));
      const body = { channel, event_type: eventType, data };
      if (options.messageId !== undefined) body.message_id = options.messageId;
      const msg = { event_type: "publish", message_id: this.#id("p"), data: body };
      const pending = {
        publish: true,
        ok: (m) => resolve(Array.isArray(m.data?.results) ? m.data.results : []),
        fail: reject,
      };
      if (!this.#enqueue(msg, pending)) reject(new HuddleError("queue_full", `more than ${this.#opts.queueLimit} messages queued`));
    });
  }

  /**
   * Sends a raw message, queued like publish() while disconnected.
   * @param {object} msg @returns {boolean} false when the queue is full (the message is dropped)
   */
  send(msg) {
    return this.#enqueue(msg);
  }

  /** @param {Subscription} sub called by Subscription.unsubscribe */
  _unsubscribe(sub) {
    if (this.#subs.get(sub.channel) !== sub) return;
    this.#subs.delete(sub.channel);
    if (this.state === "connected") {
      // No message_id: the reply has no reply_to and is consumed like a heartbeat reply.
      this.#raw({ event_type: "user_unsubscription", data: { channel: sub.channel } });
    }
  }

  // ---- connection lifecycle ----

  /** @param {boolean} reconnect whether this attempt follows a lost connection */
  async #open(reconnect) {
    this.#setState("connecting");
    const generation = ++this.#generation;
    const { getToken } = this.#opts;
    if (getToken && (reconnect || this.#token === undefined)) {
      try {
        this.#token = await getToken();
      } catch (e) {
        this.emit("error", new HuddleError("token", `getToken failed: ${e?.message ?? e}`));
      }
      if (generation !== this.#generation) return; // closed (and maybe reopened) meanwhile
    }
    let ws;
    try {
      ws = new this.#WS(this.#endpoint());
    } catch (e) {
      this.emit("error", new HuddleError("transport", `cannot open ${this.#url}: ${e?.message ?? e}`));
      return this.#dropped(1006, "cannot open");
    }
    this.#ws = ws;
    const mine = (fn) => (ev) => { if (this.#ws === ws) fn(ev); };
    ws.onmessage = mine((ev) => this.#frame(ev.data));
    ws.onclose = mine((ev) => this.#dropped(ev.code ?? 1006, ev.reason ?? ""));
    // An error is not always followed by a close event (Node 20's WebSocket, when the handshake
    // fails): treat it as the end of this socket.
    ws.onerror = mine(() => {
      this.emit("error", new HuddleError("transport", `WebSocket error on ${this.#url}`));
      this.#abandon("WebSocket error");
    });
    this.#timers.connect = setTimeout(mine(() => this.#abandon("no connection_ack")), this.#opts.connectTimeout);
  }

  /** The URL with token and user_id (never the API key). @returns {string} */
  #endpoint() {
    const u = new URL(this.#url, globalThis.location?.href);
    if (this.#token) u.searchParams.set("token", this.#token);
    if (this.#opts.userId) u.searchParams.set("user_id", this.#opts.userId);
    return u.href;
  }

  /** Gives up on a silent socket: closes it and goes on as if it had dropped. @param {string} why */
  #abandon(why) {
    const ws = this.#ws;
    this.#dropped(1006, why);
    try { ws?.close(4000, why); } catch { /* closing anyway */ }
  }

  /** The connection is gone: reject in-flight publishes, then retry after the backoff delay. */
  #dropped(code, reason) {
    this.#teardown();
    if (this.state === "closed") return;
    const retryIn = backoff(this.#attempt++, this.#opts.minDelay, this.#opts.maxDelay, this.#random);
    this.#setState("disconnected");
    this.emit("disconnected", { code, reason, retryIn });
    this.#timers.retry = setTimeout(() => this.#open(true), retryIn);
  }

  /** Forgets the socket and its timers; fails what waited for a reply on it. */
  #teardown() {
    for (const t of Object.values(this.#timers)) { clearTimeout(t); clearInterval(t); }
    this.#timers = {};
    this.#liveMs = 0;
    if (this.#ws) this.#ws.onmessage = this.#ws.onclose = this.#ws.onerror = null;
    this.#ws = null;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      if (p.publish) p.fail(new HuddleError("outcome_unknown", "the connection dropped before the publish was answered"));
    }
  }

  /** @param {State} state */
  #setState(state) {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this.emit("state", { state, previous });
  }

  /** @param {ConnectionAck} ack */
  #connected(ack) {
    clearTimeout(this.#timers.connect);
    this.#attempt = 0;
    this.connectionId = typeof ack.connection_id === "string" ? ack.connection_id : null;
    this.#setState("connected");
    this.emit("connected", ack);
    this.#heartbeat(Number(ack.heartbeat_interval), Number(ack.heartbeat_timeout));
    this.#scheduleRefresh(ack.expires_in);
    if (this.#opts.apiKey) {
      this.#request({ event_type: "refresh", data: { api_key: this.#opts.apiKey } }, "k", {
        ok: () => {},
        fail: (e) => this.emit("error", e),
      });
    }
    for (const sub of this.#subs.values()) this.#sendSubscribe(sub);
    for (const { msg, pending } of this.#queue.splice(0)) this.#request(msg, "q", pending);
  }

  #heartbeat(interval, timeout) {
    if (!this.#opts.heartbeat) return;
    if (interval > 0) this.#timers.beat = setInterval(() => this.#raw({ event_type: "heartbeat" }), interval * 1000);
    if (timeout > 0) {
      this.#liveMs = timeout * 1000;
      this.#alive();
    }
  }

  /** A frame arrived: push the silence deadline back. */
  #alive() {
    if (!this.#liveMs) return;
    clearTimeout(this.#timers.live);
    this.#timers.live = setTimeout(() => this.#abandon("heartbeat timeout"), this.#liveMs);
  }

  /** Asks getToken for a new token shortly before `expiresIn` seconds pass. */
  #scheduleRefresh(expiresIn) {
    const { getToken } = this.#opts;
    clearTimeout(this.#timers.refresh);
    if (!getToken || typeof expiresIn !== "number") return;
    const lead = Math.min(30, expiresIn / 10);
    this.#timers.refresh = setTimeout(async () => {
      let token;
      try {
        token = await getToken();
      } catch (e) {
        return this.emit("error", new HuddleError("token", `getToken failed: ${e?.message ?? e}`));
      }
      if (this.state !== "connected") return;
      this.#token = token;
      this.#request({ event_type: "refresh", data: { token } }, "t", {
        ok: (m) => this.#scheduleRefresh(m.data?.expires_in),
        fail: (e) => this.emit("error", e),
      });
    }, Math.max(1, expiresIn - lead) * 1000);
  }

  // ---- outbound ----

  /** A message_id for a request of ours (prefixed so it does not meet the app's own ids). */
  #id(prefix) {
    return `huddle:${prefix}${++this.#nextId}`;
  }

  /** Sends now when connected, else queues; false when the queue is full. */
  #enqueue(msg, pending) {
    if (this.state === "connected") {
      this.#request(msg, "q", pending);
      return true;
    }
    if (this.state === "closed" || this.#queue.length >= this.#opts.queueLimit) return false;
    this.#queue.push({ msg, pending });
    return true;
  }

  /** Sends `msg`; with `pending`, its reply (by message_id) goes to pending.ok / pending.fail. */
  #request(msg, prefix, pending) {
    if (pending) {
      if (typeof msg.message_id !== "string") msg = { ...msg, message_id: this.#id(prefix) };
      this.#pending.set(msg.message_id, pending);
    }
    this.#raw(msg);
  }

  #raw(msg) {
    try {
      this.#ws?.send(JSON.stringify(msg));
    } catch (e) {
      this.emit("error", new HuddleError("transport", `send failed: ${e?.message ?? e}`));
    }
  }

  /** @param {Subscription} sub */
  #sendSubscribe(sub) {
    const data = sub._request();
    const resumed = data.since !== undefined;
    this.#request({ event_type: "user_subscription", data }, "s", {
      ok: (m) => this.#subscribed(sub, m.data ?? {}, resumed),
      fail: (e) => {
        if (PERMANENT.has(e.code) && this.#subs.get(sub.channel) === sub) {
          this.#subs.delete(sub.channel);
          sub.active = false;
        }
        sub.emit("error", e);
      },
    });
  }

  /** @param {Subscription} sub @param {SubscribeReply} reply @param {boolean} resumed */
  #subscribed(sub, reply, resumed) {
    if (!sub.active || typeof reply.offset !== "number") return;
    const epoch = typeof reply.epoch === "string" ? reply.epoch : "";
    const lost = resumed && reply.recovered !== true;
    if (!resumed || lost) sub.position = { offset: reply.offset, epoch };
    /** @type {Subscribed} */
    const ev = { offset: sub.position.offset, epoch: sub.position.epoch };
    if (typeof reply.recovered === "boolean") ev.recovered = reply.recovered;
    sub.emit("subscribed", ev);
    if (lost) {
      sub.emit("lost", { offset: reply.offset, epoch });
      this.emit("lost", { channel: sub.channel, offset: reply.offset, epoch });
    }
  }

  // ---- inbound ----

  /** One text frame from the server. */
  #frame(text) {
    this.#alive();
    let msg;
    try {
      msg = JSON.parse(typeof text === "string" ? text : String(text));
    } catch {
      return this.emit("error", new HuddleError("invalid_server_message", "the server sent something that is not JSON"));
    }
    if (msg === null || typeof msg !== "object" || Array.isArray(msg) || typeof msg.event_type !== "string") {
      return this.emit("error", new HuddleError("invalid_server_message", "the server sent a message without event_type"));
    }
    const type = msg.event_type;
    const pending = typeof msg.reply_to === "string" ? this.#pending.get(msg.reply_to) : undefined;
    if (pending) {
      this.#pending.delete(msg.reply_to);
      if (type === "error") return pending.fail(serverError(msg));
      return pending.ok(msg);
    }
    if (type === "connection_ack") {
      if (this.state === "connecting") this.#connected(msg.data ?? {});
      return;
    }
    if (type === "error") return this.emit("error", serverError(msg));
    if (PROTOCOL.has(type) && msg.reply_to === undefined) return; // heartbeat replies and the like
    const sub = typeof msg.channel === "string" ? this.#subs.get(msg.channel) : undefined;
    if (sub && !sub._accept(msg)) return;
    sub?.emit("message", msg);
    this.emit("message", msg);
    if (!RESERVED.has(type)) this.emit(type, msg);
  }
}

/** @param {HuddleMessage} msg an error event @returns {HuddleError} */
function serverError(msg) {
  const code = typeof msg.data?.code === "string" ? msg.data.code : "error";
  const text = typeof msg.data?.message === "string" ? msg.data.message : code;
  return new HuddleError(code, text, msg);
}
