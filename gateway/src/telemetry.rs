//! Logs and traces. Logs are `tracing` events, as text or JSON lines.
//! Traces are `tracing` spans exported with OpenTelemetry (OTLP over
//! HTTP/protobuf) when the standard `OTEL_*` variables ask for it; W3C trace
//! context comes in with requests and records and goes out to legacy
//! services and into Kafka headers.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (fields, span fields, timestamp, level).
    Json,
}

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("trace export did not flush: {e}");
            }
        }
    }
}

/// Whether the environment asks for trace export: an OTLP endpoint is set
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
/// or `OTEL_TRACES_EXPORTER=otlp`, and `OTEL_SDK_DISABLED` is not `true`.
pub fn export_requested() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let exporter = std::env::var("OTEL_TRACES_EXPORTER").unwrap_or_default();
    !disabled
        && exporter != "none"
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            || exporter == "otlp")
}

/// Installs the process-wide subscriber: `RUST_LOG` filtering (default
/// `info,rdkafka=warn`), text or JSON lines on stderr, and span export when
/// [`export_requested`]. A broken exporter config is reported and tracing
/// stays off; it never stops the gateway.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = || {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"))
    };
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut problem = None;
    let provider = if export_requested() {
        match otlp_provider() {
            Ok(p) => Some(p),
            Err(e) => {
                problem = Some(e);
                None
            }
        }
    } else {
        None
    };
    // Spans are exported whatever RUST_LOG says about log lines.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("gateway"))
            .with_filter(EnvFilter::new("info,rdkafka=off"))
    });
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel)
        .try_init();
    if let Err(e) = installed {
        eprintln!("logging already set up: {e}");
    }
    if let Some(e) = problem {
        tracing::error!(error = %e, "OTEL_* asks for trace export but the exporter cannot be built; traces are off");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP (OTEL_* environment)");
    }
    Telemetry { provider }
}

fn otlp_provider() -> Result<SdkTracerProvider, String> {
    // Endpoint, headers, timeout, compression and protocol come from the
    // standard OTEL_EXPORTER_OTLP_* variables; the service name from
    // OTEL_SERVICE_NAME (default "gateway" below when unset).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("gateway");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct PairsExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty value (no tracestate) must also remove the caller's:
        // it belonged to another trace context.
        if value.is_empty() {
            self.0.remove(key);
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct PairsInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for PairsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.0.push((key.to_string(), value));
    }
}

/// Makes `span` continue the trace of incoming HTTP headers
/// (`traceparent`/`tracestate`). Call before the span is entered.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when no trace layer is installed: then there is
        // nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// Makes `span` continue the trace of a Kafka record's headers.
pub fn continue_from_pairs(span: &tracing::Span, headers: &[(String, String)]) {
    let parent = TraceContextPropagator::new().extract(&PairsExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Writes the current span's trace context into outgoing HTTP headers,
/// replacing what the caller sent. Without trace export nothing is written,
/// so the caller's own `traceparent` passes through unchanged.
pub fn inject_headers(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// The current span's trace context as record headers (`traceparent`, and
/// `tracestate` when there is one); empty without trace export.
pub fn current_context_pairs() -> Vec<(String, String)> {
    let cx = tracing::Span::current().context();
    let mut out = Vec::new();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut PairsInjector(&mut out));
    }
    out
}

/// `span`'s trace context as record headers; empty without trace export.
pub fn context_pairs_of(span: &tracing::Span) -> Vec<(String, String)> {
    let cx = span.context();
    let mut out = Vec::new();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut PairsInjector(&mut out));
    }
    out
}

/// A span for handling one Kafka record, continuing the trace its headers
/// carry.
pub fn record_span(
    name: &'static str,
    what: &str,
    topic: &str,
    headers: &[(String, String)],
) -> tracing::Span {
    // Values from a record are logged: only plain, short ones.
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .filter(|v| v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("")
    };
    let span = tracing::info_span!(
        "record",
        otel.name = %format!("{name} {what}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = %topic,
        messaging.message.id = %header("ce_id"),
        request_id = %header("x-request-id"),
    );
    continue_from_pairs(&span, headers);
    span
}

/// The current trace id (32 hex digits), when traces are on.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
