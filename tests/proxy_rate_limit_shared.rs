//! A cluster-wide rate limit on a real `redis-server` (Debian's), started by
//! the test on a free loopback port and stopped at the end: three proxies
//! sharing it spend one budget (a burst of 30 across all three, ±1, where
//! three local limits would let 90 through); with the store stopped each
//! middleware applies its `on_error` (`local`: this node's own limit;
//! `deny`: 429), counted in `xdpgate_rate_limit_store_errors_total`; and
//! when the store is back the shared budget is enforced again without a
//! reload (each pooled connection the restart broke costs one more fallback
//! as it reconnects). The proxies run in this process on 127.0.0.1, so every request
//! comes from one client address.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use xdpgate::proxy::{
    metrics::{ProxyMetrics, StoreErrorLabels},
    server::Proxy,
};

const BURST: usize = 30;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `redis-server` on 127.0.0.1:`port`, without persistence; killed on drop.
struct RedisServer {
    child: Child,
}

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = RedisServer { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An upstream answering 200 to every request, one per connection.
fn start_backend(rt: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the backend");
    let addr = listener.local_addr().expect("backend address");
    listener.set_nonblocking(true).expect("nonblocking");
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

fn config(port: u16, backend: SocketAddr, redis: u16) -> xdpgate::proxy::ProxyConfig {
    let text = format!(
        r#"
proxy:
  entrypoints:
    web: {{ listen: "127.0.0.1:{port}" }}
  access_log: {{ enabled: false }}
  middlewares:
    shared_local:
      rate_limit:
        average: 1
        period: 1h
        burst: {BURST}
        store: {{ redis: {{ address: "127.0.0.1:{redis}", timeout: 100ms, on_error: local }} }}
    shared_deny:
      rate_limit:
        average: 1
        period: 1h
        burst: {BURST}
        store: {{ redis: {{ address: "127.0.0.1:{redis}", timeout: 100ms, on_error: deny, pool: 2 }} }}
  routes:
    - {{ host: local.test, service: "{backend}", middlewares: [shared_local] }}
    - {{ host: deny.test, service: "{backend}", middlewares: [shared_deny] }}
filter:
  sets:
    nodes: {{ cidrs: [10.0.0.1] }}
  allow:
    - {{ tcp: [443], from: [nodes] }}
"#
    );
    xdpgate::config::parse(&text, Path::new("shared-limit.yaml"))
        .expect("the test config parses")
        .proxy
        .expect("a proxy section")
}

/// The status of one `GET /` with `Host: host`.
fn status(port: u16, host: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn store_errors(metrics: &ProxyMetrics, middleware: &str, outcome: &'static str) -> u64 {
    metrics
        .rate_limit_store_errors
        .get_or_create(&StoreErrorLabels {
            middleware: middleware.to_string(),
            outcome,
        })
        .get()
}

#[test]
fn three_proxies_share_one_budget_and_fall_back_while_the_store_is_down() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "SKIP three_proxies_share_one_budget: redis-server is not installed \
             (apt-get install redis-server, or cargo xtask setup)"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let redis_port = free_port();
    let mut redis = Some(RedisServer::start(redis_port));
    let backend = start_backend(&rt);
    let mut proxies = Vec::new();
    let mut ports = Vec::new();
    let mut metrics = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let registry = Arc::new(ProxyMetrics::new());
        let proxy = rt
            .block_on(Proxy::start(
                &config(port, backend, redis_port),
                Default::default(),
                Default::default(),
                registry.clone(),
            ))
            .expect("a proxy starts");
        proxies.push(proxy);
        ports.push(port);
        metrics.push(registry);
    }

    // 90 requests round robin over the three: one budget of 30.
    let passed = (0..3 * BURST)
        .filter(|i| status(ports[i % 3], "local.test") == 200)
        .count();
    assert!(
        passed.abs_diff(BURST) <= 1,
        "{passed} of {} passed; one shared burst is {BURST}",
        3 * BURST
    );
    for m in &metrics {
        assert_eq!(
            store_errors(m, "shared_local", "local"),
            0,
            "no fallback yet"
        );
    }

    // The store goes away: `local` decides with the node's own limit (its
    // bucket untouched so far: all 10 pass), `deny` refuses.
    drop(redis.take());
    for _ in 0..10 {
        assert_eq!(status(ports[0], "local.test"), 200, "on_error: local");
        assert_eq!(status(ports[1], "deny.test"), 429, "on_error: deny");
    }
    assert_eq!(store_errors(&metrics[0], "shared_local", "local"), 10);
    assert_eq!(store_errors(&metrics[1], "shared_deny", "deny"), 10);
    assert_eq!(store_errors(&metrics[2], "shared_deny", "deny"), 0);

    // The store is back (empty, as after a restart): the shared budget
    // applies again, without a reload, once the connections come back.
    redis = Some(RedisServer::start(redis_port));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut first_pass = false;
    while !first_pass {
        assert!(
            Instant::now() < deadline,
            "the deny middleware still refuses 15s after the store returned"
        );
        first_pass = status(ports[2], "deny.test") == 200;
        if !first_pass {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let errors_before: u64 = metrics
        .iter()
        .map(|m| store_errors(m, "shared_deny", "deny"))
        .sum();
    let later = (1..3 * BURST)
        .filter(|i| status(ports[i % 3], "deny.test") == 200)
        .count();
    let passed = 1 + later;
    assert!(
        passed.abs_diff(BURST) <= 1,
        "after the store returned {passed} of {} passed; one shared burst is {BURST}",
        3 * BURST
    );
    let errors_after: u64 = metrics
        .iter()
        .map(|m| store_errors(m, "shared_deny", "deny"))
        .sum();
    // A pooled connection broken by the restart fails the one request that
    // finds it broken (and reconnects): at most one more fallback for each
    // of the deny middleware's 2 connections on each of the 3 proxies.
    assert!(
        errors_after - errors_before <= 3 * 2,
        "fallbacks once the store answers: {} (at most one per pooled connection)",
        errors_after - errors_before
    );
    drop(redis);
    drop(proxies);
}
