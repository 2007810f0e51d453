#!/usr/bin/env bash
# The chaos suite's long form: 20 kill/stop/restart cycles over 10^5 input messages, a tenth of
# them poison (the short form runs with the other tests). Starts the test broker unless
# TELLTALE_KAFKA_BROKERS names one. Usage: scripts/chaos.sh [cycles] [messages]
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES="${1:-20}"
MESSAGES="${2:-100000}"
if [ -z "${TELLTALE_KAFKA_BROKERS:-}" ]; then
  eval "export $(scripts/test-broker.sh start | tail -n 1)"
  trap 'scripts/test-broker.sh stop' EXIT
fi
TELLTALE_CHAOS_CYCLES="$CYCLES" TELLTALE_CHAOS_MESSAGES="$MESSAGES" \
  cargo test -p telltale-tests --test kafka -- chaos_loses_no_anomaly --nocapture
