//! The load side of `bench proxy`: the client tools run in the client
//! namespace (wrk, h2load, curl) and what their output says, the idle TLS
//! connections held open while a proxy's memory is read, and the count of
//! upstream connections a proxy closed (TIME-WAIT sockets in the server
//! namespace).
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
    sync::Arc,
    time::Duration,
};

use xdpgate_tests::lab::client::{socket_in, AcceptAnything};

use crate::common::percentile;

/// Runs a client tool in the client namespace and returns its stdout.
pub fn client(ns: &str, program: &str, args: &[String]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "{program} {args:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text
}

pub const WRK_LUA: &str = "done = function(summary, latency, requests)\n  \
  local e = summary.errors\n  \
  io.write(string.format(\"XG %d %d %d %d %d %d %d\\n\", summary.requests, summary.duration, \
  latency:percentile(50), latency:percentile(99), latency:percentile(99.9), \
  e.connect + e.read + e.write + e.timeout, e.status))\nend\n";

/// wrk's figures: requests/s, latency percentiles (ms), socket errors
/// (connect, read, write, timeout) and the responses wrk counts as bad
/// statuses (400 and above; the probe before each run checks for a 200).
#[derive(Clone, Copy, Debug)]
pub struct Wrk {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub socket_errors: f64,
    pub bad_status: f64,
}

/// wrk's figures from the line [`WRK_LUA`] prints; NaN where it printed none.
pub fn parse_wrk(out: &str) -> Wrk {
    let f: Vec<f64> = out
        .lines()
        .find_map(|l| l.strip_prefix("XG "))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .filter(|f: &Vec<f64>| f.len() >= 7)
        .unwrap_or_else(|| vec![f64::NAN; 7]);
    Wrk {
        rps: f[0] / (f[1] / 1e6),
        p50: f[2] / 1e3,
        p99: f[3] / 1e3,
        p999: f[4] / 1e3,
        socket_errors: f[5],
        bad_status: f[6],
    }
}

/// h2load's requests/s from its summary, and latency percentiles (ms)
/// from its per-request log (third column: microseconds to the response).
pub fn parse_h2load(out: &str, log: &Path) -> (f64, f64, f64, f64, f64) {
    let rps = out
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let failed = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| l.split(',').find(|p| p.contains("failed")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let times: Vec<f64> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .map(|us| us / 1e3)
        .collect();
    (
        rps,
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 99.9),
        failed,
    )
}

/// Opens `count` TLS connections from the client namespace, each sending
/// one keep-alive request and reading its answer, and keeps them open.
pub fn idle_connections(
    ns: &str,
    count: usize,
) -> (
    Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio::runtime::Runtime,
    usize,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything))
            .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(config);
    let source: IpAddr = [198, 51, 100, 2].into();
    let server: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let sockets: Vec<_> = (0..count)
        .filter_map(|_| socket_in(ns, source).ok())
        .collect();
    let streams = runtime.block_on(async move {
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::new();
        for socket in sockets {
            let (limit, connector) = (Arc::clone(&limit), connector.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await.ok()?;
                let tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
                    .await
                    .ok()?
                    .ok()?;
                let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
                let mut tls =
                    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
                        .await
                        .ok()?
                        .ok()?;
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .ok()?;
                let mut buf = vec![0u8; 16384];
                let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                (n > 0).then_some(tls)
            }));
        }
        let mut streams = Vec::new();
        for t in tasks {
            if let Ok(Some(s)) = t.await {
                streams.push(s);
            }
        }
        streams
    });
    let opened = streams.len();
    (streams, runtime, opened)
}

/// Responses h2load got that were not 2xx, from its `status codes:` line
/// (NaN if it printed none).
pub fn h2load_non_2xx(out: &str) -> f64 {
    let Some(line) = out.lines().find(|l| l.starts_with("status codes:")) else {
        return f64::NAN;
    };
    line.trim_start_matches("status codes:")
        .split(',')
        .filter_map(|part| {
            let mut words = part.split_whitespace();
            let count: f64 = words.next()?.parse().ok()?;
            (words.next()? != "2xx").then_some(count)
        })
        .sum()
}

/// What one request through a proxy got back.
pub struct Probe {
    pub status: u16,
    pub body: String,
    /// The TLS version curl negotiated ("TLSv1.3"); empty if it made no
    /// TLS connection.
    pub tls_version: String,
}

/// One request to `url` with curl from the client namespace, as the load
/// tools send it (same URL, so the same Host and SNI): the status, the body
/// and, from curl's verbose log, the TLS version.
pub fn probe(ns: &str, url: &str, http2: bool) -> Probe {
    let version = if http2 { "--http2" } else { "--http1.1" };
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(["--", "curl", "-skv", "--max-time", "10", version])
        .args(["-w", "\\n%{http_code}", url])
        .output();
    let (text, log) = out
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            (text, String::from_utf8_lossy(&o.stderr).into_owned())
        })
        .unwrap_or_default();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    // "* SSL connection using TLSv1.3 / TLS_AES_128_GCM_SHA256 / ..."
    let tls_version = log
        .lines()
        .find_map(|line| line.split("SSL connection using ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    Probe {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
        tls_version,
    }
}

/// TCP connections to or from `upstream` that entered TIME-WAIT in the last
/// `within` (Linux holds TIME-WAIT for 60 s and `ss -o` shows what is left),
/// in namespace `ns`: (closed first by the proxy, closed first by the
/// upstream). The side that closes first holds the TIME-WAIT socket.
pub fn upstream_closes(ns: &str, upstream: &str, within: Duration) -> (f64, f64) {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .args(["--", "ss", "-tanoH", "state", "time-wait"])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let newer_than = 60u64.saturating_sub(within.as_secs());
    let (mut by_proxy, mut by_upstream) = (0.0, 0.0);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let left = words
            .iter()
            .find_map(|w| w.strip_prefix("timer:(timewait,"))
            .and_then(|t| t.split("sec").next())
            .and_then(|t| t.parse::<u64>().ok());
        let Some(left) = left else { continue };
        if left < newer_than {
            continue;
        }
        // Recv-Q Send-Q Local Peer timer
        match (words.get(2), words.get(3)) {
            (_, Some(peer)) if *peer == upstream => by_proxy += 1.0,
            (Some(local), _) if *local == upstream => by_upstream += 1.0,
            _ => {}
        }
    }
    (by_proxy, by_upstream)
}
