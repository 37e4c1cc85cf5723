//! The admin listener: `/metrics`, `/healthz` and `/readyz` over plain HTTP/1.1.
//!
//! It is meant for a loopback or pod address that only the node's own
//! monitoring reaches, never a public entrypoint; it has no authentication and
//! serves nothing that is a secret. It reads the daemon's state through
//! [`AdminSource`] on every request and keeps none of its own, so a scrape
//! always sees the state of that moment. Because a scraper that hangs must
//! not pin the daemon, connections are capped, each must send its request
//! head within a few seconds and is closed after one response or a fixed
//! deadline, whichever comes first. What a metric means is [`crate::metrics`]'
//! business, not this module's.
use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use crate::{filter::Counters, metrics, status::DaemonStatus};

/// What the admin listener asks the daemon on each request.
pub trait AdminSource: Send + Sync + 'static {
    fn status(&self) -> DaemonStatus;
    /// `None` when the kernel maps cannot be read.
    fn counters(&self) -> Option<Counters>;
    /// Ok when ready; `Err(reasons)` lists what is missing, e.g. "not armed
    /// on eth1", "set `admins` not loaded".
    fn readiness(&self) -> Result<(), Vec<String>>;
    /// The whole exposition for `/metrics`; by default the status and the
    /// counters alone. The daemon answers from its one registry.
    fn metrics(&self) -> String {
        metrics::render(&self.status(), self.counters().as_ref())
    }
}

/// How much a client may take from the listener.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Connections served at once; beyond it clients wait in the listen
    /// backlog until a slot frees.
    max_connections: usize,
    /// Time a client has to send its whole request head.
    header_read_timeout: Duration,
    /// Time after which a connection is closed whatever it is doing (a
    /// client that does not read its response, for one).
    connection_timeout: Duration,
    /// Time open connections get to finish after shutdown; the rest are cut.
    drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets open
/// connections finish for a few seconds and returns.
///
/// GET and HEAD only (405 with `Allow` otherwise): `/metrics` ->
/// [`metrics::render`]; `/healthz` -> 200 `ok`; `/readyz` -> 200 `ready` or
/// 503 with one reason per line; anything else 404. Every response closes its
/// connection (no keep-alive), which bounds what one client can hold.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, source, shutdown, Limits::default()).await
}

async fn serve_with(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(%addr, "admin listener serving");
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow with every scrape.
        while connections.try_join_next().is_some() {}
        // Take a slot before accepting: past the cap the kernel holds new
        // clients in the backlog instead of us holding their sockets.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot?,
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(
                    stream,
                    peer,
                    Arc::clone(&source),
                    limits,
                    stopping.clone(),
                    slot,
                ));
            }
            Err(error) => {
                // Out of file descriptors and the like: back off rather than
                // spin, and keep serving once it passes.
                tracing::warn!(%error, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    drop(listener);
    stop.send_replace(true);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "admin listener: cutting connections still open after the drain timeout"
        );
        connections.shutdown().await;
    }
    tracing::debug!("admin listener stopped");
    Ok(())
}

/// Serves one connection until it is done, its deadline passes or shutdown
/// (then the request in flight, if any, is finished first).
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    source: Arc<dyn AdminSource>,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let response = respond(
            source.as_ref(),
            request.method(),
            request.uri().path(),
            accept,
        );
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let deadline = tokio::time::sleep(limits.connection_timeout);
    tokio::pin!(deadline);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "admin connection ended with an error");
                }
                return;
            }
            // An error means the listener is gone, which is shutdown too.
            _ = stopping.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut deadline => {
                tracing::debug!(%peer, timeout = ?limits.connection_timeout, "admin connection cut at its deadline");
                return;
            }
        }
    }
}

/// The routes, known before the method is looked at, so an unknown path is
/// 404 whatever the method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Healthz,
    Readyz,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        match path {
            "/metrics" => Some(Route::Metrics),
            "/healthz" => Some(Route::Healthz),
            "/readyz" => Some(Route::Readyz),
            _ => None,
        }
    }
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// `accept`: the request's `Accept` header, which picks the exposition
/// format of `/metrics` (OpenMetrics unless it asks for `text/plain` alone).
fn respond(
    source: &dyn AdminSource,
    method: &Method,
    path: &str,
    accept: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(route) = Route::of(path) else {
        return response(StatusCode::NOT_FOUND, TEXT_PLAIN, "not found\n".into());
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = response(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT_PLAIN,
            "method not allowed: use GET or HEAD\n".into(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match route {
        Route::Metrics if metrics::text_format::wants_text(accept) => response(
            StatusCode::OK,
            metrics::text_format::CONTENT_TYPE,
            metrics::text_format::from_openmetrics(&source.metrics()),
        ),
        Route::Metrics => response(StatusCode::OK, metrics::CONTENT_TYPE, source.metrics()),
        Route::Healthz => response(StatusCode::OK, TEXT_PLAIN, "ok\n".into()),
        Route::Readyz => match source.readiness() {
            Ok(()) => response(StatusCode::OK, TEXT_PLAIN, "ready\n".into()),
            Err(reasons) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT_PLAIN,
                not_ready_body(&reasons),
            ),
        },
    }
}

/// One reason per line, so a probe log or `curl` shows each on its own.
fn not_ready_body(reasons: &[String]) -> String {
    if reasons.is_empty() {
        return "not ready\n".into();
    }
    reasons
        .iter()
        .map(|reason| format!("{}\n", reason.trim().replace(['\r', '\n'], " ")))
        .collect()
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Probes and scrapes want the state of now, never a cached copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        sync::oneshot,
        task::JoinHandle,
    };
    use xdpgate_common::{Counter, Family, Reason};

    use super::*;
    use crate::status::SetStatus;

    struct FakeSource {
        readiness: Mutex<Result<(), Vec<String>>>,
    }

    impl FakeSource {
        fn status_value() -> DaemonStatus {
            DaemonStatus {
                version: "9.9.9".into(),
                started_at: 1_700_000_000,
                sets: vec![SetStatus {
                    name: "admins".into(),
                    size: 3,
                    ..SetStatus::default()
                }],
                ..DaemonStatus::default()
            }
        }

        fn counters_value() -> Counters {
            Counters::from_fn(|reason, family| match (reason, family) {
                (Reason::DropDeny, Family::Ipv6) => Counter {
                    packets: 7,
                    bytes: 700,
                },
                _ => Counter::default(),
            })
        }
    }

    impl AdminSource for FakeSource {
        fn status(&self) -> DaemonStatus {
            FakeSource::status_value()
        }
        fn counters(&self) -> Option<Counters> {
            Some(FakeSource::counters_value())
        }
        fn readiness(&self) -> Result<(), Vec<String>> {
            self.readiness.lock().expect("readiness lock").clone()
        }
    }

    struct Server {
        addr: SocketAddr,
        source: Arc<FakeSource>,
        shutdown: Option<oneshot::Sender<()>>,
        task: JoinHandle<anyhow::Result<()>>,
    }

    impl Server {
        async fn start(limits: Limits) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let source = Arc::new(FakeSource {
                readiness: Mutex::new(Ok(())),
            });
            let (shutdown, stop) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_with(
                listener,
                source.clone(),
                async move {
                    let _ = stop.await;
                },
                limits,
            ));
            Server {
                addr,
                source,
                shutdown: Some(shutdown),
                task,
            }
        }

        /// Signals shutdown and waits (bounded) for `serve` to return.
        async fn stop(mut self) -> anyhow::Result<()> {
            if let Some(shutdown) = self.shutdown.take() {
                let _ = shutdown.send(());
            }
            tokio::time::timeout(Duration::from_secs(5), &mut self.task)
                .await
                .expect("serve returns after shutdown")
                .expect("serve task did not panic")
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.1 request over a fresh connection; the server closes it
    /// after the response, so the reply is everything up to EOF.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("send");
        read_reply(&mut stream).await
    }

    async fn read_reply(stream: &mut TcpStream) -> Reply {
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("reply within 5s")
            .expect("read reply");
        let text = String::from_utf8(raw).expect("UTF-8 reply");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("header");
                (name.trim().to_string(), value.trim().to_string())
            })
            .collect();
        Reply {
            status,
            headers,
            body: body.to_string(),
        }
    }

    #[tokio::test]
    async fn healthz_and_unknown_paths() {
        let server = Server::start(Limits::default()).await;
        let reply = request(server.addr, "GET", "/healthz").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "ok\n");
        assert_eq!(reply.header("content-type"), Some(TEXT_PLAIN));

        let reply = request(server.addr, "GET", "/nope").await;
        assert_eq!(reply.status, 404);
        // A path that only starts like a route is not one.
        assert_eq!(request(server.addr, "GET", "/metricsx").await.status, 404);
        server.stop().await.expect("serve");
    }

    #[tokio::test]
    async fn readyz_follows_the_source_and_lists_what_is_missing() {
        let server = Server::start(Limits::default()).await;
        let reply = request(server.addr, "GET", "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ready\n"));

        *server.source.readiness.lock().expect("lock") = Err(vec![
            "not armed on eth1".into(),
            "set `admins` not loaded".into(),
        ]);
        let reply = request(server.addr, "GET", "/readyz").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body, "not armed on eth1\nset `admins` not loaded\n");

        *server.source.readiness.lock().expect("lock") = Err(vec![]);
        let reply = request(server.addr, "GET", "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (503, "not ready\n"));

        *server.source.readiness.lock().expect("lock") = Ok(());
        assert_eq!(request(server.addr, "GET", "/readyz").await.status, 200);
        server.stop().await.expect("serve");
    }

    #[tokio::test]
    async fn metrics_are_rendered_with_their_content_type() {
        let server = Server::start(Limits::default()).await;
        let reply = request(server.addr, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(metrics::CONTENT_TYPE));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let expected = metrics::render(
            &FakeSource::status_value(),
            Some(&FakeSource::counters_value()),
        );
        assert_eq!(reply.body, expected);
        assert!(reply
            .body
            .contains(r#"xdpgate_packets_total{action="drop",reason="deny",family="ipv6"} 7"#));

        let reply = request(server.addr, "HEAD", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(metrics::CONTENT_TYPE));
        assert_eq!(reply.body, "", "HEAD has no body");
        server.stop().await.expect("serve");
    }

    #[tokio::test]
    async fn other_methods_are_refused_with_allow() {
        let server = Server::start(Limits::default()).await;
        for method in ["POST", "PUT", "DELETE"] {
            let reply = request(server.addr, method, "/metrics").await;
            assert_eq!(reply.status, 405, "{method}");
            assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method}");
        }
        assert_eq!(request(server.addr, "POST", "/nope").await.status, 404);
        server.stop().await.expect("serve");
    }

    #[tokio::test]
    async fn shutdown_stops_the_server_and_closes_the_port() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let server = Server::start(limits).await;
        let addr = server.addr;
        assert_eq!(request(addr, "GET", "/healthz").await.status, 200);
        // A client that connected and said nothing does not hold shutdown up
        // for its header timeout.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;

        let started = std::time::Instant::now();
        server.stop().await.expect("serve");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(1), idle.read_to_end(&mut rest))
            .await
            .expect("idle connection closed")
            .unwrap_or(0);
        assert_eq!(n, 0, "nothing sent to the idle client");
        assert!(TcpStream::connect(addr).await.is_err(), "port still open");
    }

    #[tokio::test]
    async fn a_client_that_stalls_its_request_head_is_dropped() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let server = Server::start(limits).await;
        let mut stuck = TcpStream::connect(server.addr).await.expect("connect");
        stuck
            .write_all(b"GET /metrics HTTP/1.1\r\nHo")
            .await
            .expect("send");
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), stuck.read_to_end(&mut rest))
            .await
            .expect("server closes a stalled request head")
            .ok();
        assert!(started.elapsed() < Duration::from_secs(2));
        // Others are still served.
        assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
        server.stop().await.expect("serve");
    }

    #[tokio::test]
    async fn a_connection_is_cut_at_its_deadline() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(30),
            connection_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let server = Server::start(limits).await;
        let mut idle = TcpStream::connect(server.addr).await.expect("connect");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut rest))
            .await
            .expect("server cuts the connection at its deadline")
            .ok();
        server.stop().await.expect("serve");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let limits = Limits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let server = Server::start(limits).await;
        let holder = TcpStream::connect(server.addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;

        let addr = server.addr;
        let waiting = tokio::spawn(async move { request(addr, "GET", "/healthz").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "served past the connection cap");

        drop(holder);
        let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("served once the slot is free")
            .expect("request task");
        assert_eq!(reply.status, 200);
        server.stop().await.expect("serve");
    }
}
