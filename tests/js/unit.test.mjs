// Unit tests of huddle.js without a network: a fake WebSocket plays the server, node:test's mock
// timers play the clock.   node --test tests/js/unit.test.mjs   (driven by tests/js_client.rs)

import test from "node:test";
import assert from "node:assert/strict";
import { Huddle, backoff } from "../../src/http/assets/huddle.js";

/** A WebSocket class whose instances the test drives from the server's side. */
function fakeWebSocket() {
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = new URL(url);
      this.sent = [];
      this.closed = null;
      sockets.push(this);
    }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code, reason) { this.closed = { code, reason }; }
    // The server's side:
    push(msg) { this.onmessage?.({ data: typeof msg === "string" ? msg : JSON.stringify(msg) }); }
    drop(code = 1006, reason = "") { this.onclose?.({ code, reason }); }
    ack(data = {}) {
      this.push({ event_type: "connection_ack", data: { connection_id: `c${sockets.length}`, heartbeat_interval: 30, heartbeat_timeout: 60, ...data } });
    }
    /** Answers the last subscribe sent for `channel`. */
    subscribed(channel, data) {
      const req = this.sent.findLast((m) => m.event_type === "user_subscription" && m.data.channel === channel);
      this.push({ event_type: "user_subscription", reply_to: req.message_id, data: { channel, status: "subscribed", ...data } });
      return req;
    }
  }
  return { FakeWS, sockets, last: () => sockets[sockets.length - 1] };
}

/** A client on a fake socket with zero reconnect delay; `events` records what it emitted. */
function setup(t, options = {}) {
  t.mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  const fake = fakeWebSocket();
  const h = new Huddle("ws://example.test/ws", { WebSocket: fake.FakeWS, random: () => 0, ...options });
  const events = [];
  for (const name of ["state", "connected", "disconnected", "error", "message", "lost"]) {
    h.on(name, (e) => events.push([name, e]));
  }
  t.after(() => h.close());
  return { h, fake, events, tick: (ms = 0) => t.mock.timers.tick(ms) };
}

test("backoff: full jitter in [0, min(maxDelay, minDelay·2^attempt)]", () => {
  assert.equal(backoff(0, 500, 15000, () => 0), 0);
  assert.equal(backoff(0, 500, 15000, () => 0.999999), 500);
  assert.equal(backoff(3, 500, 15000, () => 0.999999), 4000);
  assert.equal(backoff(5, 500, 15000, () => 0.999999), 15000);
  assert.equal(backoff(5000, 500, 15000, () => 0.999999), 15000, "no overflow");
  assert.equal(backoff(2, 500, 15000, () => 0.5), 1000);
});

test("reconnect delays grow with the attempts and start over after an ack", (t) => {
  let r = 0.999999;
  const { fake, events, tick } = setup(t, { random: () => r, minDelay: 100, maxDelay: 1000 });
  const delays = () => events.filter(([n]) => n === "disconnected").map(([, e]) => e.retryIn);
  for (let i = 0; i < 5; i++) {
    fake.last().drop();
    tick(delays().at(-1));
  }
  assert.deepEqual(delays(), [100, 200, 400, 800, 1000]);
  fake.last().ack();
  fake.last().drop();
  assert.equal(delays().at(-1), 100, "attempt reset by the ack");
  assert.equal(fake.sockets.length, 6);
});

test("states, connectionId, and the query string", (t) => {
  const { h, fake, events } = setup(t, { token: "tok", userId: "u1", apiKey: "secret" });
  assert.equal(h.state, "connecting");
  const url = fake.last().url;
  assert.equal(url.searchParams.get("token"), "tok");
  assert.equal(url.searchParams.get("user_id"), "u1");
  assert.ok(!url.href.includes("secret"), "the API key is never in the URL");
  fake.last().ack();
  assert.equal(h.state, "connected");
  assert.equal(h.connectionId, "c1");
  h.close();
  assert.deepEqual(fake.last().closed, { code: 1000, reason: "client closed" });
  assert.deepEqual(events.filter(([n]) => n === "state").map(([, e]) => e.state), ["connected", "closed"]);
  fake.last().drop(1000);
  assert.equal(fake.sockets.length, 1, "no reconnect after close()");
});

test("after an ack: apiKey refresh, then resubscribes with since, then the queue in order", async (t) => {
  const { h, fake, tick } = setup(t, { apiKey: "KEY", autoConnect: false });
  const sub = h.subscribe("odds");
  h.send({ event_type: "heartbeat", data: { n: 1 } });
  const published = h.publish("odds", "score", { n: 2 });
  h.connect();
  fake.last().ack();
  const sent = fake.last().sent;
  assert.deepEqual(sent.map((m) => m.event_type), ["refresh", "user_subscription", "heartbeat", "publish"]);
  assert.deepEqual(sent[0].data, { api_key: "KEY" });
  assert.equal(typeof sent[0].message_id, "string");
  assert.deepEqual(sent[1].data, { channel: "odds" }, "no since before a position");
  assert.deepEqual(sent[3].data, { channel: "odds", event_type: "score", data: { n: 2 } });
  fake.last().push({ event_type: "refresh", reply_to: sent[0].message_id, data: { api_key: true } });
  fake.last().subscribed("odds", { offset: 7, epoch: "e1" });
  assert.deepEqual(sub.position, { offset: 7, epoch: "e1" });
  const results = [{ channel: "odds", offset: 8, epoch: "e1", recipients: 1 }];
  fake.last().push({ event_type: "publish", reply_to: sent[3].message_id, data: { results } });
  assert.deepEqual(await published, results);

  fake.last().drop();
  tick();
  fake.last().ack();
  const again = fake.last().sent;
  assert.deepEqual(again.map((m) => m.event_type), ["refresh", "user_subscription"]);
  assert.deepEqual(again[1].data, { channel: "odds", since: { offset: 7, epoch: "e1" } });
});

test("a forbidden apiKey refresh is an error event", (t) => {
  const { fake, events } = setup(t, { apiKey: "bad" });
  fake.last().ack();
  const req = fake.last().sent[0];
  fake.last().push({ event_type: "error", reply_to: req.message_id, data: { code: "forbidden", message: "no" } });
  const errors = events.filter(([n]) => n === "error").map(([, e]) => e.code);
  assert.deepEqual(errors, ["forbidden"]);
});

test("duplicates and old offsets never reach the app", (t) => {
  const { h, fake } = setup(t);
  const sub = h.subscribe("odds");
  const seen = [];
  sub.on("message", (m) => seen.push(m.offset));
  fake.last().ack();
  fake.last().subscribed("odds", { offset: 5, epoch: "e1" });
  for (const offset of [6, 6, 5, 7, 3, 9]) {
    fake.last().push({ event_type: "score", channel: "odds", offset, data: {} });
  }
  fake.last().push({ event_type: "join", channel: "odds", data: { user_id: "u" } });
  assert.deepEqual(seen, [6, 7, 9, undefined], "filters may skip offsets; join has none");
  assert.deepEqual(sub.position, { offset: 9, epoch: "e1" });
});

test("recovered:true keeps the position; recovered:false is lost and adopts the reply's", (t) => {
  const { h, fake, events, tick } = setup(t);
  const sub = h.subscribe("odds");
  const subEvents = [];
  sub.on("subscribed", (e) => subEvents.push(["subscribed", e]));
  sub.on("lost", (e) => subEvents.push(["lost", e]));
  fake.last().ack();
  fake.last().subscribed("odds", { offset: 3, epoch: "e1" });
  fake.last().drop();
  tick();
  fake.last().ack();
  fake.last().subscribed("odds", { offset: 10, epoch: "e1", recovered: true });
  assert.deepEqual(sub.position, { offset: 3, epoch: "e1" }, "replayed messages 4..10 follow");
  fake.last().push({ event_type: "score", channel: "odds", offset: 4, data: {} });
  fake.last().drop();
  tick();
  fake.last().ack();
  const req = fake.last().subscribed("odds", { offset: 0, epoch: "e2", recovered: false });
  assert.deepEqual(req.data.since, { offset: 4, epoch: "e1" });
  assert.deepEqual(sub.position, { offset: 0, epoch: "e2" });
  assert.deepEqual(subEvents, [
    ["subscribed", { offset: 3, epoch: "e1" }],
    ["subscribed", { offset: 3, epoch: "e1", recovered: true }],
    ["subscribed", { offset: 0, epoch: "e2", recovered: false }],
    ["lost", { offset: 0, epoch: "e2" }],
  ]);
  assert.deepEqual(events.filter(([n]) => n === "lost").map(([, e]) => e), [{ channel: "odds", offset: 0, epoch: "e2" }]);
});

test("a publish in flight when the connection drops rejects outcome_unknown and is not resent", async (t) => {
  const { h, fake, tick } = setup(t);
  fake.last().ack();
  const p = h.publish("odds", "score", { n: 1 });
  fake.last().drop();
  await assert.rejects(p, { code: "outcome_unknown" });
  tick();
  fake.last().ack();
  assert.deepEqual(fake.last().sent, []);
});

test("the queue is bounded; close() rejects what it holds", async (t) => {
  const { h } = setup(t, { queueLimit: 2, autoConnect: false });
  const a = h.publish("c", "score", {});
  assert.equal(h.send({ event_type: "heartbeat" }), true);
  await assert.rejects(h.publish("c", "score", {}), { code: "queue_full" });
  assert.equal(h.send({ event_type: "heartbeat" }), false);
  h.close();
  await assert.rejects(a, { code: "closed" });
  await assert.rejects(h.publish("c", "score", {}), { code: "closed" });
});

test("a server error reply rejects the publish; subscription errors go to the subscription", async (t) => {
  const { h, fake, events } = setup(t);
  fake.last().ack();
  const p = h.publish("odds", "score", {});
  const sub = h.subscribe("private");
  const subErrors = [];
  sub.on("error", (e) => subErrors.push(e.code));
  const [pub, s] = fake.last().sent;
  fake.last().push({ event_type: "error", reply_to: pub.message_id, data: { code: "forbidden", message: "no" } });
  fake.last().push({ event_type: "error", reply_to: s.message_id, data: { code: "forbidden", message: "no" } });
  await assert.rejects(p, { code: "forbidden", message: "no" });
  assert.deepEqual(subErrors, ["forbidden"]);
  assert.equal(sub.active, false, "a forbidden channel is not retried");
  assert.equal(events.filter(([n]) => n === "error").length, 0);
});

test("routing by event_type; protocol messages stay inside", (t) => {
  const { h, fake, events } = setup(t);
  const odds = [];
  h.on("odds_update", (m) => odds.push(m.data.x));
  fake.last().ack();
  fake.last().push({ event_type: "heartbeat", data: { server_time: "t" } });
  fake.last().push({ event_type: "odds_update", channel: "odds", offset: 1, data: { x: 1 } });
  fake.last().push({ event_type: "notification", data: { message: "hi", level: "info" } });
  fake.last().push({ event_type: "error", data: { code: "rate_limited", message: "slow down" } });
  assert.deepEqual(odds, [1]);
  assert.deepEqual(events.filter(([n]) => n === "message").map(([, m]) => m.event_type), ["odds_update", "notification"]);
  assert.deepEqual(events.filter(([n]) => n === "error").map(([, e]) => e.code), ["rate_limited"]);
});

test("bad server input never throws", (t) => {
  const { h, fake, events } = setup(t);
  h.subscribe("odds");
  fake.last().ack({ heartbeat_interval: "x", expires_in: "soon" });
  for (const bad of ["not json", "[1,2]", "null", "42", '{"data":{}}', '{"event_type":7}']) fake.last().push(bad);
  const req = fake.last().sent[0];
  fake.last().push({ event_type: "user_subscription", reply_to: req.message_id, data: "garbage" });
  fake.last().push({ event_type: "error", data: null });
  fake.last().push({ event_type: "score", channel: "odds", offset: "x", data: 5 });
  assert.equal(h.state, "connected");
  assert.equal(events.filter(([n, e]) => n === "error" && e.code === "invalid_server_message").length, 6);
});

test("heartbeats every heartbeat_interval; silence for heartbeat_timeout reconnects", (t) => {
  const { fake, events, tick } = setup(t);
  fake.last().ack({ heartbeat_interval: 1, heartbeat_timeout: 2.5 });
  tick(1000);
  fake.last().push({ event_type: "heartbeat", data: {} }); // life: the deadline moves to 3.5 s
  tick(2000);
  assert.deepEqual(fake.last().sent, [{ event_type: "heartbeat" }, { event_type: "heartbeat" }, { event_type: "heartbeat" }]);
  assert.equal(fake.sockets.length, 1);
  tick(500);
  assert.equal(fake.sockets[0].closed?.reason, "heartbeat timeout");
  assert.deepEqual(events.find(([n]) => n === "disconnected")[1], { code: 1006, reason: "heartbeat timeout", retryIn: 0 });
  tick();
  assert.equal(fake.sockets.length, 2);
});

test("getToken before a reconnect and before the token expires", async (t) => {
  let n = 0;
  const { fake, tick } = setup(t, { token: "t0", getToken: async () => `t${++n}`, heartbeat: false });
  const settle = () => new Promise((resolve) => setImmediate(resolve)); // lets getToken() resolve
  fake.last().ack({ expires_in: 100 });
  tick(89_000);
  assert.deepEqual(fake.last().sent, [], "not yet: 10 s before expiry");
  tick(1000);
  await settle();
  const refresh = fake.last().sent[0];
  assert.deepEqual({ ...refresh, message_id: undefined }, { event_type: "refresh", message_id: undefined, data: { token: "t1" } });
  fake.last().drop(4401);
  tick();
  await settle();
  assert.equal(fake.last().url.searchParams.get("token"), "t2");
});
