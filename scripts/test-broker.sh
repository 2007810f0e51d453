#!/usr/bin/env bash
# A real Kafka-compatible broker for the tests: nisshi 0.7.0-pre.2 (crates.io, Apache-2.0),
# in-memory storage, on a free loopback port. Installs it when missing (about 16 min on 2 cores).
#
#   scripts/test-broker.sh start   # install if needed, start, print TELLTALE_KAFKA_BROKERS=...
#   scripts/test-broker.sh stop    # stop the broker this script started
#   scripts/test-broker.sh status  # print the address if it is running
#
# State (pid, port, log) lives in target/test-broker/. NISSHI_ROOT overrides the install root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${NISSHI_ROOT:-$HOME/.local/nisshi}"
BIN="$ROOT/bin/nisshi"
STATE="target/test-broker"
mkdir -p "$STATE"

running() { [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; }

case "${1:-start}" in
  start)
    if running; then
      echo "TELLTALE_KAFKA_BROKERS=127.0.0.1:$(cat "$STATE/port")"
      exit 0
    fi
    if [ ! -x "$BIN" ]; then
      echo "== installing nisshi 0.7.0-pre.2 into $ROOT (one time, ~16 min on 2 cores)" >&2
      cargo install nisshi --version 0.7.0-pre.2 --locked --no-default-features \
        --features dynostore --root "$ROOT" >&2
    fi
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    DIR=$(mktemp -d)   # nisshi reads a .env from its working directory: start it in an empty one
    ( cd "$DIR" && exec "$BIN" broker \
        --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine memory://nisshi/ ) >"$STATE/broker.log" 2>&1 &
    echo $! > "$STATE/pid"
    echo "$PORT" > "$STATE/port"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo "TELLTALE_KAFKA_BROKERS=127.0.0.1:$PORT"
        exit 0
      fi
      sleep 0.1
    done
    echo "broker did not start; log:" >&2
    cat "$STATE/broker.log" >&2
    exit 1
    ;;
  stop)
    if running; then kill "$(cat "$STATE/pid")" && rm -f "$STATE/pid"; fi
    ;;
  status)
    if running; then echo "TELLTALE_KAFKA_BROKERS=127.0.0.1:$(cat "$STATE/port")"; else echo "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
