#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: one per input decoder) for SECONDS each (default 5),
# starting from its committed seed corpus (fuzz/corpus/<target>, copied: what a run finds stays
# out of the repository). A crash or a hang fails the script; libFuzzer writes the input to
# fuzz/artifacts/<target>/. Needs the nightly toolchain and cargo-fuzz: installed when missing.
#
#   scripts/fuzz.sh          # 10,000 runs each from a fixed seed (part of scripts/test.sh)
#   scripts/fuzz.sh 600      # ten minutes each, random seed, by hand
#   scripts/fuzz.sh 600 otlp # one target
# The short form is deterministic (fixed seed and run count, not a time budget), so a test run
# cannot fail on one machine and pass on another by luck; long runs explore freely.
set -euo pipefail
cd "$(dirname "$0")/.."
EACH="${1:-0}"
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$t/." "$work/"
  if [ "$EACH" = 0 ]; then
    echo "== fuzzing $t: 10,000 runs, seed 1"
    budget=(-runs=10000 -seed=1)
  else
    echo "== fuzzing $t for ${EACH}s"
    budget=(-max_total_time="$EACH")
  fi
  log="$work.log"
  if ! cargo +nightly fuzz run "$t" "$work" -- "${budget[@]}" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz target $t failed (the input is in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$log" | tr '\n' ' '
  echo
  rm -rf "$work"
done
