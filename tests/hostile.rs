//! Hostile HTTP/1.1 input, written byte by byte on raw sockets: request
//! smuggling attempts, malformed framing, oversize headers and bodies,
//! hop-by-hop and forwarding headers, path tricks, and a slowloris client.
//! The legacy service is a raw TCP stub that records every complete request
//! it receives, so each case can assert what reached it, not only what the
//! caller was answered.

#![allow(clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::{config_text, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A legacy service that records each complete request (head and body, as
/// received) and answers `200 ok`.
struct Stub {
    url: String,
    received: Arc<Mutex<Vec<String>>>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Stub {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        // One complete request at the front of `buf`?
                        if let Some(end) = find(&buf, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let body_start = end + 4;
                            let total = if head.contains("transfer-encoding: chunked") {
                                find(&buf[body_start..], b"0\r\n\r\n").map(|i| body_start + i + 5)
                            } else {
                                let len = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                                    .unwrap_or(0);
                                (buf.len() >= body_start + len).then_some(body_start + len)
                            };
                            if let Some(total) = total {
                                let request: Vec<u8> = buf.drain(..total).collect();
                                log.lock()
                                    .expect("log")
                                    .push(String::from_utf8_lossy(&request).into_owned());
                                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if socket.write_all(answer).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Self { url, received }
    }

    fn requests(&self) -> Vec<String> {
        self.received.lock().expect("log").clone()
    }
}

async fn gateway(stub: &Stub) -> TestGateway {
    TestGateway::start(&config_text(
        "embedded",
        5_000,
        &format!(
            r#"
[upstreams.legacy]
url = "{}"

[[routes]]
name = "echo"
method = "POST"
path = "/echo"
upstream = "legacy"
mode = "passthrough"

[[routes]]
name = "items"
method = "GET"
path = "/items/{{id}}"
upstream = "legacy"
mode = "passthrough"

[[routes]]
name = "public"
method = "GET"
path = "/public/{{*rest}}"
upstream = "legacy"
mode = "passthrough"
"#,
            stub.url
        ),
    ))
    .await
    .expect("gateway starts")
}

/// Writes `raw` to the gateway's public port and reads what comes back
/// until the gateway closes the connection or 5 s pass.
async fn exchange(gw: &TestGateway, raw: &[u8]) -> String {
    let addr = gw.base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        if response_complete(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A whole response with a `content-length` body is there (a keep-alive
/// connection stays open after it).
fn response_complete(out: &[u8]) -> bool {
    let Some(end) = find(out, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| out.len() >= end + 4 + len)
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One framing header, and not two requests in one.
fn unambiguous(request: &str) -> bool {
    let head = request
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_lowercase();
    let cl = head.matches("\r\ncontent-length:").count();
    let te = head.matches("\r\ntransfer-encoding:").count();
    cl + te <= 1
}

#[tokio::test]
async fn content_length_with_transfer_encoding_never_reaches_the_legacy_service_ambiguous() {
    let stub = Stub::start().await;
    let gw = gateway(&stub).await;
    let answer = exchange(
        &gw,
        b"POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /items/smuggled HTTP/1.1\r\nHost: shop\r\n\r\n",
    )
    .await;
    let received = stub.requests();
    println!(
        "hostile[cl+te]: answered {} to the caller; the legacy service received {} request(s)",
        status(&answer),
        received.len()
    );
    assert_ne!(status(&answer), 0, "the caller gets an answer");
    for r in &received {
        assert!(unambiguous(r), "ambiguous request forwarded:\n{r}");
    }
}

#[tokio::test]
async fn malformed_framing_is_refused_before_the_legacy_service() {
    let stub = Stub::start().await;
    let gw = gateway(&stub).await;
    for (case, raw) in [
        (
            "duplicate content-length",
            &b"POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nContent-Length: 7\r\n\r\nabcdefg"[..],
        ),
        (
            "obs-fold",
            &b"POST /echo HTTP/1.1\r\nHost: shop\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n"[..],
        ),
        (
            "bad chunk size",
            &b"POST /echo HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        ),
        (
            "content-length not a number",
            &b"POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 3x\r\n\r\nabc"[..],
        ),
    ] {
        let answer = exchange(&gw, raw).await;
        let code = status(&answer);
        println!("hostile[{case}]: {code}");
        assert!(
            code == 0 || (400..500).contains(&code),
            "{case}: answered {code}:\n{answer}"
        );
    }
    assert_eq!(
        stub.requests(),
        Vec::<String>::new(),
        "no malformed request reached the legacy service whole"
    );
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431_and_oversize_bodies_413() {
    let stub = Stub::start().await;
    let gw = gateway(&stub).await;

    let mut many = String::from("GET /items/1 HTTP/1.1\r\nHost: shop\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let code = status(&exchange(&gw, many.as_bytes()).await);
    println!("hostile[150 headers]: {code}");
    assert_eq!(code, 431);

    let large = format!(
        "GET /items/1 HTTP/1.1\r\nHost: shop\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let code = status(&exchange(&gw, large.as_bytes()).await);
    println!("hostile[70 KiB header]: {code}");
    assert_eq!(code, 431);

    // max_body_bytes is 4096 in the test config.
    let declared = format!(
        "POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 10000\r\n\r\n{}",
        "a".repeat(10_000)
    );
    let code = status(&exchange(&gw, declared.as_bytes()).await);
    println!("hostile[declared 10000-byte body]: {code}");
    assert_eq!(code, 413);

    let mut chunked =
        String::from("POST /echo HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..10 {
        chunked.push_str(&format!("3e8\r\n{}\r\n", "b".repeat(1000)));
    }
    chunked.push_str("0\r\n\r\n");
    let answer = exchange(&gw, chunked.as_bytes()).await;
    let code = status(&answer);
    println!("hostile[chunked 10000-byte body]: {code}");
    assert!(code == 413 || code == 502, "answered {code}:\n{answer}");
    assert!(
        stub.requests().iter().all(|r| r.len() < 4096 + 1024),
        "no oversize body reached the legacy service whole"
    );
}

#[tokio::test]
async fn hop_by_hop_and_spoofed_forwarding_headers_do_not_reach_the_legacy_service() {
    let stub = Stub::start().await;
    let gw = gateway(&stub).await;
    let answer = exchange(
        &gw,
        b"GET /items/1 HTTP/1.1\r\nHost: shop\r\nConnection: close, X-Secret\r\nX-Secret: s3\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-For: 203.0.113.66\r\nX-Forwarded-Host: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    let received = stub.requests();
    assert_eq!(received.len(), 1);
    let head = received[0].to_lowercase();
    for gone in [
        "x-secret:",
        "keep-alive:",
        "\r\nte:",
        "proxy-authorization:",
        "203.0.113.66",
        "evil.example",
    ] {
        assert!(
            !head.contains(gone),
            "{gone} reached the legacy service:\n{head}"
        );
    }
    assert!(
        head.contains("x-forwarded-for: 127.0.0.1"),
        "the socket address is forwarded:\n{head}"
    );
}

#[tokio::test]
async fn path_tricks_cannot_reach_another_path_of_the_legacy_service() {
    let stub = Stub::start().await;
    let gw = gateway(&stub).await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/..%2Fadmin",
        "/public/a%2fb",
        "/public/..;/admin",
        "/public//admin",
        "/public/.%3b/admin",
        "/items/1/../../admin",
        "/public/..\\admin",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n");
        let code = status(&exchange(&gw, raw.as_bytes()).await);
        println!("hostile[path {path}]: {code}");
        assert!((400..500).contains(&code), "{path}: answered {code}");
    }
    assert_eq!(
        stub.requests(),
        Vec::<String>::new(),
        "nothing reached the legacy service"
    );

    let code = status(
        &exchange(
            &gw,
            b"GET /public/docs/a.txt HTTP/1.1\r\nHost: shop\r\n\r\n",
        )
        .await,
    );
    assert_eq!(code, 200, "an ordinary path still works");
    assert!(stub.requests()[0].starts_with("GET /public/docs/a.txt HTTP/1.1\r\n"));
}

/// A client that sends its headers one byte a second is cut off by the
/// header read timeout (10 s), without ever reaching the legacy service.
#[tokio::test]
async fn a_slowloris_client_is_disconnected_by_the_header_read_timeout() {
    let stub = Stub::start().await;
    let gw = gateway(&stub).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"GET /items/1 HTTP/1.1\r\nHost: shop\r\nX-Slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        loop {
            if socket.write_all(b"a").await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                // An error response (408) before the close is fine too.
                Ok(Ok(_)) => {}
                Err(_) => {}
            }
        }
    })
    .await;
    println!(
        "hostile[slowloris]: connection closed after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        closed.is_ok(),
        "the slow client was still connected after 20 s"
    );
    assert_eq!(stub.requests(), Vec::<String>::new());
}

#[tokio::test]
async fn forwarding_headers_are_kept_only_from_a_trusted_proxy() {
    let stub = Stub::start().await;
    let request = b"GET /items/1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.66\r\n\r\n";
    let with_proxies = |proxies: &str| {
        config_text(
            "embedded",
            5_000,
            &format!(
                "[upstreams.legacy]\nurl = \"{}\"\n\n[[routes]]\nname = \"items\"\nmethod = \"GET\"\npath = \"/items/{{id}}\"\nupstream = \"legacy\"\nmode = \"passthrough\"\n",
                stub.url
            ),
        )
        .replace(
            "max_body_bytes = 4096",
            &format!("max_body_bytes = 4096\ntrusted_proxies = [{proxies}]"),
        )
    };
    // The test connects from 127.0.0.1: a trusted load balancer.
    let gw = TestGateway::start(&with_proxies("\"127.0.0.1\""))
        .await
        .expect("gateway starts");
    assert_eq!(status(&exchange(&gw, request).await), 200);
    gw.stop().await;
    // Only 10.0.0.0/8 is trusted: 127.0.0.1 is a client like any other.
    let gw = TestGateway::start(&with_proxies("\"10.0.0.0/8\""))
        .await
        .expect("gateway starts");
    assert_eq!(status(&exchange(&gw, request).await), 200);
    gw.stop().await;
    let received: Vec<String> = stub.requests().iter().map(|r| r.to_lowercase()).collect();
    assert_eq!(received.len(), 2);
    assert!(
        received[0].contains("x-forwarded-for: 203.0.113.66, 127.0.0.1"),
        "from a trusted proxy, the chain is kept and extended:\n{}",
        received[0]
    );
    assert!(
        !received[1].contains("203.0.113.66") && received[1].contains("x-forwarded-for: 127.0.0.1"),
        "from another peer, the claim is replaced:\n{}",
        received[1]
    );
}

#[tokio::test]
async fn the_host_header_reaches_no_other_route_or_service() {
    let stub = Stub::start().await;
    let gw = gateway(&stub).await;
    let admin = gw.admin.trim_start_matches("http://").to_string();
    // Asking the public port for the admin API with the admin port's Host.
    let answer = exchange(
        &gw,
        format!("GET /admin/routes HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), 404, "{answer}");
    assert!(
        !answer.contains("\"routes\""),
        "the admin API answered: {answer}"
    );
    // A route called with a foreign Host goes to its own service, with the
    // service's own Host.
    let answer = exchange(
        &gw,
        b"GET /items/1 HTTP/1.1\r\nHost: internal-billing.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    let received = stub.requests();
    assert_eq!(
        received.len(),
        1,
        "only the route's request reached the stub"
    );
    let stub_authority = stub.url.trim_start_matches("http://").to_lowercase();
    assert!(
        received[0]
            .to_lowercase()
            .contains(&format!("\r\nhost: {stub_authority}\r\n")),
        "the service gets its own Host:\n{}",
        received[0]
    );
}

/// A legacy service that holds each request for `hold`, counting how many
/// it holds at once.
async fn counting_stub(hold: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::clone(&peak);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let (now, peak) = (Arc::clone(&now), Arc::clone(&peak));
                    async move {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(hold).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(hyper::body::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn an_http2_stream_flood_is_bounded_per_connection() {
    use std::sync::atomic::Ordering;
    let (url, peak) = counting_stub(Duration::from_millis(300)).await;
    // Generous service limits, so only the per-connection stream limit
    // (256) bounds what one connection gets in flight.
    let gw = TestGateway::start(&config_text(
        "embedded",
        5_000,
        &format!(
            "[upstreams.legacy]\nurl = \"{url}\"\nmax_concurrency = 10000\n\n[[routes]]\nname = \"items\"\nmethod = \"GET\"\npath = \"/items/{{id}}\"\nupstream = \"legacy\"\nmode = \"passthrough\"\n"
        ),
    ))
    .await
    .expect("gateway starts");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let sent = 1_000;
    let answers = futures::future::join_all((0..sent).map(|i| {
        let (h2, base) = (h2.clone(), gw.base.clone());
        async move {
            h2.get(format!("{base}/items/{i}"))
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map(|r| (r.status().as_u16(), r.version()))
        }
    }))
    .await;
    let ok = answers
        .iter()
        .filter(|a| matches!(a, Ok((200, v)) if *v == reqwest::Version::HTTP_2))
        .count();
    let peak = peak.load(Ordering::SeqCst);
    println!(
        "hostile[h2-flood]: {sent} streams on one HTTP/2 connection: {ok} answered 200, at most {peak} at the service at once (limit 256 per connection)"
    );
    assert!(
        peak <= 256,
        "{peak} requests of one connection in flight at once"
    );
    assert_eq!(
        ok,
        sent,
        "every stream answered once admitted: {:?}",
        answers.iter().find(|a| !matches!(a, Ok((200, _))))
    );
    // And the gateway still serves others.
    let r = reqwest::get(format!("{}/healthz", gw.admin))
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
}
