//! The admin listener end to end over real sockets: what each path answers,
//! and that a client which stalls, lingers or crowds cannot hold it.
use std::sync::Mutex;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
    task::JoinHandle,
};
use xdpgate_common::{Counter, Family, Reason};

use super::{routes::TEXT_PLAIN, *};
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
