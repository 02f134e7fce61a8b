//! Every metric the gateway exports, named once. One registry per gateway
//! instance, rendered in Prometheus text format on the admin port.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Latency buckets in seconds, from sub-millisecond proxying to slow brokers.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The gateway's metrics. Cloning shares the same series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `gateway_requests_total{route,mode,status}`
    pub requests: IntCounterVec,
    /// `gateway_adapter_deliveries_total{adapter,outcome}`
    pub adapter_deliveries: IntCounterVec,
    /// `gateway_adapter_retries_total{adapter}`
    pub adapter_retries: IntCounterVec,
    /// `gateway_adapter_dead_letters_total{adapter}`
    pub adapter_dead_letters: IntCounterVec,
    /// `gateway_adapter_lag{adapter,partition}`
    pub adapter_lag: prometheus::IntGaugeVec,
    /// `gateway_request_duration_seconds{route,mode}`
    pub request_latency: HistogramVec,
    /// `gateway_canary_requests_total{route,arm,outcome}`
    pub canary_requests: IntCounterVec,
    /// `gateway_canary_decisions_total{route,action}`
    pub canary_decisions: IntCounterVec,
    /// `gateway_canary_percent{route}`
    pub canary_percent: GaugeVec,
    /// `gateway_tls_certificate_reloads_total{result}`
    pub tls_reloads: IntCounterVec,
    /// `gateway_request_errors_total{route,side,reason}`
    pub request_errors: IntCounterVec,
    /// `gateway_upstream_duration_seconds{upstream}`: time to response headers.
    pub upstream_latency: HistogramVec,
    /// `gateway_publish_duration_seconds{topic}`: enqueue to acknowledgement.
    pub publish_latency: HistogramVec,
    /// `gateway_publish_failures_total{topic,reason}`
    pub publish_failures: IntCounterVec,
    /// `gateway_events_published_total{route,topic}`
    pub events_published: IntCounterVec,
    /// `gateway_events_spooled_total{route}`
    pub events_spooled: IntCounterVec,
    /// `gateway_events_republished_total{route}`
    pub events_republished: IntCounterVec,
    /// `gateway_events_lost_total{reason}`: should stay at zero; alert on it.
    pub events_lost: IntCounterVec,
    /// `gateway_events_unencodable_total{route}`: dual-write bodies the legacy
    /// service accepted but that do not fit the schema.
    pub events_unencodable: IntCounterVec,
    /// `gateway_idempotent_replays_total{route}`
    pub idempotent_replays: IntCounterVec,
    /// `gateway_spool_depth`
    pub spool_depth: IntGauge,
    /// `gateway_config_reloads_total{result}`
    pub reloads: IntCounterVec,
    /// `gateway_shadow_total{route,outcome}`: equal, different, noise,
    /// candidate_error, dropped.
    pub shadow: IntCounterVec,
    /// `gateway_shadow_field_differences_total{route,path,class}`: class
    /// different or noise; array indexes folded to `*`.
    pub shadow_fields: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name} is invalid: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered twice: {e}"));
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("static metric definition {name} is invalid: {e}"));
    registry
        .register(Box::new(h.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered twice: {e}"));
    h
}

impl Metrics {
    /// Creates the registry and every series.
    pub fn new() -> Self {
        let r = Registry::new();
        let spool_depth = IntGauge::new("gateway_spool_depth", "Events waiting in the spool")
            .unwrap_or_else(|e| unreachable!("{e}"));
        r.register(Box::new(spool_depth.clone()))
            .unwrap_or_else(|e| unreachable!("{e}"));
        Self {
            requests: counter(
                &r,
                "gateway_requests_total",
                "Requests answered",
                &["route", "mode", "status"],
            ),
            request_errors: counter(
                &r,
                "gateway_request_errors_total",
                "Requests that failed, by side and reason",
                &["route", "side", "reason"],
            ),
            upstream_latency: histogram(
                &r,
                "gateway_upstream_duration_seconds",
                "Legacy service time to response headers",
                &["upstream"],
            ),
            publish_latency: histogram(
                &r,
                "gateway_publish_duration_seconds",
                "Kafka publish time until acknowledgement",
                &["topic"],
            ),
            publish_failures: counter(
                &r,
                "gateway_publish_failures_total",
                "Events Kafka did not acknowledge",
                &["topic", "reason"],
            ),
            events_published: counter(
                &r,
                "gateway_events_published_total",
                "Events acknowledged by Kafka",
                &["route", "topic"],
            ),
            events_spooled: counter(
                &r,
                "gateway_events_spooled_total",
                "Dual-write events written to the spool",
                &["route"],
            ),
            events_republished: counter(
                &r,
                "gateway_events_republished_total",
                "Spooled events later acknowledged by Kafka",
                &["route"],
            ),
            events_lost: counter(
                &r,
                "gateway_events_lost_total",
                "Events that could be neither published nor spooled",
                &["reason"],
            ),
            events_unencodable: counter(
                &r,
                "gateway_events_unencodable_total",
                "Dual-write bodies that do not fit the route's schema",
                &["route"],
            ),
            idempotent_replays: counter(
                &r,
                "gateway_idempotent_replays_total",
                "Async requests answered from the idempotency cache",
                &["route"],
            ),
            reloads: counter(
                &r,
                "gateway_config_reloads_total",
                "Config reload attempts",
                &["result"],
            ),
            shadow_fields: counter(
                &r,
                "gateway_shadow_field_differences_total",
                "Shadow differences by field path",
                &["route", "path", "class"],
            ),
            shadow: counter(
                &r,
                "gateway_shadow_total",
                "Shadow comparisons by outcome",
                &["route", "outcome"],
            ),
            adapter_deliveries: counter(
                &r,
                "gateway_adapter_deliveries_total",
                "Events an adapter finished with, by outcome (completed, refused, failed)",
                &["adapter", "outcome"],
            ),
            adapter_retries: counter(
                &r,
                "gateway_adapter_retries_total",
                "Delivery attempts an adapter will retry",
                &["adapter"],
            ),
            adapter_dead_letters: counter(
                &r,
                "gateway_adapter_dead_letters_total",
                "Events an adapter sent to <topic>.dlq",
                &["adapter"],
            ),
            adapter_lag: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "gateway_adapter_lag",
                        "Events on the adapter's topic not delivered yet, per partition",
                    ),
                    &["adapter", "partition"],
                )
                .unwrap_or_else(|e| unreachable!("{e}"));
                r.register(Box::new(g.clone()))
                    .unwrap_or_else(|e| unreachable!("{e}"));
                g
            },
            request_latency: histogram(
                &r,
                "gateway_request_duration_seconds",
                "Time from request to response headers, by route and the mode that served it",
                &["route", "mode"],
            ),
            canary_requests: counter(
                &r,
                "gateway_canary_requests_total",
                "Requests of canaried routes by arm and outcome (ok, error)",
                &["route", "arm", "outcome"],
            ),
            tls_reloads: counter(
                &r,
                "gateway_tls_certificate_reloads_total",
                "Changed certificate files of the public listener: loaded, or refused (the previous certificate stays)",
                &["result"],
            ),
            canary_decisions: counter(
                &r,
                "gateway_canary_decisions_total",
                "Canary decisions applied on this replica (start, step-up, complete, rollback, pause, resume, abort, promote)",
                &["route", "action"],
            ),
            canary_percent: {
                let g = GaugeVec::new(
                    Opts::new(
                        "gateway_canary_percent",
                        "Share of requests the canary arm takes, percent",
                    ),
                    &["route"],
                )
                .unwrap_or_else(|e| unreachable!("{e}"));
                r.register(Box::new(g.clone()))
                    .unwrap_or_else(|e| unreachable!("{e}"));
                g
            },
            spool_depth,
            registry: r,
        }
    }

    /// Every metric's name and label names, whether or not it has a value
    /// yet (the README's table is checked against it).
    pub fn catalog(&self) -> Vec<(String, Vec<String>)> {
        use prometheus::core::Collector;
        [
            self.requests.desc(),
            self.adapter_deliveries.desc(),
            self.adapter_retries.desc(),
            self.adapter_dead_letters.desc(),
            self.adapter_lag.desc(),
            self.request_latency.desc(),
            self.canary_requests.desc(),
            self.canary_decisions.desc(),
            self.canary_percent.desc(),
            self.tls_reloads.desc(),
            self.request_errors.desc(),
            self.upstream_latency.desc(),
            self.publish_latency.desc(),
            self.publish_failures.desc(),
            self.events_published.desc(),
            self.events_spooled.desc(),
            self.events_republished.desc(),
            self.events_lost.desc(),
            self.events_unencodable.desc(),
            self.idempotent_replays.desc(),
            self.spool_depth.desc(),
            self.reloads.desc(),
            self.shadow.desc(),
            self.shadow_fields.desc(),
        ]
        .concat()
        .into_iter()
        .map(|d| (d.fq_name.clone(), d.variable_labels.clone()))
        .collect()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
