#!/usr/bin/env bash
# The project's test command: start the real Kafka broker (tests/kafka/broker.sh),
# run every test of the workspace against it, stop the broker if this script
# started it. Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=0
if ! tests/kafka/broker.sh status >/dev/null 2>&1; then
  tests/kafka/broker.sh start
  started=1
fi
stop_broker() {
  if [ "$started" = 1 ]; then tests/kafka/broker.sh stop || true; fi
}
trap stop_broker EXIT

export KAFKA_BOOTSTRAP="127.0.0.1:${KAFKA_PORT:-19092}"
# The broker's SASL_SSL listener and the test CA that signed its certificate
# (tests/kafka/broker.sh makes both).
export KAFKA_SASL_BOOTSTRAP="127.0.0.1:${KAFKA_SASL_PORT:-$((${KAFKA_PORT:-19092} + 2))}"
export KAFKA_TLS_CA="${KAFKA_DATA_DIR:-$PWD/target/kafka-data}/tls/ca.pem"
cargo test --workspace "$@"
