#!/usr/bin/env bash
# Autobahn|Testsuite conformance run: wstest's fuzzing client against `huddle serve
# --echo-endpoint`, cases 1.* to 10.* (12.*/13.* need permessage-deflate, not implemented).
# Then check.py grades the report and sets the exit status (wstest itself always exits 0).
#
# Environment (all optional):
#   AUTOBAHN_VENV      virtualenv cache dir      (default ~/.cache/huddle-autobahn-venv)
#   AUTOBAHN_PYTHON27  Python 2.7 interpreter    (default ~/.pyenv/versions/2.7.18/bin/python,
#                                                 then python2.7 / python2 on PATH)
#   AUTOBAHN_OUT       report directory          (default tests/autobahn/reports)
#   AUTOBAHN_CASES     space-separated case globs (default "1.* 2.* ... 10.*"); a narrower
#                      set also needs AUTOBAHN_MIN_CASES (check.py's guard against short runs)
#   AUTOBAHN_TIMEOUT   seconds allowed for wstest (default 900)
#   HUDDLE_BIN         prebuilt server binary    (default: cargo build --release)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${AUTOBAHN_VENV:-$HOME/.cache/huddle-autobahn-venv}
out=${AUTOBAHN_OUT:-$here/reports}
cases=${AUTOBAHN_CASES:-"1.* 2.* 3.* 4.* 5.* 6.* 7.* 8.* 9.* 10.*"}
wstest_timeout=${AUTOBAHN_TIMEOUT:-900}
start_s=$SECONDS

log() { printf '== autobahn: %s\n' "$*"; }
die() { printf 'autobahn: error: %s\n' "$*" >&2; exit 1; }

server_pid=""
wstest_pid=""
cleanup() {
  local status=$?
  if [[ -n "$wstest_pid" ]] && kill -0 "$wstest_pid" 2>/dev/null; then
    kill -TERM "$wstest_pid" 2>/dev/null || true  # `timeout` passes it on to wstest
    wait "$wstest_pid" 2>/dev/null || true
  fi
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- Python 2.7 (wstest runs only on 2.7) -------------------------------------------------
find_python27() {
  local c
  for c in "${AUTOBAHN_PYTHON27:-}" "$HOME/.pyenv/versions/2.7.18/bin/python" python2.7 python2; do
    [[ -n "$c" ]] || continue
    c=$(command -v "$c" 2>/dev/null) || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' 2>/dev/null; then
      echo "$c"
      return 0
    fi
  done
  return 1
}
if ! py27=$(find_python27); then
  cat >&2 <<EOF
autobahn: error: no Python 2.7 interpreter found.
  The Autobahn|Testsuite (wstest) only runs on Python 2.7. Looked for \$AUTOBAHN_PYTHON27,
  $HOME/.pyenv/versions/2.7.18/bin/python, python2.7 and python2 on PATH.
  Install one (e.g. \`pyenv install 2.7.18\`) or point AUTOBAHN_PYTHON27 at it.
EOF
  exit 2
fi
command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for virtualenv and check.py)"

# ---- virtualenv: reused while requirements.txt and the interpreter are unchanged -----------
# Layout: $venv/boot (python3 venv holding virtualenv, which can still create 2.7 envs),
# $venv/py27 (the wstest env), $venv/stamp (hash of what py27 was built from).
setup_venv() {
  local stamp want
  want=$( (cat "$here/requirements.txt"; echo "$py27"; "$py27" -V 2>&1) | sha256sum | cut -c1-64)
  stamp=$(cat "$venv/stamp" 2>/dev/null || true)
  if [[ "$stamp" == "$want" && -x "$venv/py27/bin/wstest" ]]; then
    log "reusing virtualenv $venv"
    return 0
  fi
  log "creating virtualenv $venv (python 2.7: $py27)"
  rm -rf "$venv/boot" "$venv/py27" "$venv/stamp"
  mkdir -p "$venv"
  python3 -m venv "$venv/boot" || die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
  "$venv/boot/bin/python" -m pip install -q 'virtualenv==20.21.1'
  "$venv/boot/bin/python" -m virtualenv -q -p "$py27" "$venv/py27"
  # --no-deps: requirements.txt pins the whole tree; pip check proves it is complete.
  if ! "$venv/py27/bin/python" -m pip install -q --no-deps -r "$here/requirements.txt" \
    >"$venv/pip.log" 2>&1; then
    grep -v 'DEPRECATION: Python 2.7' "$venv/pip.log" >&2 || true
    die "pip install -r tests/autobahn/requirements.txt failed (log: $venv/pip.log)"
  fi
  if ! "$venv/py27/bin/python" -m pip check >"$venv/pip.log" 2>&1; then
    grep -v 'DEPRECATION: Python 2.7' "$venv/pip.log" >&2 || true
    die "pip check failed: requirements.txt is missing or mis-pins a dependency"
  fi
  [[ -x "$venv/py27/bin/wstest" ]] || die "wstest missing after install"
  echo "$want" >"$venv/stamp"
  log "virtualenv ready in $((SECONDS - start_s))s"
}
mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null 2>&1; then
  # Two runs sharing the cache must not build the env at the same time.
  exec 9>"$venv.lock"
  flock 9
  setup_venv
  flock -u 9
else
  setup_venv
fi

# ---- server binary ------------------------------------------------------------------------
if [[ -n "${HUDDLE_BIN:-}" ]]; then
  bin=$HUDDLE_BIN
else
  log "cargo build --release"
  build_s=$SECONDS
  (cd "$root" && cargo build --release --quiet)
  log "build done in $((SECONDS - build_s))s"
  bin=$root/target/release/huddle
fi
[[ -x "$bin" ]] || die "server binary $bin not found"

# ---- start huddle on a free port ----------------------------------------------------------
rm -rf "$out"
mkdir -p "$out"
server_log=$out/server.log
# Port 0: the kernel picks a free port and huddle logs the address it bound.
RUST_LOG=${RUST_LOG:-warn,huddle=info} "$bin" serve \
  --listen 127.0.0.1:0 \
  --echo-endpoint \
  --conn-rate off \
  --max-message-size 16777216 \
  --send-queue-bytes 134217728 \
  --api-key x \
  --shards 2 \
  >"$server_log" 2>&1 &
server_pid=$!
addr=""
for _ in $(seq 100); do
  addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$server_log" 2>/dev/null | head -n1 | cut -d' ' -f3) || true
  [[ -n "$addr" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; die "huddle exited at startup"; }
  sleep 0.1
done
[[ -n "$addr" ]] || { cat "$server_log" >&2; die "huddle did not report its address within 10s"; }
url="ws://$addr/ws/echo"
log "huddle pid $server_pid on $url"

# ---- wstest fuzzing client ----------------------------------------------------------------
spec=$out/fuzzingclient.json
"$venv/boot/bin/python" - "$spec" "$url" "$out/servers" $cases <<'EOF'
import json, sys
spec, url, outdir, cases = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with open(spec, "w") as f:
    json.dump({
        "options": {},
        "outdir": outdir,
        "servers": [{"agent": "huddle", "url": url}],
        "cases": cases,
        "exclude-cases": ["12.*", "13.*"],
        "exclude-agent-cases": {},
    }, f, indent=2)
EOF
log "wstest -m fuzzingclient (cases: $cases)"
wstest_s=$SECONDS
# In the background so that `wait` returns at once on SIGINT/SIGTERM and the trap runs.
(cd "$out" && exec timeout "$wstest_timeout" "$venv/py27/bin/wstest" -m fuzzingclient -s "$spec") \
  >"$out/wstest.log" 2>&1 &
wstest_pid=$!
wstest_rc=0
wait "$wstest_pid" || wstest_rc=$?
wstest_pid=""
log "wstest finished in $((SECONDS - wstest_s))s (log: $out/wstest.log)"
if [[ $wstest_rc -ne 0 ]]; then
  tail -n 30 "$out/wstest.log" >&2
  die "wstest exited with $wstest_rc (124 = timed out after ${wstest_timeout}s)"
fi

# ---- stop the server; it must still be alive (a crash would void the results) -------------
if ! kill -0 "$server_pid" 2>/dev/null; then
  wait "$server_pid" 2>/dev/null && rc=0 || rc=$?
  server_pid=""
  tail -n 30 "$server_log" >&2
  die "huddle died during the run (exit status $rc); see $server_log"
fi
kill -TERM "$server_pid"
for _ in $(seq 100); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$server_pid" 2>/dev/null; then
  log "warning: huddle still running 10s after SIGTERM; killing it"
  kill -KILL "$server_pid" 2>/dev/null || true
fi
wait "$server_pid" 2>/dev/null || true
server_pid=""
if grep -q -i 'panicked' "$server_log"; then
  grep -i -A3 'panicked' "$server_log" >&2
  die "huddle panicked during the run; see $server_log"
fi

# ---- grade --------------------------------------------------------------------------------
set +e
python3 "$here/check.py" ${AUTOBAHN_MIN_CASES:+--min-cases "$AUTOBAHN_MIN_CASES"} "$out/servers/index.json"
check_rc=$?
set -e
log "total $((SECONDS - start_s))s; reports in $out/servers (index.html)"
exit "$check_rc"
