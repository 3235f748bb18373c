#!/usr/bin/env bash
# Interop checks: huddle against WebSocket clients nobody on the team wrote.
#
#   tests/interop/run.sh
#
# 1. installs the pinned client libraries: Python `websockets` (requirements.txt, via pip)
#    and Node `ws` (package-lock.json, via `npm ci` into tests/interop/node_modules);
# 2. builds target/release/huddle if it is missing (set HUDDLE_BIN to use another binary);
# 3. starts one server on a free loopback port and waits for its "listening on" line;
# 4. runs python_client.py, then node_client.mjs, against it (one after the other: both
#    publish to the shared `odds` channel and check offset = subscribe offset + 1), then
#    huddle_js_ws.mjs (the served /huddle.js on Node with `ws` as its WebSocket);
# 5. prints one line per client and exits non-zero if either failed.
# The server is stopped on every exit path.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
NODE="${NODE:-node}"
CLIENT_TIMEOUT="${CLIENT_TIMEOUT:-60}" # seconds; each client also bounds itself (5 s per wait, 30 s total)

die() {
  echo "interop: $*" >&2
  exit 1
}

SERVER_PID=""
TMP="$(mktemp -d "${TMPDIR:-/tmp}/huddle-interop.XXXXXX")" || die "mktemp failed"

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 30); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "interop: server did not exit after SIGTERM within 3s; sending SIGKILL" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    wait "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

server_log_tail() {
  echo "---- server stderr (last 30 lines) ----" >&2
  tail -n 30 "$TMP/server.log" >&2 2>/dev/null
  echo "--------------------------------------" >&2
}

# ---- 1. client dependencies ----------------------------------------------------------------
cd "$HERE" || die "cannot cd to $HERE"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
command -v "$NODE" >/dev/null || die "$NODE not found"
command -v npm >/dev/null || die "npm not found"
node_major="$("$NODE" -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] 2>/dev/null || die "Node >= 20 required, found $("$NODE" --version)"

"$PYTHON" -m pip install -q --disable-pip-version-check -r requirements.txt \
  || die "pip install -r tests/interop/requirements.txt failed"
npm ci --no-audit --no-fund || die "npm ci in tests/interop failed"

# ---- 2. server binary ----------------------------------------------------------------------
BIN="${HUDDLE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/huddle}"
if [ ! -x "$BIN" ]; then
  echo "interop: $BIN missing; running cargo build --release" >&2
  (cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
  [ -x "$BIN" ] || die "cargo build --release did not produce $BIN"
fi

# ---- 3. start one server ---------------------------------------------------------------------
KEY="interop-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')"
# Ignore any HUDDLE_* settings from the caller's environment so the run is hermetic.
unset_huddle=()
while IFS= read -r name; do unset_huddle+=(-u "$name"); done < <(env | sed -n 's/^\(HUDDLE_[A-Za-z0-9_]*\)=.*/\1/p')

# stderr goes to a file: the server can never block on a full pipe, and we poll it for the line.
env "${unset_huddle[@]}" RUST_LOG=info "$BIN" serve \
  --listen 127.0.0.1:0 --api-key "$KEY" --conn-rate off --log-format text --shutdown-grace 1s \
  >"$TMP/server.out" 2>"$TMP/server.log" &
SERVER_PID=$!

PORT=""
for _ in $(seq 1 150); do # 15 s
  PORT="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$TMP/server.log" | head -n 1)"
  [ -n "$PORT" ] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID"
    rc=$?
    SERVER_PID=""
    server_log_tail
    die "server exited with status $rc before it was ready"
  fi
  sleep 0.1
done
if [ -z "$PORT" ]; then
  server_log_tail
  die "no 'listening on 127.0.0.1:PORT' line from the server within 15s"
fi
BASE="http://127.0.0.1:$PORT"
echo "interop: huddle ($BIN) listening on $BASE"

# ---- 4. clients --------------------------------------------------------------------------------
failed=0
now() { date +%s.%N; }

run_client() {
  local name="$1"
  shift
  local out rc start end secs line
  start="$(now)"
  if command -v timeout >/dev/null; then
    out="$(timeout --foreground "$CLIENT_TIMEOUT" "$@" "$BASE" "$KEY" 2>&1)"
  else
    out="$("$@" "$BASE" "$KEY" 2>&1)"
  fi
  rc=$?
  end="$(now)"
  secs="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')"
  line="$(printf '%s\n' "$out" | grep -E '^(PASS|FAIL) ' | tail -n 1)"
  if [ "$rc" -eq 0 ] && [ "${line%% *}" = "PASS" ]; then
    echo "$line (${secs}s)"
  else
    if [ "$rc" -eq 124 ]; then
      line="FAIL $name: killed after ${CLIENT_TIMEOUT}s"
    elif [ -z "$line" ] || [ "${line%% *}" = "PASS" ]; then
      line="FAIL $name: exit $rc: $(printf '%s\n' "$out" | tail -n 1)"
    fi
    echo "$line (exit $rc, ${secs}s)"
    if [ "$(printf '%s\n' "$out" | wc -l)" -gt 1 ]; then
      printf '%s\n' "$out" | sed 's/^/    | /' >&2
    fi
    failed=1
  fi
}

run_client python "$PYTHON" "$HERE/python_client.py"
run_client node "$NODE" "$HERE/node_client.mjs"
run_client huddle.js "$NODE" "$HERE/huddle_js_ws.mjs"

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "FAIL server: exited during the run"
  failed=1
fi
if [ "$failed" -ne 0 ]; then
  server_log_tail
  exit 1
fi
exit 0
