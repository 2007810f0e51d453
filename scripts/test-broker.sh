#!/usr/bin/env bash
# A real Kafka-compatible broker for the tests: nisshi 0.7.0-pre.2 (crates.io, Apache-2.0),
# in-memory storage, on a free loopback port. Installs it when missing (about 16 min on 2 cores).
#
#   scripts/test-broker.sh start   # install if needed, start, print TELLTALE_KAFKA_BROKERS=...
#   scripts/test-broker.sh stop    # stop the broker this script started
#   scripts/test-broker.sh status  # print the address if it is running
#
# State (pid, port, log) lives in target/test-broker/ ($TELLTALE_BROKER_STATE overrides it: a
# second, private broker). A restart with the same state folder reuses the port when it is free.
# NISSHI_ROOT overrides the install root. TELLTALE_BROKER_ADVERTISE=host:port makes the broker
# advertise another address than the one it listens on (a TLS proxy in front of it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${NISSHI_ROOT:-$HOME/.local/nisshi}"
BIN="$ROOT/bin/nisshi"
STATE="${TELLTALE_BROKER_STATE:-target/test-broker}"
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
    free() { python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); print(s.getsockname()[1])' "$1" 2>/dev/null; }
    PORT=""
    if [ -f "$STATE/port" ]; then PORT=$(free "$(cat "$STATE/port")" || true); fi
    if [ -z "$PORT" ]; then PORT=$(free 0); fi
    DIR=$(mktemp -d)   # nisshi reads a .env from its working directory: start it in an empty one
    ADVERTISE="${TELLTALE_BROKER_ADVERTISE:-127.0.0.1:$PORT}"
    ( cd "$DIR" && exec "$BIN" broker \
        --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://$ADVERTISE" \
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
    if running; then
      PID=$(cat "$STATE/pid")
      kill "$PID"
      for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
      rm -f "$STATE/pid"
    fi
    ;;
  status)
    if running; then echo "TELLTALE_KAFKA_BROKERS=127.0.0.1:$(cat "$STATE/port")"; else echo "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
