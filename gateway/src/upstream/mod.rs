//! Calls to the legacy services: one pooled HTTP client, header hygiene
//! (hop-by-hop removal, X-Forwarded-*), and upstream failures mapped to
//! 502/504.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::problem::GatewayError;

mod guard;
pub use guard::Guard;

/// The pooled client shared by every upstream: `http://` and `https://`.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// Builds the pooled client trusting the system's certificate store.
pub fn client() -> HttpClient {
    let tls = crate::tls::client(&crate::config::UpstreamTls::default()).unwrap_or_else(|e| {
        // Without the system store, https upstreams fail their handshakes
        // (502, logged) and http ones work.
        tracing::warn!(error = %e, "no TLS trust store; https upstreams will fail");
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    client_with(tls)
}

/// The client for `[upstream_tls]`, for tools that have no way to stop on
/// an unusable file: the error is logged and the system store is used (an
/// `https://` call then fails its handshake and says so).
pub fn client_for_or_default(tls: &crate::config::UpstreamTls) -> HttpClient {
    client_for(tls).unwrap_or_else(|e| {
        tracing::error!(error = %e, "upstream_tls is unusable; using the system trust store only");
        client()
    })
}

/// Builds the pooled client with `[upstream_tls]`.
pub fn client_for(tls: &crate::config::UpstreamTls) -> Result<HttpClient, String> {
    crate::tls::client(tls).map(client_with)
}

fn client_with(tls: rustls::ClientConfig) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new())
        // Below common legacy keep-alive settings, so the pool rarely hands
        // out a connection the server is about to close.
        .pool_idle_timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// A legacy service as routes see it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name from `routes.toml`.
    pub name: String,
    /// `scheme://authority`.
    origin: String,
    /// Path prefix from the configured URL, without a trailing slash.
    prefix: String,
    /// Time allowed until response headers.
    pub timeout: Duration,
    /// Concurrency limit and circuit breaker, shared by every route of the
    /// table that calls this service (a reload starts them afresh).
    pub guard: Arc<Guard>,
}

impl Upstream {
    /// From config; the URL was validated before.
    pub fn new(name: &str, config: &UpstreamConfig) -> Result<Self, String> {
        let uri: Uri = config.url.parse().map_err(|e| format!("{e}"))?;
        let scheme = uri.scheme_str().unwrap_or("http");
        let authority = uri
            .authority()
            .ok_or_else(|| format!("url {:?} has no host", config.url))?;
        Ok(Self {
            name: name.to_string(),
            origin: format!("{scheme}://{authority}"),
            prefix: uri.path().trim_end_matches('/').to_string(),
            timeout: Duration::from_millis(config.timeout_ms),
            guard: Arc::new(Guard::new(config)),
        })
    }

    fn target(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        format!("{}{}{}", self.origin, self.prefix, path_and_query)
            .parse()
            .map_err(|e| GatewayError::Internal(format!("upstream {} uri: {e}", self.name)))
    }

    /// Sends the request and returns the legacy response with its body still
    /// streaming.
    pub async fn call(
        &self,
        client: &HttpClient,
        metrics: &Metrics,
        mut request: Request<Body>,
        forwarding: Forwarding,
    ) -> Result<Response<Body>, GatewayError> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        // HTTP/2 clients send :authority instead of Host.
        let authority = request.uri().authority().map(|a| a.as_str().to_string());
        *request.uri_mut() = self.target(&path_and_query)?;
        *request.version_mut() = Version::HTTP_11;
        prepare_request_headers(request.headers_mut(), authority.as_deref(), forwarding);

        let span = tracing::info_span!(
            "upstream",
            otel.name = %format!("{} {}", request.method(), self.name),
            otel.kind = "client",
            upstream = %self.name,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        {
            let _in = span.enter();
            crate::telemetry::inject_headers(request.headers_mut());
        }
        // Refused here, the call costs the legacy service nothing: no queue
        // builds up behind a slow service, and a failing one gets a rest.
        let _permit = self
            .guard
            .admit()
            .map_err(|why| GatewayError::UpstreamShed {
                upstream: self.name.clone(),
                why,
            })?;
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            self.timeout,
            tracing::Instrument::instrument(client.request(request), span.clone()),
        )
        .await;
        match &outcome {
            Ok(Ok(r)) => {
                span.record("http.response.status_code", r.status().as_u16());
                if r.status().is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            _ => {
                span.record("otel.status_code", "ERROR");
            }
        }
        metrics
            .upstream_latency
            .with_label_values(&[&self.name])
            .observe(started.elapsed().as_secs_f64());
        self.guard.record(match &outcome {
            Ok(Ok(r)) => Some(!r.status().is_server_error()),
            // The caller's upload broke or was too large: not the service's fault.
            Ok(Err(e)) if client_body_failed(e) || body_limit_exceeded(e) => None,
            _ => Some(false),
        });
        let response = match outcome {
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    upstream: self.name.clone(),
                    timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
            Ok(Err(e)) => return Err(self.classify(&e)),
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    fn classify(&self, e: &hyper_util::client::legacy::Error) -> GatewayError {
        if body_limit_exceeded(e) {
            return GatewayError::BodyTooLarge { limit: 0 };
        }
        let detail = error_chain(e);
        if client_body_failed(e) {
            // The caller's upload broke, not the legacy service.
            return GatewayError::BodyRead(detail);
        }
        if e.is_connect() {
            GatewayError::UpstreamConnect {
                upstream: self.name.clone(),
                detail,
            }
        } else {
            GatewayError::UpstreamProtocol {
                upstream: self.name.clone(),
                detail,
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn body_limit_exceeded(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_user() {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// Headers that describe one connection and must not be forwarded
/// (RFC 9110 §7.6.1, plus the legacy proxy ones).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
}

// Names as constants: a `&str` key is parsed (and a custom name allocated)
// on every use, on every request.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Who is calling, for the X-Forwarded-* headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding {
    /// The peer address of the client connection.
    pub client_addr: Option<SocketAddr>,
    /// Keep (and extend) X-Forwarded-* the client sent: only when a trusted
    /// proxy sits in front of the gateway (`server.trust_forwarded_headers`).
    pub trust_incoming: bool,
    /// The client reached the gateway over TLS.
    pub https: bool,
}

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Hop-by-hop removal plus X-Forwarded-For/-Proto/-Host; the upstream gets
/// its own Host. Untrusted forwarding headers are replaced, not appended to.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    authority: Option<&str>,
    forwarding: Forwarding,
) {
    strip_hop_by_hop(headers);
    if !forwarding.trust_incoming {
        for name in [XFF, XFH, XFP, FORWARDED] {
            headers.remove(name);
        }
    }
    let host = headers
        .remove(header::HOST)
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a).ok()));
    if let Some(host) = host {
        if !headers.contains_key(XFH) {
            headers.insert(XFH, host);
        }
    }
    if let Some(addr) = forwarding.client_addr {
        let ip = addr.ip().to_string();
        let prior: Vec<&str> = headers
            .get_all(XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let value = if prior.is_empty() {
            ip
        } else {
            format!("{}, {ip}", prior.join(", "))
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(XFF, v);
        }
    }
    if !headers.contains_key(XFP) {
        headers.insert(
            XFP,
            HeaderValue::from_static(if forwarding.https { "https" } else { "http" }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(left, vec!["x-end-to-end"]);
    }

    fn client(trust_incoming: bool) -> Forwarding {
        Forwarding {
            client_addr: Some(SocketAddr::from(([192, 0, 2, 7], 5555))),
            trust_incoming,
            https: false,
        }
    }

    fn spoofed() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        h.append(XFF, HeaderValue::from_static("10.0.0.1"));
        h.append(XFF, HeaderValue::from_static("10.0.0.2"));
        h.insert(XFH, HeaderValue::from_static("evil.example"));
        h.insert(XFP, HeaderValue::from_static("https"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        h
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = spoofed();
        prepare_request_headers(&mut h, None, client(false));
        assert_eq!(h[XFF], "192.0.2.7");
        assert_eq!(h[XFH], "shop.example");
        assert_eq!(h[XFP], "http");
        assert!(h.get("forwarded").is_none());
        assert!(h.get(header::HOST).is_none());
    }

    #[test]
    fn trusted_forwarding_headers_are_kept_and_extended() {
        let mut h = spoofed();
        prepare_request_headers(&mut h, None, client(true));
        assert_eq!(h[XFF], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(h[XFH], "evil.example");
        assert_eq!(h[XFP], "https");
    }

    #[test]
    fn http2_authority_becomes_the_forwarded_host() {
        let mut h = HeaderMap::new();
        prepare_request_headers(&mut h, Some("shop.example:8443"), client(false));
        assert_eq!(h[XFH], "shop.example:8443");
    }

    #[test]
    fn prefix_of_the_upstream_url_is_kept() {
        let u = Upstream::new(
            "orders",
            &UpstreamConfig {
                url: "http://127.0.0.1:7001/legacy/".into(),
                timeout_ms: 10,
                max_concurrency: 256,
                breaker_failures: 5,
                breaker_open_ms: 5000,
            },
        )
        .expect("valid");
        assert_eq!(
            u.target("/orders/1?x=2").expect("uri").to_string(),
            "http://127.0.0.1:7001/legacy/orders/1?x=2"
        );
    }
}
