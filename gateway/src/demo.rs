//! `gateway demo`: sample legacy services (orders, inventory, users), the
//! embedded Kafka and the gateway in one process, with curl commands that
//! show each mode and a consumer that prints every event it sees.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::config::LoadedConfig;
use crate::server::{Gateway, Overrides};
use crate::state::Shared;

/// Runs the demo until Ctrl-C. `kafka` is a bootstrap list or `"embedded"`.
pub async fn run(config_path: &Path, kafka: &str, print_events: bool) -> anyhow::Result<ExitCode> {
    let loaded = LoadedConfig::read(config_path)?;
    for (name, upstream) in &loaded.config.upstreams {
        let uri: http::Uri = upstream.url.parse()?;
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("upstream {name} has no host"))?;
        let addr: SocketAddr = tokio::net::lookup_host(authority.as_str())
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("upstream {name}: cannot resolve {authority}"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("sample service {name} cannot listen on {addr}: {e}"))?;
        let app = sample_service(name);
        tokio::spawn(async move { axum::serve(listener, app).await });
        println!("sample legacy service {name:<10} on http://{addr}");
    }

    let gateway = Gateway::start_with(
        config_path,
        Overrides {
            kafka_bootstrap: Some(kafka.to_string()),
            admin_token: Some(("demo".into(), DEMO_TOKEN.into())),
        },
    )
    .await?;
    if print_events {
        spawn_event_printer(&gateway.kafka_bootstrap, gateway.shared.clone())?;
    }
    // The adapters of the routes file, in process.
    let (stop_adapters, adapters_rx) = tokio::sync::watch::channel(false);
    for adapter in &loaded.config.adapters {
        let (loaded, name, bootstrap, rx, metrics) = (
            loaded.clone(),
            adapter.name.clone(),
            gateway.kafka_bootstrap.clone(),
            adapters_rx.clone(),
            gateway.shared.metrics.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) =
                crate::adapter::run_with_metrics(&loaded, &name, &bootstrap, rx, metrics).await
            {
                tracing::error!(adapter = %name, error = %e, "adapter stopped");
            }
        });
    }
    let faults = match gateway.embedded_kafka() {
        Some(cluster) => start_faults(cluster).await,
        None => None,
    };
    print_walkthrough(gateway.public_addr, gateway.admin_addr, kafka == "embedded");
    print_canary_walkthrough(gateway.public_addr, gateway.admin_addr, faults);
    print_adapter_walkthrough(gateway.public_addr);
    print_plan_walkthrough(gateway.admin_addr, &gateway.kafka_bootstrap);

    tokio::signal::ctrl_c().await?;
    let _ = stop_adapters.send(true);
    gateway.shutdown(Duration::from_secs(5)).await;
    Ok(ExitCode::SUCCESS)
}

fn sample_service(name: &str) -> Router {
    let label = name.to_string();
    let base = Router::new().route("/health", get(|| async { "ok" }));
    match name {
        "orders" => base
            .route(
                "/orders/{id}",
                get(|UrlPath(id): UrlPath<String>| async move { Json(order_view(&id, "PAID")) }),
            )
            .route(
                "/orders",
                axum::routing::post(|Json(body): Json<Value>| async move {
                    (
                        StatusCode::CREATED,
                        Json(json!({"created": body, "source": "legacy orders service"})),
                    )
                }),
            ),
        // The rewritten orders service: same answers, except `status` is
        // spelled differently, the one real difference a shadow finds.
        "orders-v2" => base.route(
            "/orders/{id}",
            get(|UrlPath(id): UrlPath<String>| async move { Json(order_view(&id, "paid")) }),
        ),
        "users" => base
            .route(
                "/users",
                axum::routing::post(|Json(body): Json<Value>| async move {
                    if body.get("email").is_none() {
                        return (
                            StatusCode::BAD_REQUEST,
                            Json(json!({"error": "email is required"})),
                        );
                    }
                    (
                        StatusCode::CREATED,
                        Json(json!({"registered": body, "source": "legacy users service"})),
                    )
                }),
            )
            .route(
                "/users/{id}",
                get(|UrlPath(id): UrlPath<String>| async move {
                    Json(json!({"userId": id, "name": "Ada", "source": "legacy users service"}))
                }),
            ),
        "inventory" => inventory_service(base),
        _ => base.fallback(move || {
            let label = label.clone();
            async move { Json(json!({"source": format!("legacy {label} service")})) }
        }),
    }
}

/// An order as the sample services show it; `requestId` and `servedAt`
/// change on every call (noise a shadow comparison must learn).
fn order_view(id: &str, status: &str) -> Value {
    json!({
        "orderId": id,
        "status": status,
        "totalCents": 3998,
        "requestId": uuid::Uuid::new_v4().to_string(),
        "servedAt": jiff::Timestamp::now().to_string(),
    })
}

/// The sample inventory service. `POST /demo/down` and `/demo/up` simulate
/// an outage.
fn inventory_service(base: Router) -> Router {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (d1, d2, d3) = (down.clone(), down.clone(), down);
    base.route(
        "/inventory/{sku}",
        get(|UrlPath(sku): UrlPath<String>| async move {
            Json(json!({"sku": sku, "available": 7, "source": "legacy inventory service"}))
        })
        .put(
            |UrlPath(sku): UrlPath<String>, Json(body): Json<Value>| async move {
                Json(json!({"sku": sku, "updated": body, "source": "legacy inventory service"}))
            },
        ),
    )
    .route(
        "/inventory/reservations",
        axum::routing::post(move |Json(body): Json<Value>| {
            let down = d1.clone();
            async move {
                if down.load(std::sync::atomic::Ordering::Relaxed) {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"error": "inventory is down"})),
                    );
                }
                println!("[inventory] reserved stock for order {}", body["orderId"]);
                (
                    StatusCode::CREATED,
                    Json(json!({"reserved": body["orderId"]})),
                )
            }
        }),
    )
    .route(
        "/demo/down",
        axum::routing::post(move || {
            let down = d2.clone();
            async move {
                down.store(true, std::sync::atomic::Ordering::Relaxed);
                "inventory is now down\n"
            }
        }),
    )
    .route(
        "/demo/up",
        axum::routing::post(move || {
            let down = d3.clone();
            async move {
                down.store(false, std::sync::atomic::Ordering::Relaxed);
                "inventory is up again\n"
            }
        }),
    )
}

fn spawn_event_printer(bootstrap: &str, shared: Arc<Shared>) -> anyhow::Result<()> {
    let topics: Vec<String> = shared
        .table
        .load()
        .routes()
        .iter()
        .filter_map(|r| r.event.as_ref().map(|e| e.topic.clone()))
        .collect();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "gateway-demo-printer")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()?;
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => println!("{}", describe(&m, &shared)),
                Err(e) => tracing::debug!(error = %e, "demo consumer"),
            }
        }
    });
    Ok(())
}

fn describe(m: &rdkafka::message::BorrowedMessage<'_>, shared: &Shared) -> String {
    let header = |name: &str| {
        m.headers().and_then(|hs| {
            hs.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    let decoded = m
        .payload()
        .and_then(crate::schema::confluent_unframe)
        .and_then(|(id, datum)| {
            let schema = shared.known_schemas.read().ok()?.get(&id).cloned()?;
            let value = schema.decode(datum).ok()?;
            Some((id, Value::try_from(value).ok()?))
        });
    let (id, body) = decoded.map_or((0, Value::Null), |(i, v)| (i, v));
    format!(
        "[kafka] {} p{}@{} key={} ce_type={} ce_source={} schema_id={} value={}",
        m.topic(),
        m.partition(),
        m.offset(),
        m.key().map(String::from_utf8_lossy).unwrap_or_default(),
        header("ce_type").unwrap_or_default(),
        header("ce_source").unwrap_or_default(),
        id,
        body
    )
}

/// Where the demo's fault switch listens.
const FAULTS: &str = "127.0.0.1:7009";

/// `POST /kafka/down` and `/kafka/up` on [`FAULTS`]: take the embedded
/// broker down to make the async arm fail.
async fn start_faults(cluster: Arc<crate::events::embedded::EmbeddedKafka>) -> Option<SocketAddr> {
    let switch = |down: bool| {
        let cluster = cluster.clone();
        move || async move {
            let cluster = cluster.clone();
            match tokio::task::spawn_blocking(move || cluster.set_down(down)).await {
                Ok(Ok(())) if down => (StatusCode::OK, "embedded Kafka is DOWN\n".to_string()),
                Ok(Ok(())) => (StatusCode::OK, "embedded Kafka is up again\n".to_string()),
                Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
    };
    let app = Router::new()
        .route("/kafka/down", axum::routing::post(switch(true)))
        .route("/kafka/up", axum::routing::post(switch(false)));
    match tokio::net::TcpListener::bind(FAULTS).await {
        Ok(listener) => {
            let addr = listener.local_addr().ok();
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        }
        Err(e) => {
            tracing::warn!(error = %e, "demo fault switch not started on {FAULTS}");
            None
        }
    }
}

fn print_canary_walkthrough(public: SocketAddr, admin: SocketAddr, faults: Option<SocketAddr>) {
    let order = r#"{"orderId":"o-3001","customerId":"c-9","items":[],"totalCents":0}"#;
    println!(
        r#"Checkout canary (routes.toml [routes.canary]): POST /orders stays on the legacy
orders service for most customers; X-Customer-Id hashes 1% of them into the async arm
(steps: 1, 5, 25, 50, 100%). X-Canary: always|never forces an arm from 127.0.0.1.
  C="cargo run -q -p gateway -- canary --admin http://{admin}"
  $C status checkout                                    # or: curl -s http://{admin}/admin/canary/checkout
  curl -si -X POST http://{public}/orders -H 'content-type: application/json' -H 'X-Canary: always' -d '{order}'
  GATEWAY_ADMIN_TOKEN={DEMO_TOKEN} $C promote checkout  # next step now (or after 10 healthy minutes)"#
    );
    match faults {
        Some(f) => println!(
            r#"Inject an error into the canary arm (Kafka down; the legacy arm does not need it),
send checkout traffic, and watch it roll back to 0% by itself:
  curl -s -X POST http://{f}/kafka/down
  for i in $(seq 1 30); do curl -s -o /dev/null -w '%{{http_code}} ' -X POST http://{public}/orders \
    -H 'content-type: application/json' -H "X-Customer-Id: c-$i" -H 'X-Canary: always' -d '{order}' & done; wait
  $C status checkout                                    # rolled-back, with the figures behind it
  curl -s 'http://{admin}/admin/audit?limit=5'           # the rollback in the audit trail
  curl -s -X POST http://{f}/kafka/up
  GATEWAY_ADMIN_TOKEN={DEMO_TOKEN} $C resume checkout   # a person decides when to try again
"#
        ),
        None => println!(
            "To see an automatic rollback, stop the broker and send checkout traffic with X-Canary: always.\n"
        ),
    }
}

/// The demo's admin token (a real deployment configures its own).
const DEMO_TOKEN: &str = "demo-token";

fn print_adapter_walkthrough(public: SocketAddr) {
    println!(
        r#"The inventory adapter (routes.toml [[adapters]]) delivers each OrderCreated to the
legacy inventory service. Orders keep being accepted while inventory is down:
  curl -s -X POST http://127.0.0.1:7002/demo/down
  curl -si -X POST http://{public}/orders -H 'content-type: application/json' -H 'X-Canary: always' \
    -d '{{"orderId":"o-2001","customerId":"c-8","items":[],"totalCents":0}}'
  curl -s http://{public}/operations/<id>                      # "accepted": inventory is down
  curl -s -X POST http://127.0.0.1:7002/demo/up
  curl -s -H 'Prefer: wait=10' http://{public}/operations/<id>  # "completed", with inventory's answer
"#
    );
}

fn print_plan_walkthrough(admin: SocketAddr, bootstrap: &str) {
    println!(
        r#"Running the migration (RFC-009 months) against this gateway:
  export GATEWAY_ADMIN_TOKEN={DEMO_TOKEN}
  P="cargo run -q -p gateway -- plan --admin http://{admin} --kafka {bootstrap}"
  $P status
  $P rollback checkout && $P rollback user-registration    # back to month 0
  $P apply provision --dry-run                              # month 1: checks only
  $P apply user-registration                                # month 2
  $P apply checkout --skip-check consumer-group             # month 3 (the embedded
                                                            # cluster cannot list groups;
                                                            # the inventory adapter is the group)
  curl -s http://{admin}/admin/audit
"#
    );
}

fn print_walkthrough(public: SocketAddr, admin: SocketAddr, embedded: bool) {
    let kafka = if embedded {
        "Kafka is EMBEDDED (in memory, not durable)."
    } else {
        "Kafka is the broker given with --kafka."
    };
    println!(
        r#"
gateway on http://{public}   admin on http://{admin}
{kafka} Events appear below as [kafka] lines (unless --quiet).

passthrough - proxied to the legacy service, nothing published (and shadowed to orders-v2):
  curl -s http://{public}/orders/42
  curl -s http://{admin}/admin/shadow/get-order     # names /status; requestId and servedAt are noise

async - validated, published with acks=all, answered 202 (legacy not called); checkout
is canaried, so this asks for the async arm:
  curl -si -X POST http://{public}/orders -H 'content-type: application/json' -H 'X-Canary: always' \
    -d '{{"orderId":"o-1001","customerId":"c-7","items":[{{"sku":"SKU-1","quantity":2,"unitPriceCents":1999}}],"totalCents":3998}}'
  curl -s http://{public}/operations/<id from the Location header>

async with a body that breaks the schema - 422 listing each field, nothing published:
  curl -s -X POST http://{public}/orders -H 'content-type: application/json' -H 'X-Canary: always' -d '{{"orderId":7,"items":[{{"sku":"SKU-1"}}]}}'

dual-write - the legacy answer comes back, and on 2xx the event is published too:
  curl -si -X POST http://{public}/users -H 'content-type: application/json' \
    -d '{{"userId":"u-1","email":"ada@example.com","name":"Ada Lovelace"}}'

dual-write where the legacy service refuses (400) - nothing published:
  curl -si -X POST http://{public}/users -H 'content-type: application/json' -d '{{"userId":"u-2","name":"No Email"}}'

admin:
  curl -s http://{admin}/admin/routes
  curl -s http://{admin}/metrics | grep ^gateway_
  curl -s http://{admin}/readyz

Ctrl-C stops everything.
"#
    );
}
