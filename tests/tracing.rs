//! One trace from the caller through the gateway, Kafka and the adapter to
//! the legacy service (in-memory span exporter, embedded Kafka, wiremock).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use gateway_tests::{config_text, read_topic, wait_until, TestGateway};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The process-wide subscriber with the OpenTelemetry layer, exporting to
/// memory (every task of every runtime in this test binary reports to it).
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new("info,rdkafka=warn"))
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
                .try_init()
                .expect("the only subscriber of this test binary");
            (exporter, provider)
        })
        .0
}

fn spans() -> Vec<SpanData> {
    exporter().get_finished_spans().expect("spans")
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_caller_through_kafka_and_the_adapter_to_the_legacy_service() {
    exporter();
    let inventory = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("{}"))
        .mount(&inventory)
        .await;
    let topic = "trace.orders";
    let gw = TestGateway::start(&config_text(
        "embedded",
        5000,
        &format!(
            r#"
[upstreams.orders]
url = "http://127.0.0.1:9"

[upstreams.inventory]
url = "{inventory}"

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "orders"
mode = "async"
topic = "{topic}"
schema = "com.shop.OrderCreated"
key = "/customerId"

[[adapters]]
name = "inventory"
topic = "{topic}"
upstream = "inventory"
path = "/inventory/reservations"
max_attempts = 50
retry_initial_ms = 20
retry_max_ms = 200
"#,
            inventory = inventory.uri()
        ),
    ))
    .await
    .expect("gateway");

    let response = gw
        .http
        .post(format!("{}/orders", gw.base))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .header("x-request-id", "req-42")
        .body(r#"{"orderId":"o-1","customerId":"c-1","items":[],"totalCents":1}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], "req-42");

    // The Kafka record continues the caller's trace from the request span.
    let records = read_topic(&gw.gateway.kafka_bootstrap, topic)
        .await
        .expect("records");
    let record = records.first().expect("one record");
    let traceparent = record
        .header("traceparent")
        .expect("traceparent")
        .to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], TRACE, "{traceparent}");
    assert_ne!(
        parts[2], CALLER_SPAN,
        "the gateway's own span is the parent"
    );
    assert_eq!(record.header("x-request-id"), Some("req-42"));
    let request_span = spans()
        .into_iter()
        .find(|s| s.span_context.span_id().to_string() == parts[2])
        .expect("the record names the request span");
    assert_eq!(request_span.span_context.trace_id().to_string(), TRACE);
    assert_eq!(request_span.parent_span_id.to_string(), CALLER_SPAN);
    assert!(request_span
        .attributes
        .iter()
        .any(|kv| kv.key.as_str() == "route" && kv.value.to_string() == "create-order"));
    let publish = spans()
        .into_iter()
        .find(|s| {
            s.name.starts_with("publish ")
                && s.parent_span_id == request_span.span_context.span_id()
        })
        .expect("a publish span under the request span");
    assert_eq!(publish.span_context.trace_id().to_string(), TRACE);

    // The adapter's delivery continues it, and so does its call.
    let loaded = gateway::config::LoadedConfig::read(&gw.config_path()).expect("config");
    let (stop, rx) = tokio::sync::watch::channel(false);
    let bootstrap = gw.gateway.kafka_bootstrap.clone();
    let adapter = tokio::spawn(async move {
        gateway::adapter::run(&loaded, "inventory", &bootstrap, rx)
            .await
            .expect("adapter runs");
    });
    wait_until(Duration::from_secs(20), "inventory called", || async {
        !inventory
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    })
    .await
    .expect("delivered");
    let call = inventory.received_requests().await.unwrap_or_default()[0].clone();
    let sent = call
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("traceparent to the legacy service")
        .to_string();
    let sent: Vec<&str> = sent.split('-').collect();
    assert_eq!(sent[1], TRACE);
    let _ = stop.send(true);
    adapter.await.expect("adapter stops");

    let all = spans();
    let delivery = all
        .iter()
        .find(|s| s.name == "deliver inventory")
        .expect("a delivery span");
    assert_eq!(delivery.span_context.trace_id().to_string(), TRACE);
    assert_eq!(
        delivery.parent_span_id,
        request_span.span_context.span_id(),
        "the delivery continues from the record's context"
    );
    let call_span = all
        .iter()
        .find(|s| s.span_context.span_id().to_string() == sent[2])
        .expect("the legacy call's parent is a span of the adapter");
    assert_eq!(call_span.parent_span_id, delivery.span_context.span_id());
}
