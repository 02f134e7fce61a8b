//! Shared test support: write a routes file, start a gateway on ephemeral
//! ports, read topics back from Kafka, and wait on conditions with timeouts.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gateway::Gateway;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A gateway running on ephemeral ports, with its own temp directory
/// (config file, spool).
pub struct TestGateway {
    /// The gateway.
    pub gateway: Gateway,
    /// Directory holding `routes.toml` and the spool.
    pub dir: tempfile::TempDir,
    /// `http://public`
    pub base: String,
    /// `http://admin`
    pub admin: String,
    /// HTTP client for the test.
    pub http: reqwest::Client,
}

/// The shop's two publishing routes for tests: `POST /orders` (async, key
/// `/customerId`) and `POST /users` (dual-write, key `/userId`), both on the
/// upstream `legacy`.
pub fn shop_routes(legacy: &str, orders: &str, users: &str) -> String {
    format!(
        r#"
[upstreams.legacy]
url = "{legacy}"
timeout_ms = 5000

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "async"
topic = "{orders}"
schema = "com.shop.OrderCreated"
key = "/customerId"

[[routes]]
name = "register-user"
method = "POST"
path = "/users"
upstream = "legacy"
mode = "dual-write"
topic = "{users}"
schema = "com.shop.UserRegistered"
key = "/userId"
"#
    )
}

/// Header of a routes file for tests: ephemeral ports, the repo's schemas,
/// a private spool. `extra` is appended (upstreams, routes...).
pub fn config_text(bootstrap: &str, publish_timeout_ms: u64, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
max_body_bytes = 4096

[kafka]
bootstrap = "{bootstrap}"
publish_timeout_ms = {publish_timeout_ms}

[schemas]
dir = "{schemas}"

[spool]
dir = "spool"
retry_interval_ms = 200

{extra}
"#,
        schemas = repo_root().join("schemas").display(),
    )
}

impl TestGateway {
    /// Writes `config` and starts a gateway on it.
    pub async fn start(config: &str) -> anyhow::Result<Self> {
        Self::start_with_files(config, &[]).await
    }

    /// Like [`TestGateway::start`], with extra files beside the config.
    pub async fn start_with_files(config: &str, files: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir, config, files).await
    }

    /// Starts a gateway in an existing directory (e.g. to restart one).
    pub async fn start_in(
        dir: tempfile::TempDir,
        config: &str,
        files: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)?;
        }
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, config)?;
        let gateway = Gateway::start(&path).await?;
        Ok(Self {
            base: format!("http://{}", gateway.public_addr),
            admin: format!("http://{}", gateway.admin_addr),
            gateway,
            dir,
            http: reqwest::Client::new(),
        })
    }

    /// Stops the gateway and hands back its directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.gateway.shutdown(Duration::from_secs(5)).await;
        self.dir
    }

    /// Sends an admin write with a bearer token.
    pub fn admin_write(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.admin));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Path of the routes file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("routes.toml")
    }

    /// `GET /admin/routes`
    pub async fn admin_routes(&self) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{}/admin/routes", self.admin))
            .send()
            .await?
            .json()
            .await?)
    }

    /// The mode a route currently has, per `/admin/routes`.
    pub async fn route_mode(&self, route: &str) -> anyhow::Result<Option<String>> {
        let routes = self.admin_routes().await?;
        Ok(routes["routes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == route))
            .and_then(|r| r["mode"].as_str())
            .map(str::to_string))
    }

    /// The schema id a route publishes with.
    pub async fn schema_id(&self, route: &str) -> anyhow::Result<u32> {
        let routes = self.admin_routes().await?;
        routes["routes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == route))
            .and_then(|r| r["schema_id"].as_u64())
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| anyhow::anyhow!("route {route} has no schema id"))
    }

    /// Value of one metric series in `/metrics`; an error when the series is
    /// absent, so a renamed metric fails the test instead of reading as 0.
    /// `selector` is the series name with its labels as rendered, e.g.
    /// `gateway_events_spooled_total{route="r"}`.
    pub async fn metric(&self, selector: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(selector).and_then(|v| v.trim().parse().ok()))
            .ok_or_else(|| anyhow::anyhow!("no series {selector} in /metrics"))
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<String>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers as UTF-8 strings.
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gateway-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?)
}

/// Each partition of `topic` with its low and high watermark; empty if the
/// topic does not exist.
fn watermarks(c: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    if t.error().is_some() {
        return Ok(Vec::new());
    }
    t.partitions()
        .iter()
        .map(|p| {
            let (lo, hi) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            Ok((p.id(), lo, hi))
        })
        .collect()
}

/// Number of records in a topic; 0 if the topic does not exist.
pub async fn topic_count(bootstrap: &str, topic: &str) -> anyhow::Result<i64> {
    let bootstrap = bootstrap.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c = consumer(&bootstrap)?;
        Ok(watermarks(&c, &topic)?
            .iter()
            .map(|(_, lo, hi)| hi - lo)
            .sum())
    })
    .await?
}

/// Reads every record of `topic` that exists now (from the beginning).
pub async fn read_topic(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let bootstrap = bootstrap.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c = consumer(&bootstrap)?;
        let mut tpl = TopicPartitionList::new();
        let mut expected = 0;
        for (partition, lo, hi) in watermarks(&c, &topic)? {
            expected += hi - lo;
            tpl.add_partition_offset(&topic, partition, Offset::Beginning)?;
        }
        if expected == 0 {
            return Ok(Vec::new());
        }
        c.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (out.len() as i64) < expected {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "read {} of {expected} records of {topic} before the deadline",
                    out.len()
                );
            }
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m?;
                let headers = gateway::events::record_headers(&m);
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
            }
        }
        Ok(out)
    })
    .await?
}

/// Makes any call to `legacy` fail the test (checked when it is dropped).
pub async fn forbid_calls(legacy: &wiremock::MockServer) {
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(500))
        .expect(0)
        .mount(legacy)
        .await;
}

/// A unique topic name per test, so tests sharing one broker never see each
/// other's events.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}.{}", uuid_like())
}

fn uuid_like() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{:x}-{n}", std::process::id())
}

/// A second broker of our own, stopped and reset when the test ends.
pub struct PrivateBroker {
    /// Its client port on 127.0.0.1.
    pub port: u16,
    data: tempfile::TempDir,
}

// Test support: a broker that cannot be started or signalled fails the test.
#[allow(clippy::expect_used)]
impl PrivateBroker {
    fn cmd(&self, action: &str) -> std::process::Output {
        Command::new(repo_root().join("tests/kafka/broker.sh"))
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_DATA_DIR", self.data.path().join("kafka"))
            // Fault tests need plaintext only; no certificates to make.
            .env("KAFKA_SASL_PORT", "0")
            .output()
            .expect("broker.sh runs")
    }

    /// Starts a broker on `port`, which must be free (the caller stops
    /// and kills this broker, so it must be the one that started it).
    pub fn start(port: u16) -> Self {
        let broker = Self {
            port,
            data: tempfile::tempdir().expect("tempdir"),
        };
        // This test stops its broker, so it must be the one that started it.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} is already in use; set KAFKA_OUTAGE_PORT to a free port"
        );
        broker.run("start");
        broker
    }

    /// Starts a broker on the port the environment variable `port_var`
    /// names, else on `default_port` (off the async runtime's threads).
    pub async fn launch(port_var: &str, default_port: u16) -> Self {
        let port: u16 = std::env::var(port_var)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(default_port);
        tokio::task::spawn_blocking(move || Self::start(port))
            .await
            .expect("broker thread")
    }

    /// Runs `broker.sh <action>` (start, stop, ...) and fails if it fails.
    pub fn run(&self, action: &str) {
        let out = self.cmd(action);
        assert!(
            out.status.success(),
            "broker.sh {action} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// Test support: a broker that cannot be started or signalled fails the test.
#[allow(clippy::expect_used)]
impl PrivateBroker {
    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker JVM's pid, from the pid file `broker.sh` keeps.
    pub fn pid(&self) -> u32 {
        let file = self.data.path().join("kafka").join("broker.pid");
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no broker pid in {}", file.display()))
    }

    /// Sends `signal` (KILL, STOP, CONT) to the broker JVM.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} of the broker failed");
    }
}

// Test support: a failed expectation fails the test.
#[allow(clippy::expect_used)]
impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.cmd("stop");
    }
}

/// The `gateway` binary, built (or found up to date) by cargo.
pub fn gateway_binary() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "build",
            "-p",
            "gateway",
            "--bin",
            "gateway",
            "--message-format=json",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cargo build of the gateway failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "gateway")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| anyhow::anyhow!("cargo named no gateway executable"))
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A gateway in a process of its own (`gateway serve`), on fixed ports so
/// it can be killed and started again where callers expect it.
pub struct GatewayProcess {
    child: Option<std::process::Child>,
    env: Vec<(String, String)>,
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// `http://public`
    pub base: String,
    /// `http://admin`
    pub admin: String,
}

impl GatewayProcess {
    /// Writes `config` (whose `listen` and `admin` must be `127.0.0.1:0`;
    /// they are replaced by fixed free ports) into `dir` and starts a
    /// gateway on it, returning once `/readyz` answers 200.
    pub async fn start(dir: &Path, config: &str) -> anyhow::Result<Self> {
        Self::start_with_env(dir, config, &[]).await
    }

    /// Like [`GatewayProcess::start`], with environment variables for the
    /// process (overrides, credentials).
    pub async fn start_with_env(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let (public, admin) = (free_port()?, free_port()?);
        let config_text = config
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{public}\""),
                1,
            )
            .replacen(
                "admin = \"127.0.0.1:0\"",
                &format!("admin = \"127.0.0.1:{admin}\""),
                1,
            );
        let path = dir.join("routes.toml");
        std::fs::write(&path, config_text)?;
        let mut p = Self {
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            binary: tokio::task::spawn_blocking(gateway_binary).await??,
            config: path,
            log: dir.join("gateway.log"),
            base: format!("http://127.0.0.1:{public}"),
            admin: format!("http://127.0.0.1:{admin}"),
        };
        p.restart().await?;
        Ok(p)
    }

    /// Starts the process again (after [`GatewayProcess::kill`]) on the
    /// same config, ports and spool; returns once `/readyz` answers 200.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the gateway is still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("GATEWAY_LOG_FORMAT", "text")
            .env("GATEWAY_GRACE_SECS", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let ready = format!("{}/readyz", self.admin);
        let client = reqwest::Client::new();
        let waited = wait_until(Duration::from_secs(120), "the gateway is ready", || {
            let (client, ready) = (client.clone(), ready.clone());
            async move {
                client
                    .get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        if let Err(e) = waited {
            anyhow::bail!("{e}\n--- gateway log ---\n{}", self.log_text());
        }
        Ok(())
    }

    /// SIGTERM, as a deploy does, and waits (up to `timeout`) for the
    /// process to exit; returns its exit code.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            anyhow::bail!("the gateway is not running");
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if started.elapsed() > timeout {
                child.kill()?;
                child.wait()?;
                anyhow::bail!("the gateway did not exit within {timeout:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing drained.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// What the process logged so far (every start).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric's value from `/metrics` (the sum over matching series).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The test broker's SASL_SSL listener (`tests/kafka/broker.sh`): its
/// bootstrap, the CA file that signed its certificate, the user and the
/// password. `tests/run.sh` exports them; the defaults match broker.sh's.
pub struct SaslListener {
    /// `127.0.0.1:<KAFKA_PORT + 2>`
    pub bootstrap: String,
    /// The test CA (PEM).
    pub ca_file: PathBuf,
    /// SASL user (PLAIN and SCRAM).
    pub user: String,
    /// Its password.
    pub password: String,
}

impl SaslListener {
    /// From the environment `tests/run.sh` sets, else broker.sh's defaults.
    pub fn from_env() -> Self {
        let port: u16 = std::env::var("KAFKA_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(19092);
        Self {
            bootstrap: std::env::var("KAFKA_SASL_BOOTSTRAP")
                .unwrap_or_else(|_| format!("127.0.0.1:{}", port + 2)),
            ca_file: std::env::var("KAFKA_TLS_CA")
                .map(PathBuf::from)
                .unwrap_or_else(|_| repo_root().join("target/kafka-data/tls/ca.pem")),
            user: std::env::var("KAFKA_SASL_USER").unwrap_or_else(|_| "gateway".into()),
            password: std::env::var("KAFKA_SASL_PASSWORD")
                .unwrap_or_else(|_| "gateway-test-secret".into()),
        }
    }
}

/// `GATEWAY_SOAK_SECS`: how long the soak variants of the load tests keep
/// their load up (`no_acknowledged_request_is_lost_or_duplicated_under_load`,
/// the fleet's rolling restarts). Unset or 0: the short variant CI runs.
pub fn soak() -> Option<Duration> {
    std::env::var("GATEWAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}
