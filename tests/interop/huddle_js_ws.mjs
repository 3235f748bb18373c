#!/usr/bin/env node
// Interop check: the served JavaScript client (/huddle.js) on Node with the `ws` package as its
// WebSocket (PROTOCOL.md §14: "Node ≥ 20, with its built-in WebSocket or ws"; the built-in one
// is covered by tests/js_client.rs).
//
// Usage: node huddle_js_ws.mjs BASE_URL API_KEY
//   1. GET /huddle.js: 200, text/javascript, Access-Control-Allow-Origin *; imported as served
//   2. new Huddle(…, { WebSocket: ws, apiKey }): connected; the key goes in a refresh, not the URL
//   3. subscribe, publish 3 through the client: answered at offsets 1..3, received in order
//   4. huddle:stats (needs the key): a stats push arrives
//   5. close(): state closed
// Every wait has a timeout; a mismatch exits 1 naming the step.

import { createRequire } from 'node:module';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const NAME = `huddle.js/ws-${require('ws/package.json').version}`;
const TIMEOUT_MS = 5000;
const [base, key] = process.argv.slice(2);
let step = 'start';

function fail(message) {
  console.log(`FAIL ${NAME}: step ${step}: ${message}`);
  process.exit(1);
}
function within(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS)),
  ]);
}

try {
  step = '1 GET /huddle.js';
  const r = await within(fetch(`${base}/huddle.js`), 'GET /huddle.js');
  if (r.status !== 200) fail(`status ${r.status}`);
  if (!(r.headers.get('content-type') ?? '').startsWith('text/javascript')) fail(`content-type ${r.headers.get('content-type')}`);
  if (r.headers.get('access-control-allow-origin') !== '*') fail('no Access-Control-Allow-Origin: *');
  const source = await r.text();
  const { Huddle } = await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`);

  step = '2 connect';
  const urls = [];
  class Recording extends WebSocket {
    constructor(url, ...rest) {
      urls.push(String(url));
      super(url, ...rest);
    }
  }
  const wsBase = base.replace(/^http/, 'ws');
  const h = new Huddle(`${wsBase}/ws`, { WebSocket: Recording, apiKey: key });
  await within(new Promise((ok) => h.on('connected', ok)), 'connection_ack');
  if (urls.some((u) => u.includes(key))) fail(`the API key is in a URL: ${urls}`);

  step = '3 subscribe and publish';
  const channel = `interop_js_${process.pid}`;
  const sub = h.subscribe(channel);
  const got = [];
  const three = new Promise((ok) => sub.on('message', (m) => { got.push(m.offset); if (got.length === 3) ok(); }));
  await within(new Promise((ok) => sub.on('subscribed', ok)), 'subscribe reply');
  const results = await within(
    Promise.all([1, 2, 3].map((n) => h.publish(channel, 'tick', { n }))),
    'publish replies',
  );
  const offsets = results.map((rs) => rs[0]?.offset);
  if (JSON.stringify(offsets) !== '[1,2,3]') fail(`publish offsets ${JSON.stringify(offsets)}`);
  await within(three, 'three messages');
  if (JSON.stringify(got) !== '[1,2,3]') fail(`received offsets ${JSON.stringify(got)}`);

  step = '4 huddle:stats';
  const stats = h.subscribe('huddle:stats');
  const push = await within(new Promise((ok, no) => {
    stats.on('message', ok);
    stats.on('error', (e) => no(new Error(`${e.code}: ${e.message}`)));
  }), 'a stats push');
  if (push.event_type !== 'stats' || typeof push.data?.connections !== 'number') fail(`push ${JSON.stringify(push)}`);

  step = '5 close';
  h.close();
  if (h.state !== 'closed') fail(`state ${h.state}`);
  console.log(`PASS ${NAME}: served client, key by refresh, 3 publishes in order, stats push, close`);
  process.exit(0);
} catch (e) {
  fail(e?.message ?? String(e));
}
