//! Micro-benchmarks of the per-request work that is ours: route matching in
//! a table of 1 000 routes, JSON→Avro encoding of the shop's events, and
//! the header rewriting on the way to a legacy service.
//! `cargo bench -p gateway --bench hot_paths`

// Benchmark setup: a failed expectation is a broken benchmark.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config::LoadedConfig;
use gateway::routing::{build, SchemaIds};
use gateway::schema::Catalog;
use gateway::upstream::{prepare_request_headers, Forwarding};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// 1 000 routes: 250 services × (list, get one, update one, a catch-all).
fn thousand_routes() -> LoadedConfig {
    let mut text = format!(
        "[kafka]\nbootstrap = \"embedded\"\n[schemas]\ndir = \"{}\"\n[upstreams.legacy]\nurl = \"http://127.0.0.1:9\"\n",
        repo().join("schemas").display()
    );
    for i in 0..250 {
        for (name, method, path) in [
            ("list", "GET", format!("/svc{i}/items")),
            ("get", "GET", format!("/svc{i}/items/{{id}}")),
            ("put", "PUT", format!("/svc{i}/items/{{id}}")),
            ("files", "GET", format!("/svc{i}/files/{{*rest}}")),
        ] {
            text.push_str(&format!(
                "[[routes]]\nname = \"{name}-{i}\"\nmethod = \"{method}\"\npath = \"{path}\"\nupstream = \"legacy\"\nmode = \"passthrough\"\n"
            ));
        }
    }
    LoadedConfig::parse(&text, repo()).expect("parses")
}

fn routing(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let table = runtime
        .block_on(build(&thousand_routes(), &SchemaIds::Local))
        .expect("valid table");
    assert_eq!(table.routes().len(), 1000);
    let mut group = c.benchmark_group("route matching, 1000 routes");
    for (label, method, path) in [
        ("static", http::Method::GET, "/svc17/items"),
        ("parameter", http::Method::PUT, "/svc249/items/42"),
        ("catch-all", http::Method::GET, "/svc3/files/a/b/c.txt"),
        ("no match", http::Method::GET, "/nothing/here"),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| black_box(table.lookup(black_box(&method), black_box(path)).is_some()))
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let catalog = Catalog::load(&repo().join("schemas")).expect("catalog");
    let order = catalog.get("com.shop.OrderCreated").expect("OrderCreated");
    let user = catalog
        .get("com.shop.UserRegistered")
        .expect("UserRegistered");
    let order_json: serde_json::Value = serde_json::from_str(
        r#"{"orderId":"o-1001","customerId":"c-7","items":[{"sku":"SKU-1","quantity":2,"unitPriceCents":1999},{"sku":"SKU-2","quantity":1,"unitPriceCents":500}],"totalCents":4498,"currency":"EUR"}"#,
    )
    .expect("json");
    let user_json: serde_json::Value =
        serde_json::from_str(r#"{"userId":"u-1","email":"ada@example.com","name":"Ada Lovelace"}"#)
            .expect("json");
    assert!(order.encode_json(&order_json).is_ok() && user.encode_json(&user_json).is_ok());
    let mut group = c.benchmark_group("JSON to Avro");
    group.bench_function("OrderCreated (2 items)", |b| {
        b.iter(|| black_box(order.encode_json(black_box(&order_json))))
    });
    group.bench_function("UserRegistered", |b| {
        b.iter(|| black_box(user.encode_json(black_box(&user_json))))
    });
    group.bench_function("OrderCreated from bytes (parse + encode)", |b| {
        let bytes = order_json.to_string().into_bytes();
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&bytes)).expect("json");
            black_box(order.encode_json(&v))
        })
    });
    group.finish();
}

fn headers(c: &mut Criterion) {
    let mut incoming = http::HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("connection", "keep-alive, x-trace-hop"),
        ("keep-alive", "timeout=5"),
        ("x-trace-hop", "1"),
        ("x-forwarded-for", "203.0.113.9"),
        ("authorization", "Bearer abc"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        incoming.insert(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_static(v),
        );
    }
    let forwarding = Forwarding {
        client_addr: Some("192.0.2.10:50000".parse().expect("addr")),
        trust_incoming: false,
        https: false,
    };
    c.bench_function(
        "header rewriting (10 headers, hop-by-hop + X-Forwarded-*)",
        |b| {
            b.iter_batched(
                || incoming.clone(),
                |mut h| {
                    prepare_request_headers(&mut h, Some("shop.example.com"), forwarding);
                    black_box(h)
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
}

criterion_group!(benches, routing, encoding, headers);
criterion_main!(benches);
