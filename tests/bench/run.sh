#!/usr/bin/env bash
# The benchmark suite, one command: `tests/bench/run.sh` (full, about 3 minutes)
# or `tests/bench/run.sh --smoke` (seconds per run; .ci/run runs it so the
# suite keeps working). Installs what it needs when missing (nginx, haproxy
# from Debian; oha from the crate registry into target/bench-tools), builds
# the release gateway, starts the real Kafka broker unless one is up, runs
# tests/bench/bench.py, and prints markdown tables (also written to
# target/bench/results.md). Not part of the test command.
#   BENCH_DURATION (15s), BENCH_CONNECTIONS (32), BENCH_EVENT_CONNECTIONS
#   (256), BENCH_RATE (10000), BENCH_RECORDS (300000) tune it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >&2
fi
export PATH="$PATH:/usr/sbin"

OHA_VERSION=1.16.0
tools="$PWD/target/bench-tools"
if ! "$tools/bin/oha" --version 2>/dev/null | grep -q "$OHA_VERSION"; then
  echo "installing oha $OHA_VERSION (load generator) into $tools" >&2
  cargo install oha --version "$OHA_VERSION" --locked --root "$tools" -q
fi
export OHA="$tools/bin/oha"

# The smoke run checks that the suite works, not how fast: the debug build
# the tests already made is enough and saves a release build in CI.
if [[ " $* " == *" --smoke "* ]]; then
  cargo build -p gateway -q
  export GATEWAY_BIN="$PWD/target/debug/gateway"
else
  cargo build --release -p gateway -q
  export GATEWAY_BIN="$PWD/target/release/gateway"
fi

started=0
if ! tests/kafka/broker.sh status >/dev/null 2>&1; then
  tests/kafka/broker.sh start >&2
  started=1
fi
stop_broker() {
  if [ "$started" = 1 ]; then tests/kafka/broker.sh stop >&2 || true; fi
}
trap stop_broker EXIT

export KAFKA_BOOTSTRAP="127.0.0.1:${KAFKA_PORT:-19092}"
export KAFKA_LIBS="${KAFKA_HOME_CACHE:-${HOME:-/tmp}/.cache/gateway-kafka}/${KAFKA_VERSION:-4.4.0}/libs"
python3 tests/bench/bench.py "$@"
