#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, starts it, runs every test.
#   - Chromium (Debian package) for the report rendering test;
#   - kcat (Debian package), the outside Kafka client of the broker tests;
#   - stunnel4 and openssl (Debian packages): TLS in front of a test broker;
#   - prometheus (Debian package) for promtool, which checks the metrics exposition;
#   - prometheus-alertmanager (Debian package): the remediator's alerts go to a real one;
#   - python3-venv (Debian package) and two PyPI packages in target/test-venv: real outside
#     writers and readers of line protocol and CloudEvents;
#   - nightly Rust and cargo-fuzz for the fuzz targets (scripts/fuzz.sh);
#   - a Kafka-compatible broker (nisshi, scripts/test-broker.sh) on a free loopback port, stopped
#     again at the end unless it was already running.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v stunnel4 >/dev/null 2>&1 || missing+=(stunnel4)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# promtool only: the prometheus package's recommendations (exporters) are not needed.
bare=()
command -v promtool >/dev/null 2>&1 || bare+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || bare+=(prometheus-alertmanager)
if [ $((${#missing[@]} + ${#bare[@]})) -gt 0 ]; then
  echo "== installing ${missing[*]} ${bare[*]} (Debian packages) for the tests"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ${#bare[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${bare[@]}" >/dev/null
  fi
fi

# Python peers (PyPI, pinned here and in tests/common.rs): the InfluxDB client's line protocol
# serializer, the CloudEvents SDK and the OpenTelemetry SDK, its OTLP/HTTP exporter and its
# protobuf messages, in a virtual environment of the tests' own.
PEERS="influxdb-client==1.50.0 cloudevents==2.2.0 opentelemetry-sdk==1.45.0 opentelemetry-exporter-otlp-proto-http==1.45.0 opentelemetry-proto==1.45.0"
if [ "$(cat target/test-venv/.peers 2>/dev/null)" != "$PEERS" ]; then
  echo "== installing the Python test peers into target/test-venv"
  python3 -m venv target/test-venv
  # shellcheck disable=SC2086
  target/test-venv/bin/python3 -m pip install -q $PEERS
  printf '%s' "$PEERS" > target/test-venv/.peers
fi

if [ -z "${TELLTALE_KAFKA_BROKERS:-}" ]; then
  already=0
  scripts/test-broker.sh status >/dev/null 2>&1 && already=1
  echo "== starting the test broker"
  eval "export $(scripts/test-broker.sh start | tail -n 1)"
  echo "   TELLTALE_KAFKA_BROKERS=$TELLTALE_KAFKA_BROKERS"
  if [ "$already" = 0 ]; then trap 'scripts/test-broker.sh stop' EXIT; fi
fi

cargo test --workspace --locked "$@"

# Every input decoder under libFuzzer: 10,000 runs from its committed seed corpus, fixed seed.
scripts/fuzz.sh
