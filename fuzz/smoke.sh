#!/usr/bin/env bash
# CI's fuzz smoke: builds every fuzz target and runs each for FUZZ_SECONDS (default 15)
# from its seed corpus (corpus/<target>/, read only; what it grows goes to a temporary
# directory). Prints libFuzzer's summary lines per target; exits non-zero on any crash,
# hang (> 10 s for one input) or OOM (> 2 GiB), with the log's tail and the input.
#
# libFuzzer's build flags are nightly-only: RUSTC_BOOTSTRAP=1 unlocks them on the stable
# toolchain for this crate alone (the workspace stays plain stable). No sanitizer: the
# parsers are safe Rust, and a panic, an overflow (debug assertions are on), a hang or
# an OOM is what a finding is.
#
# The build is unoptimized (--dev): 2 minutes instead of 7.5 on a 2-core machine, for
# 3x to 25x fewer executions a second. Debug assertions and overflow checks are on
# either way. FUZZ_RELEASE=1 builds optimized, as the long runs in docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")"

secs=${FUZZ_SECONDS:-15}
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

profile=(--dev)
[ "${FUZZ_RELEASE:-0}" = 1 ] && profile=(--release)
start=$SECONDS
echo "== cargo fuzz build ${profile[*]} (no sanitizer)"
cargo fuzz build "${profile[@]}" --sanitizer none
echo "   built in $((SECONDS - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in $(cargo fuzz list); do
  mkdir -p "$work/$t" "$work/artifacts/$t"
  echo "== fuzz $t for ${secs} s"
  if cargo fuzz run "${profile[@]}" --sanitizer none "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$t/" >"$work/$t.log" 2>&1; then
    grep -E '^(INFO: seed corpus|#[0-9]+\s+DONE|Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' \
      "$work/$t.log" || tail -n 5 "$work/$t.log"
  else
    echo "!! $t: libFuzzer found a problem"
    tail -n 60 "$work/$t.log"
    for a in "$work/artifacts/$t"/*; do
      [ -e "$a" ] || continue
      echo "!! input $(basename "$a") (base64): $(base64 -w0 "$a" | head -c 4000)"
    done
    failed+=("$t")
  fi
done
echo "== fuzz smoke: $((SECONDS - start)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz smoke: every target ran ${secs} s without a finding"
