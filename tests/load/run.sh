#!/usr/bin/env bash
# First load numbers: passthrough and async on the real broker, plus the
# legacy service called directly for reference, and passthrough with every
# request shadowed to the sample orders-v2 candidate (which runs in the same
# process, so it also competes for the same cores).
# Loopback only, bounded runs.
#
#   tests/load/run.sh            # DURATION=10s CONNECTIONS=32 THREADS=2
#
# Needs wrk (Debian package `wrk`). Starts the broker if it is not up (and
# stops it afterwards), runs `gateway demo --kafka … --quiet` from a release
# build, and prints wrk's summary for each scenario.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
PORT=${KAFKA_PORT:-19092}

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -p gateway -q

started=0
if ! tests/kafka/broker.sh status >/dev/null 2>&1; then tests/kafka/broker.sh start; started=1; fi
log=$(mktemp)
gw=""
stop_demo() {
  if [ -n "$gw" ]; then kill "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; gw=""; fi
}
cleanup() {
  stop_demo
  if [ "$started" = 1 ]; then tests/kafka/broker.sh stop; fi
  rm -f "$log"
}
trap cleanup EXIT

# start_demo CONFIG: the demo on CONFIG, waiting until it is ready.
start_demo() {
  # No access log: it would measure the terminal.
  RUST_LOG="${RUST_LOG:-warn}" target/release/gateway demo --config "$1" --kafka "127.0.0.1:$PORT" --quiet >"$log" 2>&1 &
  gw=$!
  for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:9080/readyz >/dev/null && return 0
    kill -0 "$gw" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.1
  done
  echo "gateway not ready" >&2; cat "$log"; exit 1
}

run() {
  echo "== $1"
  shift
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" | grep -E "Requests/sec|Latency|50%|99%|Non-2xx|Socket errors"
}

# The repository's routes without shadow copies, so passthrough is measured
# alone (a shadowed route calls the legacy service up to three times).
plain=target/load-routes.toml
sed -e '/^shadow = /d' -e 's|^dir = "schemas"|dir = "../schemas"|' routes.toml >"$plain"
# The same with get-order shadowed (without noise calls) to orders-v2.
shadowed=target/load-routes-shadow.toml
sed -e 's|^shadow = .*|shadow = { upstream = "orders-v2" }|' -e 's|^dir = "schemas"|dir = "../schemas"|' \
    routes.toml >"$shadowed"

start_demo "$plain"
run "legacy service directly: GET /orders/42" http://127.0.0.1:7001/orders/42
run "passthrough via gateway: GET /orders/42" http://127.0.0.1:8080/orders/42
run "async via gateway (real broker, acks=all): POST /orders" -s tests/load/post_order.lua http://127.0.0.1:8080
echo "== gateway counters"
curl -s http://127.0.0.1:9080/metrics | grep -E '^gateway_(requests_total|publish_failures_total|events_published_total)' || true
stop_demo

start_demo "$shadowed"
run "passthrough with a shadow copy of every request: GET /orders/42" http://127.0.0.1:8080/orders/42
echo "== shadow counters"
curl -s http://127.0.0.1:9080/metrics | grep -E '^gateway_shadow_total' || true
