//! The report of `bench proxy`: what each figure is ([`METRICS`]), the
//! run's description and versions, the median tables, the xdpgate /
//! competitor ratios per upstream, the charts and the raw rounds.
use serde_json::{json, Value};

use crate::{
    common::{self, median, num, Report},
    proxy_peers::{venv_bin, Upstream, LISTEN},
    BENCH, IDLE_FULL,
};

pub const METRICS: [&str; 19] = [
    "h1 rps",
    "h1 p50 ms",
    "h1 p99 ms",
    "h1 p99.9 ms",
    "h1 errors",
    "h2 rps",
    "h2 p50 ms",
    "h2 p99 ms",
    "h2 p99.9 ms",
    "h2 failed",
    "new TLS conn/s",
    "CPU us/request (h1)",
    "RSS idle MiB",
    "RSS under load MiB",
    "RSS idle conns MiB",
    "idle conns open",
    "KiB per idle TLS conn",
    "upstream conns closed by proxy (h1)",
    "upstream conns closed by upstream (h1)",
];

pub fn new_report(
    args: &common::Args,
    seconds: u64,
    idle: usize,
    upstreams: &[Upstream],
) -> Report {
    let upstream_names: Vec<String> = upstreams
        .iter()
        .map(|u| format!("{} ({})", u.name, u.address))
        .collect();
    let mut report = Report::new(
        BENCH,
        "TLS proxy: xdpgate, nginx, HAProxy, Caddy, Envoy and Traefik",
        &format!(
            "Each proxy terminates TLS on {LISTEN} in the server namespace with the same ECDSA P-256 certificate, \
             forwards every request to one upstream over keep-alive connections, sets X-Forwarded-For, X-Real-IP, \
             X-Forwarded-Proto, X-Forwarded-Host and X-Forwarded-Port (checked through the echo upstream before each \
             measurement), logs nothing, and runs ONE worker (nginx `worker_processes 1`, HAProxy `nbthread 1`, \
             Caddy and Traefik `GOMAXPROCS=1`, Envoy `--concurrency 1`, xdpgate `--worker-threads 1`). Upstreams, each \
             proxy against each in turn: {}; `echo` is the lab's HTTP/1.1 echo server (a ~300-byte JSON body), \
             `nginx-upstream` is nginx answering `return 200` with a ~300-byte body, keep-alive with \
             `keepalive_requests 100000`. The clients run in the client namespace across the veth, on the same 2 cores \
             as the proxy and the upstream. Per proxy, upstream and round: wrk HTTP/1.1 keep-alive for {seconds} s, \
             h2load HTTP/2 for {seconds} s, wrk with `Connection: close` (a full TLS handshake per request); against \
             the first upstream also {idle} idle TLS keep-alive connections (each made one request) held open while \
             the proxy's RSS is read. A response that is not 2xx fails the run. CPU/request is the proxy's own \
             user+system time (all its processes) during the wrk run divided by the requests; RSS is summed over its \
             processes. Latencies are per request, in ms. Upstream connections closed counts the TIME-WAIT sockets \
             toward the upstream made during the wrk run: the side that closes first keeps one.",
            upstream_names.join(", ")
        ),
        args,
    );
    for (tool, package) in [
        ("nginx", "nginx"),
        ("haproxy", "haproxy"),
        ("caddy", "caddy"),
        ("wrk", "wrk"),
        ("h2load", "nghttp2-client"),
    ] {
        report.version(tool, common::package_version(package));
    }
    if let Some(bin) = venv_bin() {
        report.version(
            "envoy",
            common::version_of(&bin.join("envoy").display().to_string(), &["--version"]),
        );
        let traefik = std::process::Command::new(bin.join("traefik"))
            .arg("version")
            .output();
        let traefik = traefik
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        report.version("traefik", traefik);
    }
    report
}

/// The median tables, the xdpgate/competitor ratios per upstream, the
/// charts (first upstream) and the raw rounds.
pub fn add_results(
    report: &mut Report,
    samples: &[Vec<Vec<Vec<f64>>>],
    upstreams: &[Upstream],
    proxies: &[&str],
    idle: usize,
) {
    let med = |p: usize, u: usize, m: usize| median(&samples[p][u][m]);
    let xdpgate = proxies.len() - 1;
    for (u, upstream) in upstreams.iter().enumerate() {
        let rows = proxies
            .iter()
            .enumerate()
            .map(|(p, name)| {
                let mut row = vec![json!(name)];
                row.extend((0..METRICS.len()).map(|m| num(med(p, u, m))));
                row
            })
            .collect();
        let mut columns = vec!["proxy"];
        columns.extend(METRICS);
        report.table(
            &format!("Medians over the rounds, upstream {}", upstream.name),
            &columns,
            rows,
        );
    }
    let mut ratios = Vec::new();
    for (u, upstream) in upstreams.iter().enumerate() {
        for (m, label) in [
            (0, "h1 rps"),
            (2, "h1 p99"),
            (5, "h2 rps"),
            (7, "h2 p99"),
            (10, "new TLS conn/s"),
            (11, "CPU/request"),
            (16, "KiB per idle conn"),
        ] {
            if u > 0 && m == 16 {
                continue;
            }
            let mut row = vec![json!(format!("{label} ({})", upstream.name))];
            row.extend((0..xdpgate).map(|p| num(med(xdpgate, u, m) / med(p, u, m))));
            ratios.push(row);
        }
    }
    let mut columns = vec!["metric (upstream)"];
    let vs: Vec<String> = proxies[..xdpgate]
        .iter()
        .map(|p| format!("vs {p}"))
        .collect();
    columns.extend(vs.iter().map(String::as_str));
    report.table(
        "xdpgate / competitor (medians; above 1 means xdpgate's figure is larger)",
        &columns,
        ratios,
    );
    add_plots(report, samples, upstreams, proxies, idle);
    report.samples(
        "rounds",
        json!(proxies
            .iter()
            .enumerate()
            .map(|(p, name)| (
                name.to_string(),
                json!(upstreams
                    .iter()
                    .enumerate()
                    .map(|(u, upstream)| (
                        upstream.name.to_string(),
                        json!(METRICS
                            .iter()
                            .zip(&samples[p][u])
                            .map(|(m, v)| (
                                m.to_string(),
                                json!(v.iter().map(|x| num(*x)).collect::<Vec<Value>>())
                            ))
                            .collect::<serde_json::Map<_, _>>())
                    ))
                    .collect::<serde_json::Map<_, _>>())
            ))
            .collect::<serde_json::Map<_, _>>()),
    );
    report.note(
        "The benchmark does not profile: the by-hand profile of xdpgate, what was changed after it and what that changed are in the notes under the machine description at the top of this page.",
    );
    report.note(&format!(
        "Idle connections: {IDLE_FULL} in a full run, not 10,000: open files are capped at 20,000 on these machines \
         (a hard limit root cannot raise in this container) and HAProxy reserves two per connection (`maxconn 9500`)."
    ));
}

fn add_plots(
    report: &mut Report,
    samples: &[Vec<Vec<Vec<f64>>>],
    upstreams: &[Upstream],
    proxies: &[&str],
    idle: usize,
) {
    let names: Vec<String> = proxies.iter().map(|s| s.to_string()).collect();
    let per = |u: usize, m: usize| {
        (0..proxies.len())
            .map(|p| median(&samples[p][u][m]))
            .collect::<Vec<_>>()
    };
    let mut rps = Vec::new();
    for (u, upstream) in upstreams.iter().enumerate() {
        rps.push((
            format!("HTTP/1.1 keep-alive (wrk), {}", upstream.name),
            per(u, 0),
        ));
        rps.push((format!("HTTP/2 (h2load), {}", upstream.name), per(u, 5)));
        rps.push((
            format!("new TLS connection each (wrk), {}", upstream.name),
            per(u, 10),
        ));
    }
    report.plot(
        "proxy-rps.png",
        "Requests per second (median)",
        "requests/s",
        &names,
        rps.iter().map(|(n, v)| (n.as_str(), v.clone())).collect(),
    );
    report.plot(
        "proxy-latency.png",
        &format!(
            "Latency, HTTP/1.1 keep-alive (wrk -c64, median of rounds), {}",
            upstreams[0].name
        ),
        "ms",
        &names,
        vec![("p50", per(0, 1)), ("p99", per(0, 2)), ("p99.9", per(0, 3))],
    );
    report.plot(
        "proxy-latency-h2.png",
        &format!(
            "Latency, HTTP/2 (h2load -c64 -m10, median of rounds), {}",
            upstreams[0].name
        ),
        "ms",
        &names,
        vec![("p50", per(0, 6)), ("p99", per(0, 7)), ("p99.9", per(0, 8))],
    );
    report.plot(
        "proxy-memory.png",
        "Resident memory (median)",
        "MiB",
        &names,
        vec![
            ("idle", per(0, 12)),
            ("under wrk load", per(0, 13)),
            (&format!("{idle} idle TLS connections"), per(0, 14)),
        ],
    );
    report.plot(
        "proxy-cpu.png",
        &format!(
            "Proxy CPU per request, HTTP/1.1 keep-alive (median), {}",
            upstreams[0].name
        ),
        "microseconds",
        &names,
        vec![("user+system", per(0, 11))],
    );
}
