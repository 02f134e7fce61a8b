//! `/metrics` parses as Prometheus text format, and what it exposes is what
//! the README's metrics table documents (names, types, labels).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use gateway_tests::{config_text, repo_root, TestGateway};
use prometheus_parse::{Scrape, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// (type, labels) per metric name, from the README's table.
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    let table = readme
        .split("<!-- metrics-table -->")
        .nth(1)
        .and_then(|t| t.split("<!-- /metrics-table -->").next())
        .expect("the metrics table is marked in the README");
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let labels = cells[3]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            (
                cells[1].trim_matches('`').to_string(),
                (cells[2].to_string(), labels),
            )
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Counter(_) => "counter",
        Value::Gauge(_) => "gauge",
        Value::Histogram(_) => "histogram",
        Value::Summary(_) => "summary",
        Value::Untyped(_) => "untyped",
    }
}

#[tokio::test]
async fn the_exposition_parses_and_matches_the_documented_table() {
    let legacy = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&legacy)
        .await;
    let gw = TestGateway::start(&config_text(
        "embedded",
        3000,
        &format!(
            r#"
[upstreams.legacy]
url = "{legacy}"

[upstreams.candidate]
url = "{legacy}"

[[routes]]
name = "get-order"
method = "GET"
path = "/orders/{{id}}"
upstream = "legacy"
mode = "passthrough"
canary = {{ mode = "passthrough", upstream = "candidate", steps = [50], sticky = "header:X-Customer-Id" }}

[[routes]]
name = "create-order"
method = "POST"
path = "/orders"
upstream = "legacy"
mode = "async"
topic = "orders.order-created"
schema = "com.shop.OrderCreated"
key = "/customerId"
"#,
            legacy = legacy.uri()
        ),
    ))
    .await
    .expect("gateway");
    gateway_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the canary starts",
        || async {
            gw.admin_routes()
                .await
                .is_ok_and(|r| r["routes"][0]["canary"]["status"] == "running")
        },
    )
    .await
    .expect("started");
    for i in 0..20 {
        gw.http
            .get(format!("{}/orders/{i}", gw.base))
            .header("x-customer-id", format!("c-{i}"))
            .send()
            .await
            .expect("answer");
    }
    let accepted = gw
        .http
        .post(format!("{}/orders", gw.base))
        .header("content-type", "application/json")
        .body(r#"{"orderId":"o-1","customerId":"c-1","items":[],"totalCents":1}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(accepted.status(), 202);
    let refused = gw
        .http
        .post(format!("{}/orders", gw.base))
        .body("not json")
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 400);

    let text = gw
        .http
        .get(format!("{}/metrics", gw.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let scrape =
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format");
    // The parser skips what it does not understand: every sample line must
    // have become a sample.
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.len(),
            Value::Summary(quantiles) => quantiles.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed, sample_lines, "every line of the exposition parses");

    // The table and the gateway's own catalog agree both ways, series with
    // and without values alike.
    let table = documented();
    let catalog: BTreeMap<String, BTreeSet<String>> = gw
        .gateway
        .shared
        .metrics
        .catalog()
        .into_iter()
        .map(|(name, labels)| (name, labels.into_iter().collect()))
        .collect();
    let documented_labels: BTreeMap<String, BTreeSet<String>> = table
        .iter()
        .map(|(name, (_, labels))| (name.clone(), labels.clone()))
        .collect();
    assert_eq!(
        documented_labels, catalog,
        "README table vs the metrics the gateway defines"
    );

    let mut seen = BTreeSet::new();
    for sample in &scrape.samples {
        // A histogram's `_sum` and `_count` lines come as samples of their own.
        let part_of_histogram = ["_sum", "_count"]
            .iter()
            .find_map(|s| sample.metric.strip_suffix(s))
            .filter(|base| table.get(*base).is_some_and(|(k, _)| k == "histogram"));
        let name = part_of_histogram.unwrap_or(sample.metric.as_str());
        let (kind_doc, labels_doc) = table
            .get(name)
            .unwrap_or_else(|| panic!("{name} is exposed but not in the README's table"));
        if part_of_histogram.is_none() {
            assert_eq!(kind(&sample.value), kind_doc, "{name}");
        }
        let labels: BTreeSet<String> = sample
            .labels
            .keys()
            .filter(|k| *k != "le")
            .cloned()
            .collect();
        assert_eq!(&labels, labels_doc, "{name}: labels");
        seen.insert(name.to_string());
    }
    for wanted in [
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_request_errors_total",
        "gateway_upstream_duration_seconds",
        "gateway_publish_duration_seconds",
        "gateway_events_published_total",
        "gateway_spool_depth",
        "gateway_canary_requests_total",
        "gateway_canary_percent",
        "gateway_canary_decisions_total",
    ] {
        assert!(
            seen.contains(wanted),
            "{wanted} missing after traffic: {seen:?}"
        );
    }
}
