#!/usr/bin/env bash
# telltale vs River 0.26.1 on the same 1 M-point stream (scripts/compare-river.py), one command:
# creates target/river-venv with river 0.26.1 (pip) when missing, builds the release
# river-compare binary, runs both sides and prints points/s and the ratio.
#   scripts/compare-river.sh [--n 1000000] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/river-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import river' 2>/dev/null; then
  echo "== creating $VENV with river 0.26.1" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q river==0.26.1
fi
cargo build --release -q -p telltale-benches --bin river-compare
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$VENV/bin/python" scripts/compare-river.py --river-compare "$TARGET/release/river-compare" "$@"
