//! `cargo xtask bench ratelimit`: what a cluster-wide rate limit (the Redis
//! store) adds to each request, against the local limiter, in the same run.
//! Each round times `RateLimit::admit` one call at a time, first with the
//! local limiter and then with the same quota on a `redis-server` this bench
//! starts on a free loopback port, over distinct client addresses (each a
//! new key, as many clients look); the rounds alternate the two and the
//! report gives each one's median p50 and p99 over the rounds, and the
//! difference. Only the limiter is timed: no HTTP, no upstream, so the
//! difference is what the store adds to a request's latency.
mod common;

use std::{
    net::{IpAddr, Ipv4Addr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{median, num, percentile, Report};
use serde_json::json;
use xdpgate::proxy::{
    middleware::rate_limit::RateLimit, RateLimitConfig, RedisStoreConfig, StoreFallback,
};

const BENCH: &str = "ratelimit";

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (RedisServer, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| common::fail(BENCH, &format!("no free port: {e}")));
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            common::fail(
                BENCH,
                &format!("redis-server does not start ({e}): apt-get install redis-server"),
            )
        });
    let server = RedisServer(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            common::fail(BENCH, "redis-server did not listen within 10s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

fn limit(store: Option<RedisStoreConfig>) -> RateLimit {
    RateLimit::new(
        "bench",
        &RateLimitConfig {
            average: 1_000_000,
            period: Duration::from_secs(1),
            burst: 1_000,
            ipv6_subnet: Some(64),
            max_keys: 1 << 20,
            source: Default::default(),
            store,
        },
    )
    .unwrap_or_else(|e| common::fail(BENCH, &format!("building the limiter: {e:#}")))
}

/// Microseconds per `admit`, one call at a time, `n` distinct clients
/// starting at `first`. Panics on a store error: a fallback would time the
/// local limiter under the Redis label.
async fn time_admits(limit: &RateLimit, first: u32, n: u32) -> Vec<f64> {
    let mut samples = Vec::with_capacity(n as usize);
    for i in 0..n {
        let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + first + i));
        let started = Instant::now();
        let (answer, fallback) = limit.admit(client).await;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
        assert!(fallback.is_none(), "the store failed during the bench");
        assert!(answer.is_ok(), "a new client is within its burst");
    }
    samples
}

fn main() {
    let args = common::Args::parse(BENCH);
    args.only(BENCH, &["--requests"]);
    let requests: u32 =
        args.extra(BENCH, "--requests")
            .unwrap_or(if args.quick { 2_000 } else { 20_000 });
    let (_redis, port) = start_redis();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let run_started = Instant::now();
    let local = limit(None);
    let shared = rt.block_on(async {
        limit(Some(RedisStoreConfig {
            address: format!("127.0.0.1:{port}"),
            tls: None,
            username_file: None,
            password_file: None,
            db: 0,
            timeout: Duration::from_secs(1),
            on_error: StoreFallback::Deny,
            pool: 4,
            key_prefix: "xdpgate:bench:".to_string(),
        }))
    });
    // Connect and load the script before timing.
    rt.block_on(time_admits(&shared, u32::MAX / 2, 100));

    let mut rows = Vec::new();
    let (mut local_p50, mut local_p99, mut redis_p50, mut redis_p99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds as u32 {
        let first = round * requests;
        let l = rt.block_on(time_admits(&local, first, requests));
        let r = rt.block_on(time_admits(&shared, first, requests));
        let row = [
            percentile(&l, 50.0),
            percentile(&l, 99.0),
            percentile(&r, 50.0),
            percentile(&r, 99.0),
        ];
        println!(
            "round {}: local p50 {:.2}us p99 {:.2}us | redis p50 {:.2}us p99 {:.2}us",
            round + 1,
            row[0],
            row[1],
            row[2],
            row[3]
        );
        local_p50.push(row[0]);
        local_p99.push(row[1]);
        redis_p50.push(row[2]);
        redis_p99.push(row[3]);
        rows.push(row);
    }
    let (lp50, lp99, rp50, rp99) = (
        median(&local_p50),
        median(&local_p99),
        median(&redis_p50),
        median(&redis_p99),
    );
    println!(
        "median over {} rounds of {requests} requests:\n  \
         local  p50 {lp50:8.2}us  p99 {lp99:8.2}us\n  \
         redis  p50 {rp50:8.2}us  p99 {rp99:8.2}us\n  \
         added  p50 {:8.2}us  p99 {:8.2}us",
        args.rounds,
        rp50 - lp50,
        rp99 - lp99
    );

    let mut report = Report::new(
        BENCH,
        "Rate limit: the Redis store against the local limiter",
        "Microseconds per rate-limit decision (RateLimit::admit), one at a time, each a new \
         client, local governor store and redis-server on loopback alternating in the same \
         run. The difference is what the shared store adds to each request.",
        &args,
    );
    report.began_at(run_started);
    report.version(
        "redis-server",
        common::version_of("redis-server", &["--version"]),
    );
    report.table(
        "Microseconds per decision (median of the rounds)",
        &["limiter", "p50 us", "p99 us"],
        vec![
            vec![json!("local"), num(lp50), num(lp99)],
            vec![json!("redis (loopback)"), num(rp50), num(rp99)],
            vec![json!("added by redis"), num(rp50 - lp50), num(rp99 - lp99)],
        ],
    );
    report.command(format!(
        "cargo bench -p xdpgate-tests --bench ratelimit -- --rounds {} --requests {requests}",
        args.rounds
    ));
    report.note("Redis on the same host: a store across the network adds its round trip on top.");
    report.samples("rounds_us", json!(rows));
    report.write(&args.out);
}
