// The Node host of probe.mjs: one JSON command per stdin line, one JSON report per stdout line.
//
//   node --experimental-websocket tests/js/node_probe.mjs src/http/assets/huddle.js
//
// The argument is a file path (what tests/js_client.rs passes: the same file the server compiles
// in with include_str!, and stack traces point at its lines; the /huddle.js test there checks that
// the served bytes equal it) or an http(s) URL, fetched and imported through a data: URL, for
// trying the file a running server serves (Node 20 cannot import http: URLs).

import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { Probe } from "./probe.mjs";

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

async function load(where) {
  if (/^https?:/.test(where)) {
    const res = await fetch(where);
    if (!res.ok) throw new Error(`GET ${where}: ${res.status}`);
    const code = Buffer.from(await res.text()).toString("base64");
    return import(`data:text/javascript;base64,${code}`);
  }
  return import(pathToFileURL(where).href);
}

const { Huddle } = await load(process.argv[2] ?? "src/http/assets/huddle.js");
const probe = new Probe(Huddle, out);

// Commands run one after another, in the order they came.
let chain = Promise.resolve();
createInterface({ input: process.stdin })
  .on("line", (line) => {
    chain = chain
      .then(() => probe.command(JSON.parse(line)))
      .catch((e) => out({ event: "probe_error", message: String(e?.stack ?? e) }));
  })
  .on("close", () => chain.then(() => { probe.h?.close(); process.exit(0); }));
