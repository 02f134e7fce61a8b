#!/usr/bin/env python3
"""Side-by-side benchmarks, all in one run on one machine (driven by run.sh).

Passthrough: one small, fast upstream (nginx answering 200 "ok"), loaded by
oha directly and through nginx (2 workers, keep-alive upstream), haproxy
(2 threads, connection reuse) and the gateway, at a fixed concurrency and
at a fixed request rate. Events: dual-write and async routes of the gateway
with 1 KB JSON bodies against the real broker, and Kafka's own
ProducerPerformance (acks=all, idempotence) as the ceiling.

Prints markdown tables and writes them to target/bench/results.md.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = "--smoke" in sys.argv
DURATION = os.environ.get("BENCH_DURATION", "2s" if SMOKE else "15s")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
# Publishing is bound by the broker round trip, not CPU: more requests in
# flight, as ProducerPerformance has.
EVENT_CONNECTIONS = int(os.environ.get("BENCH_EVENT_CONNECTIONS", "256"))
RATE = int(os.environ.get("BENCH_RATE", "2000" if SMOKE else "10000"))
RECORDS = int(os.environ.get("BENCH_RECORDS", "20000" if SMOKE else "300000"))
OHA = os.environ.get("OHA", "oha")
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:19092")
KAFKA_LIBS = os.environ["KAFKA_LIBS"]
GATEWAY = os.environ.get("GATEWAY_BIN", os.path.join(ROOT, "target", "release", "gateway"))
PORTS = {"upstream": 18081, "nginx": 18082, "haproxy": 18083, "gateway": 18084, "admin": 18094}
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORK = tempfile.mkdtemp(prefix="bench-")
procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def start(name, argv, **kw):
    out = open(os.path.join(WORK, name + ".log"), "w")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    procs.append(p)
    return p


def wait_http(url, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer at {url}; logs in {WORK}")


def tree(pid):
    """pid and all its descendants (nginx master and workers)."""
    kids = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK_TCK


def peak_rss_mb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def oha(url, extra):
    argv = [OHA, "--no-tui", "--output-format", "json", "-z", DURATION, *extra, url]
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def measure(label, url, proxy_pid, extra):
    pids = tree(proxy_pid) if proxy_pid else []
    before = cpu_seconds(pids)
    result = oha(url, extra)
    used = cpu_seconds(pids) - before
    summary = result["summary"]
    ok = sum(v for k, v in result.get("statusCodeDistribution", {}).items() if k.startswith("2"))
    total = sum(result.get("statusCodeDistribution", {}).values())
    pct = result["latencyPercentiles"]
    row = {
        "label": label,
        "rps": summary["requestsPerSec"],
        "p50": pct["p50"] * 1000,
        "p99": pct["p99"] * 1000,
        "p999": pct["p99.9"] * 1000,
        "ok": ok,
        # Requests cut off by the end of the run are not errors.
        "errors": total - ok + sum(v for k, v in result.get("errorDistribution", {}).items()
                                   if "deadline" not in k),
        "cpu_per_1k": (used / ok * 1000) if (proxy_pid and ok) else None,
        "rss": peak_rss_mb(pids) if proxy_pid else None,
    }
    log(f"  {label}: {row['rps']:.0f} req/s, p50 {row['p50']:.3f} ms, p99 {row['p99']:.3f} ms, errors {row['errors']}")
    return row


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"


def table(rows, title):
    direct = rows[0]
    nginx = next((r for r in rows if r["label"] == "nginx"), None)
    lines = [
        f"### {title}",
        "",
        "| path | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU s / 1k req | peak RSS MB | req/s vs direct | req/s vs nginx | p50 added vs direct (µs) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        added = None if r is direct else (r["p50"] - direct["p50"]) * 1000
        lines.append(
            f"| {r['label']} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['p999']:.3f} | {r['errors']} "
            f"| {fmt(r['cpu_per_1k'], 4)} | {fmt(r['rss'], 1)} | {ratio(r['rps'], direct['rps'])} "
            f"| {ratio(r['rps'], nginx['rps']) if nginx else '-'} | {fmt(added, 0)} |"
        )
    return "\n".join(lines)


def configs():
    up = PORTS["upstream"]
    with open(os.path.join(WORK, "upstream.conf"), "w") as f:
        f.write(f"""
worker_processes 1; daemon off; pid {WORK}/upstream.pid; error_log {WORK}/upstream.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {WORK}/u-body; proxy_temp_path {WORK}/u-proxy; fastcgi_temp_path {WORK}/u-fcgi;
  uwsgi_temp_path {WORK}/u-uwsgi; scgi_temp_path {WORK}/u-scgi;
  server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok\\n"; }} }} }}
""")
    with open(os.path.join(WORK, "nginx.conf"), "w") as f:
        f.write(f"""
worker_processes 2; daemon off; pid {WORK}/nginx.pid; error_log {WORK}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {WORK}/n-body; proxy_temp_path {WORK}/n-proxy; fastcgi_temp_path {WORK}/n-fcgi;
  uwsgi_temp_path {WORK}/n-uwsgi; scgi_temp_path {WORK}/n-scgi;
  upstream legacy {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{PORTS['nginx']};
    location / {{ proxy_pass http://legacy; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr; }} }} }}
""")
    with open(os.path.join(WORK, "haproxy.cfg"), "w") as f:
        f.write(f"""
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  default_backend legacy
backend legacy
  server up 127.0.0.1:{up}
""")
    body = json.dumps({
        "orderId": "o-1", "customerId": "c-1", "currency": "EUR", "totalCents": 1,
        "items": [{"sku": f"SKU-{i:06d}", "quantity": i + 1, "unitPriceCents": 1999} for i in range(17)],
    })
    with open(os.path.join(WORK, "body.json"), "w") as f:
        f.write(body)
    with open(os.path.join(WORK, "routes.toml"), "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{PORTS['gateway']}"
admin = "127.0.0.1:{PORTS['admin']}"
watch_config = false

[kafka]
bootstrap = "{BOOTSTRAP}"
publish_timeout_ms = 10000
control_topic = "bench.control"
audit_topic = "bench.audit"
operations_topic = "bench.operations"
canary_figures_topic = "bench.canary-figures"
[kafka.properties]
"linger.ms" = "5"

[schemas]
dir = "{ROOT}/schemas"

[spool]
dir = "{WORK}/spool"

[upstreams.legacy]
url = "http://127.0.0.1:{up}"

[[routes]]
name = "hello"
method = "GET"
path = "/hello"
upstream = "legacy"
mode = "passthrough"

[[routes]]
name = "dual"
method = "POST"
path = "/dual"
upstream = "legacy"
mode = "dual-write"
topic = "bench.dual"
schema = "com.shop.OrderCreated"
key = "/customerId"

[[routes]]
name = "accept"
method = "POST"
path = "/accept"
upstream = "legacy"
mode = "async"
topic = "bench.async"
schema = "com.shop.OrderCreated"
key = "/customerId"
""")
    return len(body)


def producer_performance():
    topic = f"bench.ppf.{int(time.time())}"
    argv = [
        "java", "-cp", f"{KAFKA_LIBS}/*", "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic, "--num-records", str(RECORDS), "--record-size", "1024", "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={BOOTSTRAP}", "acks=all", "enable.idempotence=true", "linger.ms=5",
    ]
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    last = [line for line in r.stdout.splitlines() if "records sent" in line][-1]
    # "N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency, p50, p95, p99, p99.9"
    parts = [p.strip() for p in last.split(",")]
    rps = float(parts[1].split()[0])
    avg = float(parts[3].split()[0])
    p50 = float(parts[4].split()[0])
    p99 = float(parts[6].split()[0])
    log(f"  ProducerPerformance: {rps:.0f} records/s, p50 {p50} ms, p99 {p99} ms")
    return {"rps": rps, "avg": avg, "p50": p50, "p99": p99}


def main():
    body_len = configs()
    log(f"work dir {WORK}; duration {DURATION}, {CONNECTIONS} connections, rate {RATE}/s")
    upstream = start("upstream", ["nginx", "-c", f"{WORK}/upstream.conf", "-p", WORK])
    wait_http(f"http://127.0.0.1:{PORTS['upstream']}/hello", "upstream")
    nginx = start("nginx", ["nginx", "-c", f"{WORK}/nginx.conf", "-p", WORK])
    haproxy = start("haproxy", ["haproxy", "-f", f"{WORK}/haproxy.cfg"])
    env = dict(os.environ, RUST_LOG="warn")
    gateway = start("gateway", [GATEWAY, "serve", "--config", f"{WORK}/routes.toml"], env=env)
    for name in ("nginx", "haproxy", "gateway"):
        wait_http(f"http://127.0.0.1:{PORTS[name]}/hello", name)
    wait_http(f"http://127.0.0.1:{PORTS['admin']}/readyz", "gateway readiness")
    time.sleep(1)
    idle_rss = rss_mb(gateway.pid)

    targets = [("direct", "upstream", None), ("nginx", "nginx", nginx.pid),
               ("haproxy", "haproxy", haproxy.pid), ("gateway", "gateway", gateway.pid)]
    sections = []
    measured = []
    for title, extra in [
        (f"Passthrough, {CONNECTIONS} connections, {DURATION}", ["-c", str(CONNECTIONS)]),
        (f"Passthrough, fixed rate {RATE} req/s, {CONNECTIONS} connections, {DURATION} (latency corrected)",
         ["-c", str(CONNECTIONS), "-q", str(RATE), "--latency-correction"]),
    ]:
        log(title)
        # A short warm-up per target, then the measured run.
        rows = []
        for label, port, pid in targets:
            subprocess.run([OHA, "--no-tui", "-z", "1s", "-c", "4", f"http://127.0.0.1:{PORTS[port]}/hello"],
                           capture_output=True)
            rows.append(measure(label, f"http://127.0.0.1:{PORTS[port]}/hello", pid, extra))
        sections.append(table(rows, title))
        measured.extend(rows)

    log("Events (real broker)")
    post = ["-m", "POST", "-D", f"{WORK}/body.json", "-H", "content-type: application/json", "-c", str(EVENT_CONNECTIONS)]
    gw = f"http://127.0.0.1:{PORTS['gateway']}"
    subprocess.run([OHA, "--no-tui", "-z", "1s", "-c", "4", *post[:-2], f"{gw}/accept"], capture_output=True)
    dual = measure("gateway dual-write", f"{gw}/dual", gateway.pid, post)
    accept = measure("gateway async (202 after acks=all)", f"{gw}/accept", gateway.pid, post)
    ppf = producer_performance()
    events = [
        f"### Events: {body_len}-byte JSON bodies, {EVENT_CONNECTIONS} connections, {DURATION}; ProducerPerformance {RECORDS} records of 1024 bytes",
        "",
        "Producer settings, gateway and ProducerPerformance alike: `acks=all`, `enable.idempotence=true`, `linger.ms=5`.",
        "",
        "| path | records/s | p50 ms | p99 ms | errors | CPU s / 1k req | share of ProducerPerformance |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in (dual, accept):
        events.append(f"| {r['label']} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['errors']} | {fmt(r['cpu_per_1k'], 4)} | {r['rps'] / ppf['rps']:.2f} |")
    events.append(f"| Kafka ProducerPerformance (1024-byte records) | {ppf['rps']:.0f} | {ppf['p50']:.0f} | {ppf['p99']:.0f} | - | - | 1.00 |")
    sections.append("\n".join(events))

    peak = peak_rss_mb([gateway.pid])
    sections.append(f"### Memory\n\nGateway RSS idle after start: {idle_rss:.1f} MB; peak over the run: {peak:.1f} MB.")
    machine = subprocess.run(["sh", "-c", "nproc; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2; free -g | awk '/Mem/{print $2\" GiB\"}'"],
                             capture_output=True, text=True).stdout.split("\n")
    versions = subprocess.run(["sh", "-c", f"nginx -v 2>&1; haproxy -v | head -1; {OHA} --version"], capture_output=True, text=True).stdout
    header = (f"Machine: {machine[0].strip()} cores,{machine[1]} {machine[2].strip()}. Loopback only; load generator, "
              f"proxies, upstream and broker share the machine.\n\n```\n{versions.strip()}\n```")
    report = "\n\n".join([header, *sections]) + "\n"
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    name = "results-smoke.md" if SMOKE else "results.md"
    with open(os.path.join(ROOT, "target", "bench", name), "w") as f:
        f.write(report)
    print(report)
    # Every path must have answered, errors-free, and the ceiling must have run:
    # the smoke run's pass criterion (its figures are not meaningful).
    bad = [r["label"] for r in (*measured, dual, accept) if r["ok"] == 0 or r["errors"]]
    if bad or not ppf["rps"] > 0:
        raise SystemExit(f"bench: failed paths {bad} (ProducerPerformance {ppf['rps']:.0f} records/s)")
    print(f"bench: {len(measured) + 2} paths answered without errors; ProducerPerformance ran")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(WORK, ignore_errors=True)
