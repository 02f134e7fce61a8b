//! TLS: the public listener with a test certificate (HTTP/1.1 and HTTP/2 by
//! ALPN), its reload when the files change (and a broken pair refused), and
//! an `https://` upstream trusted through `upstream_tls.ca_file`. The
//! certificates are made at test time by a test CA (rcgen).

#![allow(clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use gateway_tests::{wait_until, TestGateway};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "gateway test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self { cert, key }
    }

    /// A server certificate for 127.0.0.1 and localhost, named `cn`;
    /// returns (certificate PEM, key PEM).
    fn issue(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
            .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, dir: &Path, cn: &str) {
        let (cert, key) = self.issue(cn);
        // The key first: a reload that sees the new certificate with the old
        // key is refused, and the next look finds the pair.
        std::fs::write(dir.join("tls.key"), key).expect("key file");
        std::fs::write(dir.join("tls.crt"), cert).expect("cert file");
    }
}

fn client(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).expect("CA for reqwest"),
        )
        .tls_info(true)
        .build()
        .expect("client")
}

/// The common name of the certificate the server showed.
fn served_cn(r: &reqwest::Response) -> String {
    let der = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer certificate")
        .to_vec();
    // Find the CN among the DER bytes: the test names are ASCII and unique.
    ["first-certificate", "second-certificate"]
        .iter()
        .find(|n| der.windows(n.len()).any(|w| w == n.as_bytes()))
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// A gateway with one passthrough route to `upstream`; `extra` adds TLS
/// tables.
fn passthrough(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[kafka]
bootstrap = "embedded"

[schemas]
dir = "{schemas}"

[upstreams.legacy]
url = "{upstream}"

[[routes]]
name = "get-order"
method = "GET"
path = "/orders/{{id}}"
upstream = "legacy"
mode = "passthrough"

{extra}
"#,
        schemas = gateway_tests::repo_root().join("schemas").display(),
    )
}

/// [`passthrough`] serving HTTPS with the pair in `dir`, looked at every second.
fn tls_config(legacy: &str, dir: &Path) -> String {
    passthrough(
        legacy,
        &format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_interval_secs = 1\n",
            dir.join("tls.crt").display(),
            dir.join("tls.key").display()
        ),
    )
}

#[tokio::test]
async fn the_public_listener_speaks_tls_and_reloads_its_certificate() {
    let legacy = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/orders/7"))
        .and(header("x-forwarded-proto", "https"))
        .respond_with(ResponseTemplate::new(200).set_body_string("order 7"))
        .mount(&legacy)
        .await;
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("tempdir");
    ca.write(certs.path(), "first-certificate");
    let gw = TestGateway::start(&tls_config(&legacy.uri(), certs.path()))
        .await
        .expect("gateway with TLS starts");
    let https = gw.base.replace("http://", "https://");
    let http = client(&ca);

    let r = http
        .get(format!("{https}/orders/7"))
        .send()
        .await
        .expect("https answer");
    assert_eq!(
        r.status(),
        200,
        "passthrough over TLS, X-Forwarded-Proto https"
    );
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(served_cn(&r), "first-certificate");
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).expect("CA"))
        .http1_only()
        .build()
        .expect("client");
    let r = h1
        .get(format!("{https}/orders/7"))
        .send()
        .await
        .expect("https/1.1 answer");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.text().await.expect("body"), "order 7");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("{}/orders/7", gw.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP on the TLS listener: {plain:?}");

    // A broken pair is refused and the first certificate stays in use.
    std::fs::write(certs.path().join("tls.crt"), "not a certificate").expect("write");
    wait_until(
        Duration::from_secs(20),
        "the broken pair refused",
        || async {
            gw.metric("gateway_tls_certificate_reloads_total{result=\"refused\"}")
                .await
                .unwrap_or(0.0)
                >= 1.0
        },
    )
    .await
    .expect("refused");
    let r = client(&ca)
        .get(format!("{https}/orders/7"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(served_cn(&r), "first-certificate");

    // A new pair is picked up without a restart.
    ca.write(certs.path(), "second-certificate");
    wait_until(
        Duration::from_secs(20),
        "the new certificate served",
        || async {
            // A fresh client: a fresh handshake.
            client(&ca)
                .get(format!("{https}/orders/7"))
                .send()
                .await
                .is_ok_and(|r| served_cn(&r) == "second-certificate")
        },
    )
    .await
    .expect("reloaded");
    gw.stop().await;
}

#[tokio::test]
async fn an_https_upstream_is_trusted_through_the_configured_ca() {
    let legacy = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/orders/7"))
        .respond_with(ResponseTemplate::new(200).set_body_string("order 7"))
        .mount(&legacy)
        .await;
    let ca = TestCa::new();
    let certs = tempfile::tempdir().expect("tempdir");
    ca.write(certs.path(), "first-certificate");
    // The TLS gateway stands in for a legacy service behind HTTPS.
    let front = TestGateway::start(&tls_config(&legacy.uri(), certs.path()))
        .await
        .expect("https service starts");
    let https_upstream = front.base.replace("http://", "https://");
    let ca_file = certs.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).expect("ca file");
    let config = |with_ca: bool| {
        let ca = format!("[upstream_tls]\nca_file = \"{}\"\n", ca_file.display());
        passthrough(&https_upstream, if with_ca { &ca } else { "" })
    };
    let gw = TestGateway::start(&config(true))
        .await
        .expect("gateway starts");
    let r = gw
        .http
        .get(format!("{}/orders/7", gw.base))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "proxied over TLS to the https upstream");
    assert_eq!(r.text().await.expect("body"), "order 7");
    gw.stop().await;

    // Without the CA, the upstream's certificate is not trusted: 502.
    let gw = TestGateway::start(&config(false))
        .await
        .expect("gateway starts");
    let r = gw
        .http
        .get(format!("{}/orders/7", gw.base))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        r.status(),
        502,
        "an untrusted certificate is an upstream failure"
    );
    gw.stop().await;
    front.stop().await;
}
