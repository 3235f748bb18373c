#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS seconds each (default 20), one at a time.
#
#   fuzz/ci.sh 20
#
# Installs cargo-fuzz if it is missing, builds all targets once, then runs each target on a
# scratch copy of its corpus (fuzz/corpus/<target> is read, never written: its seeds and
# regression inputs run first). Prints one summary line per target and exits non-zero if any
# target crashed, timed out (-timeout=1) or ran out of memory (-rss_limit_mb=512). A failing
# input is saved as fuzz/artifacts/<target>/crash-… (or timeout-…, oom-…); see fuzz/README.md.
#
# Only the stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly-only
# flags (-Zsanitizer=address) it needs.
set -uo pipefail

SECONDS_PER_TARGET="${1:-20}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
  echo "usage: $0 SECONDS" >&2
  exit 2
fi

FUZZ_DIR="$(cd "$(dirname "$0")" && pwd)"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FUZZ_DIR/target}"
cd "$FUZZ_DIR"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked || exit 1
fi

TARGETS=$(cargo fuzz list) || exit 1
echo "== building $(echo $TARGETS | wc -w) targets"
build_start=$(date +%s)
cargo fuzz build || { echo "build failed" >&2; exit 1; }
echo "== built in $(( $(date +%s) - build_start )) s"

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR="$CARGO_TARGET_DIR/$TRIPLE/release"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

failed=0
summary=()
for t in $TARGETS; do
  mkdir -p "$SCRATCH/$t" "$FUZZ_DIR/artifacts/$t"
  log="$SCRATCH/$t.log"
  start=$(date +%s)
  # Run from the scratch dir so nothing libFuzzer writes lands in the repository.
  (cd "$SCRATCH" && "$BIN_DIR/$t" \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=1 -rss_limit_mb=512 \
      -print_final_stats=1 \
      -artifact_prefix="$FUZZ_DIR/artifacts/$t/" \
      "$SCRATCH/$t" "$FUZZ_DIR/corpus/$t") >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  if [ "$rc" -eq 0 ]; then
    outcome="ok"
  else
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if grep -aq "ERROR: libFuzzer: timeout" "$log"; then kind="TIMEOUT"
    elif grep -aq "out-of-memory" "$log"; then kind="OOM"
    else kind="CRASH"
    fi
    outcome="$kind (exit $rc) ${artifact:-no artifact}"
    echo "---- $t failed; last lines of its log:"
    grep -a -E "panicked at|ERROR: libFuzzer" -A8 "$log" | head -40
    echo "---- reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t ${artifact:-<artifact>}"
  fi
  line=$(printf '%-26s %12s execs in %4ss  %s' "$t" "${execs:-?}" "$secs" "$outcome")
  summary+=("$line")
  echo "$line"
done

echo "== summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "FAILED: at least one target found a failing input" >&2
  exit 1
fi
echo "all targets ok"
