#!/usr/bin/env bash
# A soak of the live engine: `telltale run` for a set time at a steady rate, with anomalies and
# dead letters flowing, printing the engine's resident memory every minute.
#
#   scripts/soak.sh [MINUTES] [RATE]     # defaults: 30 minutes, 2000 messages/s
#
# Uses the broker at $TELLTALE_KAFKA_BROKERS, else starts the test broker (scripts/test-broker.sh).
# Needs a release build (`cargo build --release -p telltale`). The input is `telltale gen`
# telemetry (8 models, injected faults) with one line in 500 replaced by garbage, produced by
# `telltale produce --rate`. At the end it prints the RSS samples, their spread after the first
# five minutes (warm-up), and the engine's counters.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-30}"
RATE="${2:-2000}"
BIN=target/release/telltale
[ -x "$BIN" ] || { echo "build first: cargo build --release -p telltale" >&2; exit 2; }
if [ -z "${TELLTALE_KAFKA_BROKERS:-}" ]; then
  eval "export $(scripts/test-broker.sh start | tail -n 1)"
fi
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
LINES=$((MINUTES * 60 * RATE))
POINTS=$((LINES / 56 + 1))
"$BIN" gen --models 8 --points "$POINTS" --out "$WORK/gen" 2>/dev/null
awk 'NR % 500 == 0 { print "not a point " NR; next } { print }' "$WORK/gen/telemetry.jsonl" \
  | head -n "$LINES" > "$WORK/input.jsonl"
ID="soak-$$-$(date +%s)"
cat > "$WORK/soak.toml" <<TOML
[kafka]
brokers = "$TELLTALE_KAFKA_BROKERS"
group_id = "$ID"
topics = ["$ID-in"]
anomaly_topic = "$ID-anomalies"
dead_letter_topic = "$ID-dead-letters"

[http]
listen = "127.0.0.1:0"
TOML
TELLTALE_LOG=info "$BIN" run -c "$WORK/soak.toml" 2>"$WORK/engine.log" &
ENGINE=$!
"$BIN" produce --topic "$ID-in" --brokers "$TELLTALE_KAFKA_BROKERS" --rate "$RATE" \
  "$WORK/input.jsonl" 2>"$WORK/produce.log" &
echo "soak: $MINUTES min at $RATE msg/s ($LINES messages, 1 in 500 garbage), engine pid $ENGINE"
echo "minute rss_mb"
samples=()
for m in $(seq 1 "$MINUTES"); do
  sleep 60
  kill -0 "$ENGINE" 2>/dev/null || { echo "the engine stopped:"; cat "$WORK/engine.log"; exit 1; }
  rss=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$ENGINE/status")
  samples+=("$rss")
  echo "$m $rss"
done
printf '%s\n' "${samples[@]}" | awk -v warm=5 'NR > warm { if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1 }
  END { if (min != "") printf "after warm-up: min %.1f MB, max %.1f MB, spread %.1f %%\n", min, max, 100 * (max - min) / min }'
kill -TERM "$ENGINE"; wait "$ENGINE" || true
grep -E "stopped:" "$WORK/engine.log" || tail -n 5 "$WORK/engine.log"
