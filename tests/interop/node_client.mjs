#!/usr/bin/env node
// Interop check: huddle against the Node `ws` client.
//
// Usage:
//   node node_client.mjs BASE_URL API_KEY
//   HUDDLE_URL=http://127.0.0.1:8080 HUDDLE_API_KEY=... node node_client.mjs
//
// BASE_URL may be http://host:port or ws://host:port. Same scenario as
// python_client.py (../../../shared/PROTOCOL.md §2-§7):
//   1. /ws/game/7 -> first message connection_ack, subscriptions game_7, odds_7, predictions_7
//   2. user_subscription to `odds` with message_id -> reply_to, status subscribed, offset, epoch
//   3. POST /api/publish odds_update to `odds` -> received on channel `odds`, offset = reply offset + 1
//   4. unknown event_type -> error with code unknown_event; the connection stays usable
//   5. heartbeat h1 -> heartbeat reply with reply_to h1 and server_time
//   6. close 1000 -> close handshake completes, server's close frame carries 1000
// Every wait has a timeout; any mismatch exits 1 naming the step, expected and observed.

import { createRequire } from 'node:module';
import { isDeepStrictEqual } from 'node:util';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const WS_VERSION = require('ws/package.json').version;
const NAME = `node/ws-${WS_VERSION}`;
const TIMEOUT_MS = 5000;
const TIMESTAMP_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const ODDS = {
  game_id: '7',
  sportsbook: 'fanduel',
  home_team: 'KC',
  away_team: 'BUF',
  spread: -3.5,
  moneyline_home: -150,
  moneyline_away: 130,
  over_under: 47.5,
  updated_at: '2026-11-25T18:04:05Z',
};

class Mismatch extends Error {}

const show = (v) => {
  try {
    return typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
};

function check(cond, step, expected, observed) {
  if (!cond) throw new Mismatch(`[${step}] expected ${expected}; observed ${show(observed)}`);
}

function withTimeout(promise, ms, step, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Mismatch(`[${step}] expected ${what} within ${ms}ms; observed a timeout`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// Queue every incoming message from the moment the socket exists, so nothing is missed
// between awaits.
class Inbox {
  constructor(ws) {
    this.items = [];
    this.waiters = [];
    this.closed = null;
    ws.on('message', (data, isBinary) => this.push({ data, isBinary }));
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      for (const w of this.waiters.splice(0)) w.reject(new Mismatch(`[${w.step}] expected a message; observed the connection closed ${show(this.closed)}`));
    });
  }
  push(item) {
    const w = this.waiters.shift();
    if (w) w.resolve(item);
    else this.items.push(item);
  }
  next(step) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    if (this.closed) return Promise.reject(new Mismatch(`[${step}] expected a message; observed the connection closed ${show(this.closed)}`));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject, step }));
  }
}

async function recvJson(inbox, step) {
  const { data, isBinary } = await withTimeout(inbox.next(step), TIMEOUT_MS, step, 'a message');
  check(!isBinary, step, 'a text frame', '<binary frame>');
  const raw = data.toString('utf8');
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    throw new Mismatch(`[${step}] expected JSON; observed ${show(raw)}`);
  }
  check(msg !== null && typeof msg === 'object' && !Array.isArray(msg), step, 'a JSON object', msg);
  const nulls = Object.keys(msg).filter((k) => msg[k] === null);
  check(nulls.length === 0, step, 'no top-level null fields (§3)', msg);
  return msg;
}

function sendJson(ws, obj, step) {
  return withTimeout(
    new Promise((resolve, reject) => ws.send(JSON.stringify(obj), (err) => (err ? reject(err) : resolve()))),
    TIMEOUT_MS,
    step,
    'the send to complete',
  );
}

async function httpPublish(base, key, body) {
  const res = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  return { status: res.status, text: await res.text() };
}

const isU64 = (v) => Number.isInteger(v) && v >= 0;

async function scenario(base, wsBase, key) {
  const url = `${wsBase}/ws/game/7`;
  const ws = new WebSocket(url, { handshakeTimeout: TIMEOUT_MS });
  const inbox = new Inbox(ws);
  try {
    await withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode} on upgrade`)));
      }),
      TIMEOUT_MS + 1000,
      'connect',
      'the upgrade',
    );
  } catch (e) {
    throw new Mismatch(`[connect] expected a WebSocket upgrade at ${url}; observed ${e.message}`);
  }
  // Errors after the upgrade surface through 'close'; keep them from crashing the process.
  let lastError = null;
  ws.on('error', (e) => {
    lastError = e;
  });

  try {
    // 1. connection_ack
    let step = 'connection_ack';
    const ack = await recvJson(inbox, step);
    check(ack.event_type === 'connection_ack', step, 'event_type connection_ack as the first message', ack);
    const data = ack.data ?? {};
    check(
      isDeepStrictEqual([...(data.subscriptions ?? [])].sort(), ['game_7', 'odds_7', 'predictions_7']),
      step,
      'subscriptions [game_7, odds_7, predictions_7]',
      data.subscriptions,
    );
    check(typeof data.connection_id === 'string' && data.connection_id.length > 0, step, 'a connection_id string', data);
    for (const f of ['heartbeat_interval', 'heartbeat_timeout']) {
      check(typeof data[f] === 'number' && data[f] > 0, step, `${f} as a positive number of seconds`, data);
    }
    check(TIMESTAMP_RE.test(String(data.server_time ?? '')), step, 'server_time RFC 3339 UTC with ms', data);
    for (const ev of ['heartbeat', 'odds_update', 'user_subscription', 'error']) {
      check((data.supported_events ?? []).includes(ev), step, `${ev} in supported_events`, data.supported_events);
    }

    // 2. subscribe to odds
    step = 'subscribe';
    await sendJson(ws, { event_type: 'user_subscription', message_id: 'c1', data: { channel: 'odds' } }, step);
    const reply = await recvJson(inbox, step);
    check(reply.event_type === 'user_subscription', step, 'event_type user_subscription', reply);
    check(reply.reply_to === 'c1', step, 'reply_to c1', reply);
    const rdata = reply.data ?? {};
    check(rdata.channel === 'odds', step, 'data.channel odds', reply);
    check(rdata.status === 'subscribed', step, 'data.status subscribed', reply);
    const offset = rdata.offset;
    check(isU64(offset), step, 'data.offset a u64', reply);
    const epoch = rdata.epoch;
    check(typeof epoch === 'string' && epoch.length > 0, step, 'data.epoch a non-empty string', reply);

    // 3. publish over HTTP, receive it
    step = 'publish';
    let pub;
    try {
      pub = await httpPublish(base, key, { channel: 'odds', event_type: 'odds_update', data: ODDS });
    } catch (e) {
      throw new Mismatch(`[${step}] expected an HTTP answer from POST /api/publish; observed ${e.message}`);
    }
    check(pub.status === 200, step, 'HTTP 200 from POST /api/publish', `${pub.status} ${pub.text}`);
    let results;
    try {
      results = JSON.parse(pub.text).results;
    } catch {
      throw new Mismatch(`[${step}] expected {"results":[...]}; observed ${show(pub.text)}`);
    }
    check(Array.isArray(results) && results.length === 1, step, 'exactly one result (channel odds)', results);
    const res = results[0];
    check(res.channel === 'odds', step, 'result channel odds', res);
    check(res.offset === offset + 1, step, `result offset ${offset + 1}`, res);
    check(res.epoch === epoch, step, `result epoch ${epoch} (same as the subscribe reply)`, res);
    check(Number.isInteger(res.recipients) && res.recipients >= 1, step, 'recipients >= 1', res);

    step = 'receive';
    const msg = await recvJson(inbox, step);
    check(msg.event_type === 'odds_update', step, 'event_type odds_update', msg);
    check(msg.channel === 'odds', step, 'channel odds', msg);
    check(msg.offset === offset + 1, step, `offset ${offset + 1} (reply offset + 1)`, msg);
    check(isDeepStrictEqual(msg.data, ODDS), step, `data equal to the published payload ${show(ODDS)}`, msg.data);
    check(typeof msg.message_id === 'string' && msg.message_id.length > 0, step, 'a message_id', msg);
    check(TIMESTAMP_RE.test(String(msg.timestamp ?? '')), step, 'timestamp RFC 3339 UTC with ms', msg);
    check(!('reply_to' in msg), step, 'no reply_to on a channel message', msg);

    // 4. error path: unknown event
    step = 'unknown_event';
    await sendJson(ws, { event_type: 'no_such_event', message_id: 'e1', data: {} }, step);
    const err = await recvJson(inbox, step);
    check(err.event_type === 'error', step, 'event_type error', err);
    check(err.reply_to === 'e1', step, 'reply_to e1', err);
    const edata = err.data ?? {};
    check(edata.code === 'unknown_event', step, 'data.code unknown_event', err);
    check(typeof edata.message === 'string' && edata.message.length > 0, step, 'a non-empty data.message', err);
    check(ws.readyState === WebSocket.OPEN, step, 'the connection still open', ws.readyState);

    // 5. heartbeat (also proves the connection is still usable after the error)
    step = 'heartbeat';
    await sendJson(ws, { event_type: 'heartbeat', message_id: 'h1' }, step);
    const hb = await recvJson(inbox, step);
    check(hb.event_type === 'heartbeat', step, 'event_type heartbeat', hb);
    check(hb.reply_to === 'h1', step, 'reply_to h1', hb);
    check(TIMESTAMP_RE.test(String(hb.data?.server_time ?? '')), step, 'data.server_time', hb);

    // 6. close 1000. ws reports the code of the close frame it received, or 1006 when the
    // connection ended without one; 'close' fires only after the TCP connection is gone.
    step = 'close';
    const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.close(1000, 'bye');
    const { code } = await withTimeout(closed, TIMEOUT_MS, step, 'the close handshake');
    check(code === 1000, step, 'server close frame code 1000 (echo)', { code, lastError: lastError?.message ?? null });
    check(ws.readyState === WebSocket.CLOSED, step, 'readyState CLOSED', ws.readyState);
    check(lastError === null, step, 'no socket error', lastError?.message);
    check(inbox.items.length === 0, step, 'no unexpected messages left unread', inbox.items.map((i) => i.data.toString()));
  } finally {
    if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
  }
}

async function main() {
  let base = (process.argv[2] ?? process.env.HUDDLE_URL ?? '').replace(/\/+$/, '');
  const key = process.argv[3] ?? process.env.HUDDLE_API_KEY ?? '';
  if (!base || !key) {
    console.error(`FAIL ${NAME}: need BASE_URL and API_KEY (argv or HUDDLE_URL/HUDDLE_API_KEY)`);
    return 2;
  }
  if (base.startsWith('ws://')) base = `http://${base.slice(5)}`;
  const wsBase = `ws://${base.replace(/^http:\/\//, '')}`;
  try {
    await withTimeout(scenario(base, wsBase, key), 30000, 'scenario', 'the whole scenario');
  } catch (e) {
    if (e instanceof Mismatch) console.error(`FAIL ${NAME}: ${e.message}`);
    else console.error(`FAIL ${NAME}: unexpected ${e?.name ?? 'error'}: ${e?.message ?? e}`);
    return 1;
  }
  console.log(`PASS ${NAME}`);
  return 0;
}

process.exitCode = await main();
