#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) for tests.
#
# Usage: tests/kafka/broker.sh start|stop|status|reset|tool CLASS [ARGS...]
#
#   start   Fetch the broker jars with mvn if they are not cached yet, format
#           the storage on first use, launch the broker in the background and
#           return once it answers Kafka requests on 127.0.0.1:$KAFKA_PORT.
#           Returns at once (exit 0) if the broker already answers. On failure
#           prints the tail of the broker log and exits non-zero.
#   stop    Stop the broker recorded in the pid file (SIGTERM, then SIGKILL
#           after $KAFKA_STOP_TIMEOUT s). Data is kept.
#   status  Print "up" (exit 0) or "down" (exit 1).
#   reset   Stop the broker if it runs and delete its data dir; the next
#           start formats fresh storage (new cluster id).
#   tool    Run a Kafka tool class with the broker's classpath, e.g.
#             broker.sh tool org.apache.kafka.tools.TopicCommand \
#               --bootstrap-server 127.0.0.1:19092 --list
#
# Environment (all optional):
#   KAFKA_PORT             client (PLAINTEXT) port on 127.0.0.1   [19092]
#   KAFKA_CONTROLLER_PORT  KRaft controller port                  [KAFKA_PORT+1]
#   KAFKA_SASL_PORT        SASL_SSL port (PLAIN, SCRAM-SHA-256/512) on 127.0.0.1;
#                          0 = no such listener                   [KAFKA_PORT+2]
#   KAFKA_SASL_USER        the SASL user (PLAIN and SCRAM)        [gateway]
#   KAFKA_SASL_PASSWORD    its password (a test credential)       [gateway-test-secret]
#   KAFKA_VERSION          Kafka version fetched from Maven       [4.4.0]
#   KAFKA_HOME_CACHE       jar cache root; jars go to
#                          $KAFKA_HOME_CACHE/<version>/libs       [$HOME/.cache/gateway-kafka]
#   KAFKA_DATA_DIR         storage, config, pid file, logs        [<repo>/target/kafka-data]
#   KAFKA_HEAP_OPTS        broker JVM heap                        [-Xms256m -Xmx1g]
#   KAFKA_START_TIMEOUT    seconds to wait for readiness          [120]
#   KAFKA_STOP_TIMEOUT     seconds before SIGKILL on stop         [30]
#   JAVA_HOME              Java 17+ to use (else `java` on PATH)
#
# The data dir survives stop/start. The broker log is $KAFKA_DATA_DIR/server.log
# (JVM stdout/stderr in $KAFKA_DATA_DIR/kafka.out).
#
# The SASL_SSL listener's certificates are made with openssl on first start:
# a test CA ($KAFKA_DATA_DIR/tls/ca.pem, what clients trust) and a server
# certificate for 127.0.0.1 and localhost. The SCRAM credentials are added
# once the broker answers (kafka-configs); PLAIN users are in the listener's
# JAAS config.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}"
KAFKA_SASL_USER="${KAFKA_SASL_USER:-gateway}"
KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-gateway-test-secret}"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_HOME_CACHE="${KAFKA_HOME_CACHE:-${HOME:-/tmp}/.cache/gateway-kafka}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$REPO_ROOT/target/kafka-data}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

LIBS_DIR="$KAFKA_HOME_CACHE/$KAFKA_VERSION/libs"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
MARKER="$KAFKA_DATA_DIR/.kafka-test-data"
PID_FILE="$KAFKA_DATA_DIR/broker.pid"
CONFIG="$KAFKA_DATA_DIR/server.properties"
LOG_DIRS="$KAFKA_DATA_DIR/logs"
CLUSTER_ID_FILE="$KAFKA_DATA_DIR/cluster.id"
SERVER_LOG="$KAFKA_DATA_DIR/server.log"
OUT_LOG="$KAFKA_DATA_DIR/kafka.out"
TLS_DIR="$KAFKA_DATA_DIR/tls"
# Keystore password of a throwaway test certificate.
KEYSTORE_PASSWORD="broker-test-keystore"

if [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA="java"; fi

log() { echo "kafka-broker: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- jars ----

libs_present() { [[ -f "$LIBS_DIR/.complete" ]]; }

fetch_libs() {
  libs_present && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found; it is needed once to fetch the Kafka jars"
  mkdir -p "$KAFKA_HOME_CACHE/$KAFKA_VERSION"
  local tmp="$KAFKA_HOME_CACHE/$KAFKA_VERSION/libs.tmp.$$"
  rm -rf "$tmp"
  log "fetching Kafka $KAFKA_VERSION jars into $LIBS_DIR (mvn)"
  if ! mvn -q -B -f "$SCRIPT_DIR/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
    cat "$tmp.log" >&2
    rm -rf "$tmp" "$tmp.log"
    die "mvn could not fetch Kafka $KAFKA_VERSION"
  fi
  rm -f "$tmp.log"
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "mvn ran but no kafka_2.13 jar in $tmp"; }
  touch "$tmp/.complete"
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
}

# Run a Kafka class (tool) with the cached jars; small, fast-starting JVM.
run_tool() {
  local class="$1"; shift
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.properties" \
    -Dlog4j2.shutdownHookEnabled=false \
    -cp "$LIBS_DIR/*" "$class" "$@"
}

# ------------------------------------------------------------- process ----

# Pid recorded in the pid file, if that process is still our broker JVM.
broker_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid cmd
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  else
    cmd="$(ps -o args= -p "$pid" 2>/dev/null || true)"
  fi
  [[ "$cmd" == *java* && "$cmd" == *kafka.Kafka* && "$cmd" == *"$CONFIG"* ]] || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

# A real Kafka round trip: the admin client bootstraps (metadata request)
# and asks the broker for its ApiVersions.
broker_answers() {
  port_open || return 1
  libs_present || return 1
  local out
  out="$(timeout 20 "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
          -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.properties" \
          -cp "$LIBS_DIR/*" org.apache.kafka.tools.BrokerApiVersionsCommand \
          --bootstrap-server "$BOOTSTRAP" --command-config "$SCRIPT_DIR/probe.properties" 2>/dev/null)" || return 1
  [[ "$out" == *"ApiVersions("* || "$out" == *"Metadata("* ]]
}

START_MARK="===== broker.sh: broker launch ====="

# Print what the broker logged since the last launch: its errors, then the tail.
tail_logs() {
  local f from since
  for f in "$SERVER_LOG" "$OUT_LOG"; do
    [[ -s "$f" ]] || continue
    from="$(grep -nF "$START_MARK" "$f" | tail -n 1 | cut -d: -f1 || true)"
    since="$(tail -n +"${from:-1}" "$f")"
    if grep -qE '^\[[^]]*\] (ERROR|FATAL)' <<<"$since"; then
      echo "----- errors in $f -----" >&2
      grep -E '^\[[^]]*\] (ERROR|FATAL)' <<<"$since" | tail -n 15 >&2
    fi
    echo "----- last lines of $f -----" >&2
    tail -n 40 <<<"$since" >&2
  done
}

# ------------------------------------------------------------- storage ----

ensure_data_dir() {
  if [[ -d "$KAFKA_DATA_DIR" && ! -f "$MARKER" && -n "$(ls -A "$KAFKA_DATA_DIR" 2>/dev/null)" ]]; then
    die "$KAFKA_DATA_DIR exists, is not empty and was not made by this script; refusing to use it"
  fi
  mkdir -p "$KAFKA_DATA_DIR"
  touch "$MARKER"
}

# Test CA and server certificate for the SASL_SSL listener (made once).
ensure_tls() {
  [[ "$KAFKA_SASL_PORT" != 0 ]] || return 0
  [[ -f "$TLS_DIR/server.p12" && -f "$TLS_DIR/ca.pem" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl not found; it makes the SASL_SSL listener's test certificates (or set KAFKA_SASL_PORT=0)"
  rm -rf "$TLS_DIR.tmp"
  mkdir -p "$TLS_DIR.tmp"
  (
    cd "$TLS_DIR.tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=gateway test CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem
    openssl pkcs12 -export -in server.pem -inkey server.key -name broker \
      -passout "pass:$KEYSTORE_PASSWORD" -out server.p12
  ) >"$KAFKA_DATA_DIR/tls.out" 2>&1 || { cat "$KAFKA_DATA_DIR/tls.out" >&2; die "could not make the test certificates"; }
  rm -rf "$TLS_DIR"
  mv "$TLS_DIR.tmp" "$TLS_DIR"
}

write_config() {
  local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ "$KAFKA_SASL_PORT" != 0 ]]; then
    listeners="$listeners,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT"
    protocols="$protocols,SASL_SSL:SASL_SSL"
  fi
  cat >"$CONFIG.tmp" <<EOF
# Generated by tests/kafka/broker.sh -- single-node KRaft dev broker.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$listeners
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$protocols
log.dirs=$LOG_DIRS
# A single node cannot replicate the internal topics more than once.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# As in Kafka's shipped dev config: no 3 s wait before the first group rebalance.
group.initial.rebalance.delay.ms=0
# Everything else (auto.create.topics.enable=true, num.partitions=1, ...) is Kafka's default.
EOF
  if [[ "$KAFKA_SASL_PORT" != 0 ]]; then
    cat >>"$CONFIG.tmp" <<EOF
# SASL_SSL, as on a managed cluster: TLS with the test CA's certificate, and
# SASL PLAIN, SCRAM (credentials added after start) or OAUTHBEARER.
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER
# OAUTHBEARER with Kafka's unsecured JWT validator: development tokens only.
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$KAFKA_SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$KEYSTORE_PASSWORD
EOF
  fi
  mv "$CONFIG.tmp" "$CONFIG"
}

# SCRAM credentials live in the cluster metadata: add them once per data dir.
ensure_scram() {
  [[ "$KAFKA_SASL_PORT" != 0 ]] || return 0
  local marker="$KAFKA_DATA_DIR/.scram-$KAFKA_SASL_USER"
  [[ -f "$marker" ]] && return 0
  local mechanism
  # One mechanism per request: the admin API refuses two changes of one user.
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
    run_tool org.apache.kafka.tools.ConfigCommand --bootstrap-server "$BOOTSTRAP" \
      --command-config "$SCRIPT_DIR/probe.properties" --alter --entity-type users \
      --entity-name "$KAFKA_SASL_USER" --add-config "$mechanism=[password=$KAFKA_SASL_PASSWORD]" \
      >"$KAFKA_DATA_DIR/scram.out" 2>&1 \
      || { cat "$KAFKA_DATA_DIR/scram.out" >&2; die "could not add the $mechanism credentials"; }
  done
  touch "$marker"
}

# The controller endpoint is baked into the KRaft voter set at format time,
# so a data dir formatted for other ports must be reset first.
check_ports() {
  local was; was="$(cat "$KAFKA_DATA_DIR/ports" 2>/dev/null || true)"
  [[ -z "$was" || "$was" == "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ]] \
    || die "$KAFKA_DATA_DIR belongs to a broker on ports '$was', not '$KAFKA_PORT $KAFKA_CONTROLLER_PORT'; stop/reset it, or use another KAFKA_DATA_DIR"
}

# Format the storage once (cluster id kept in $CLUSTER_ID_FILE).
ensure_formatted() {
  local ports="$KAFKA_PORT $KAFKA_CONTROLLER_PORT"
  if [[ -f "$LOG_DIRS/meta.properties" ]]; then
    [[ -f "$CONFIG" ]] || write_config
    return 0
  fi
  if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
    run_tool kafka.tools.StorageTool random-uuid | tail -n 1 | tr -d '[:space:]' >"$CLUSTER_ID_FILE.tmp"
    [[ -s "$CLUSTER_ID_FILE.tmp" ]] || die "could not generate a cluster id"
    mv "$CLUSTER_ID_FILE.tmp" "$CLUSTER_ID_FILE"
  fi
  write_config
  rm -rf "$LOG_DIRS"
  log "formatting storage in $LOG_DIRS (cluster id $(cat "$CLUSTER_ID_FILE"))"
  run_tool kafka.tools.StorageTool format --standalone \
    -t "$(cat "$CLUSTER_ID_FILE")" -c "$CONFIG" >"$KAFKA_DATA_DIR/format.out" 2>&1 \
    || { cat "$KAFKA_DATA_DIR/format.out" >&2; die "storage format failed"; }
  echo "$ports" >"$KAFKA_DATA_DIR/ports"
}

# ------------------------------------------------------------ commands ----

wait_ready() {
  local pid="$1" launched="$2" deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      log "broker process $pid exited during startup"
      tail_logs
      return 1
    fi
    if broker_answers; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      log "broker (pid $pid) did not answer on $BOOTSTRAP within ${KAFKA_START_TIMEOUT}s"
      tail_logs
      if [[ "$launched" == 1 ]]; then
        log "stopping it"
        do_stop >/dev/null 2>&1 || true
      fi
      return 1
    fi
    sleep 0.5
  done
}

do_start() {
  if broker_answers; then
    log "already up on $BOOTSTRAP"
    ensure_scram
    return 0
  fi
  fetch_libs
  ensure_data_dir
  check_ports
  local pid launched=0
  if pid="$(broker_pid)"; then
    log "broker (pid $pid) is running but not answering yet; waiting"
  else
    rm -f "$PID_FILE"
    if port_open; then
      die "port $KAFKA_PORT is in use by something that is not this script's Kafka broker"
    fi
    ensure_tls
    ensure_formatted
    # Regenerated every start: the listeners follow KAFKA_SASL_PORT.
    write_config
    log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller port $KAFKA_CONTROLLER_PORT)"
    echo "[$(date '+%F %T')] $START_MARK" | tee -a "$SERVER_LOG" >>"$OUT_LOG"
    # fd 9 (the lock) is closed for the broker so it does not hold the lock.
    # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is a list of JVM flags
    nohup "$JAVA" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true \
      -Dkafka.logs.dir="$KAFKA_DATA_DIR" \
      -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.properties" \
      -Dlog4j2.shutdownHookEnabled=false \
      -cp "$LIBS_DIR/*" kafka.Kafka "$CONFIG" \
      >>"$OUT_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    launched=1
    echo "$pid" >"$PID_FILE"
  fi
  local t0=$SECONDS
  wait_ready "$pid" "$launched" || die "Kafka broker failed to start (data dir $KAFKA_DATA_DIR)"
  ensure_scram
  log "up on $BOOTSTRAP (pid $pid, ready after $((SECONDS - t0))s)"
}

do_stop() {
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  log "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "still running after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  log "stopped"
}

do_status() {
  if broker_answers; then
    echo "up ($BOOTSTRAP)"
    return 0
  fi
  local pid
  if pid="$(broker_pid)"; then
    echo "down (pid $pid running but not answering on $BOOTSTRAP)"
  else
    echo "down"
  fi
  return 1
}

do_reset() {
  do_stop
  if [[ -d "$KAFKA_DATA_DIR" ]]; then
    [[ -f "$MARKER" ]] || die "$KAFKA_DATA_DIR was not made by this script; not deleting it"
    rm -rf "$KAFKA_DATA_DIR"
    log "deleted $KAFKA_DATA_DIR"
  fi
}

# Serialize start/stop/reset on one data dir (parallel test runs).
with_lock() {
  if command -v flock >/dev/null 2>&1; then
    mkdir -p "$(dirname "$KAFKA_DATA_DIR")"
    exec 9>"$KAFKA_DATA_DIR.lock"
    flock -w $((KAFKA_START_TIMEOUT + KAFKA_STOP_TIMEOUT + 600)) 9 || die "could not lock $KAFKA_DATA_DIR.lock"
  fi
  "$@"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  start) with_lock do_start ;;
  stop) with_lock do_stop ;;
  status) do_status ;;
  reset) with_lock do_reset ;;
  tool)
    [[ $# -ge 1 ]] || die "usage: $0 tool CLASS [ARGS...]"
    fetch_libs
    run_tool "$@"
    ;;
  *)
    echo "usage: $0 start|stop|status|reset|tool CLASS [ARGS...]" >&2
    exit 2
    ;;
esac
