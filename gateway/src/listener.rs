//! Accept loop for both listeners, with the connection-level bounds axum's
//! `serve` leaves open: header read timeout, header count and size, HTTP/2
//! stream limits, and a graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// A client must send its request headers within this time (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most header fields in one HTTP/1 request.
const MAX_HEADERS: usize = 100;
/// Read buffer for HTTP/1, which bounds the request line plus headers.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// HTTP/2 header list size and concurrent streams per connection.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
const MAX_H2_STREAMS: u32 = 256;
/// Streams a client may open and reset before the server accepted them
/// (the "rapid reset" flood), and streams the server may reset for a
/// client's protocol errors, before the connection is closed with
/// ENHANCE_YOUR_CALM. Written out rather than left to the defaults.
const MAX_H2_PENDING_RESETS: usize = 20;
const MAX_H2_LOCAL_ERROR_RESETS: usize = 1024;

/// HTTP/2 connections are pinged at this interval and closed when a ping is
/// not answered within the timeout.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` turns true, then stops
/// accepting and waits for open connections to finish their requests. At
/// most `max_connections` are open at once; past that, new connections
/// wait in the kernel's accept queue. With `tls`, every connection is TLS
/// (the handshake bounded like the request headers), HTTP/2 or HTTP/1.1 by
/// ALPN.
pub fn serve(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_HEADER_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_H2_HEADER_LIST)
            .max_concurrent_streams(MAX_H2_STREAMS)
            .max_pending_accept_reset_streams(MAX_H2_PENDING_RESETS)
            .max_local_error_reset_streams(MAX_H2_LOCAL_ERROR_RESETS)
            .keep_alive_interval(H2_KEEPALIVE)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
        let graceful = GracefulShutdown::new();
        loop {
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => slot,
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
            };
            let Ok(slot) = slot else { break };
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Typically EMFILE: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let service = router
                        .clone()
                        .map_request(move |mut req: Request<Incoming>| {
                            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                            req
                        });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        // hyper-util's protocol detection waits for the first
                        // bytes without a deadline; a silent client gets none.
                        let mut first = [0u8; 1];
                        if !matches!(tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await, Ok(Ok(n)) if n > 0) {
                            return;
                        }
                        let service = TowerToHyperService::new(service);
                        let result = match tls {
                            None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                            Some(acceptor) => {
                                let stream = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return;
                                    }
                                };
                                watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
            }
        }
        drop(listener);
        graceful.shutdown().await;
    })
}
