//! A real Prometheus (Debian's `prometheus`) scrapes the daemon's admin
//! `/metrics` every second, inside the lab's server namespace, while the
//! daemon filters and proxies traffic: SYNs the filter drops and passes,
//! requests on both entrypoints, an upstream error, a failed TLS handshake and
//! a reload. Then every query of the Grafana dashboard (panel targets and
//! template variables), with Grafana's variables substituted, is evaluated
//! through Prometheus's HTTP API and must return samples that are numbers;
//! and `promtool check metrics` passes on a scrape. Prometheus and the daemon
//! are stopped, and their directories removed, also when an assertion fails.
//! Needs root, `prometheus` and `promtool` (`cargo xtask setup`).
use std::{
    io::Write as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use xdpgate_tests::dashboard;
use xdpgate_tests::lab::{
    admin_get, connect_from, in_netns, lab_ready, members, outsiders, wait_for, ProxyLab,
    ProxySetup, ADMIN_PORT,
};

const PROMETHEUS_PORT: u16 = 9090;
const APP_PORT: u16 = 9100;
/// Nothing listens here: the `down` service answers 502.
const DOWN_PORT: u16 = 9101;
/// The filter binds TCP 22 to `members` in the proxy lab's config.
const FILTERED_PORT: u16 = 22;

/// Grafana's built-in variables, as a dashboard over the last hour would
/// see them with a 1 s scrape interval: `$__rate_interval` is at least four
/// scrape intervals, and a minute keeps the test's traffic in every window.
const GRAFANA_VARIABLES: [(&str, &str); 4] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "5m"),
    ("$instance", ".*"),
];

/// Prometheus in the server namespace, stopped and its directory removed on
/// drop.
struct Prometheus {
    child: Child,
    ns: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(ns: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: xdpgate
    static_configs:
      - targets: ['127.0.0.1:{ADMIN_PORT}']
"
            ),
        )
        .expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (is Debian's `prometheus` installed? cargo xtask setup)");
        Prometheus {
            child,
            ns: ns.to_string(),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with form parameters, as JSON.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut curl = Command::new("ip");
        curl.args([
            "netns",
            "exec",
            &self.ns,
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-G",
        ]);
        for (key, value) in params {
            curl.arg("--data-urlencode").arg(format!("{key}={value}"));
        }
        curl.arg(format!("http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/{path}"));
        let out = curl.output().expect("run curl");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            Value::String(format!(
                "not JSON ({e}): {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        })
    }

    fn query(&self, expr: &str) -> Value {
        self.api("query", &[("query", expr)])
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // `ip netns exec` execs prometheus, so this is prometheus's own pid.
        // SAFETY: signalling the process this test started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn substitute(expr: &str) -> String {
    let mut out = expr.to_string();
    for (name, value) in GRAFANA_VARIABLES {
        out = out.replace(name, value);
    }
    out
}

/// Why `query` found nothing, or `None` when it returned data: at least one
/// sample whose value is a number (not NaN). `label_values(metric, label)`
/// is Grafana's, not PromQL: it is asked of the label values API.
fn no_data(prometheus: &Prometheus, query: &str) -> Option<String> {
    if let Some(args) = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    {
        let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
        let answer = prometheus.api(
            &format!("label/{}/values", label.trim()),
            &[("match[]", metric.trim())],
        );
        let values = answer["data"].as_array().map_or(0, Vec::len);
        return (values == 0).then(|| format!("no values: {answer}"));
    }
    let answer = prometheus.query(&substitute(query));
    if answer["status"] != "success" {
        return Some(format!("refused: {answer}"));
    }
    let result = &answer["data"]["result"];
    let numbers = result
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sample| sample["value"][1].as_str())
        .filter(|v| v.parse::<f64>().is_ok_and(|v| !v.is_nan()))
        .count();
    (numbers == 0).then(|| format!("no numeric sample: {result}"))
}

/// The traffic that makes every series of the dashboard exist.
fn traffic(proxy: &ProxyLab) {
    let member = members()[0];
    dashboard::proxy_traffic(proxy);
    // The filter: non-members' SYNs to the bound port are dropped (their
    // connects time out), a member's pass.
    in_netns(&proxy.lab.client_ns, || {
        for outsider in [outsiders()[0], outsiders()[7]] {
            assert!(
                connect_from(outsider, FILTERED_PORT, Duration::from_millis(500)).is_err(),
                "{outsider} is dropped on port {FILTERED_PORT}"
            );
        }
        // Nothing listens on 22 in the lab: a member's SYN passes and is refused.
        let _ = connect_from(member, FILTERED_PORT, Duration::from_millis(500));
    });
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_and_promtool_accepts_the_scrape() {
    let test =
        "every_dashboard_query_returns_data_from_a_real_prometheus_and_promtool_accepts_the_scrape";
    if !lab_ready(test, &["prometheus", "promtool", "curl"]) {
        return;
    }
    let queries = dashboard::queries(&dashboard::dashboard());
    assert!(
        queries.len() >= 20,
        "the dashboard has its queries: {queries:?}"
    );

    let mut proxy = ProxyLab::new("prm", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _app = proxy.echo_backend("app", APP_PORT);
    proxy.start(&ProxySetup {
        rest: format!(
            "  services:
    app: {{ target: \"127.0.0.1:{APP_PORT}\" }}
    down: {{ target: \"127.0.0.1:{DOWN_PORT}\" }}
  routes:
    - {{ name: app, host: app.test, service: app }}
    - {{ name: down, host: down.test, service: down }}
"
        ),
        ..ProxySetup::default()
    });
    let ns = proxy.lab.server_ns.clone();
    let prometheus = Prometheus::start(&ns);
    wait_for(
        "Prometheus to scrape the daemon (up == 1)",
        Duration::from_secs(30),
        || prometheus.query("up{job=\"xdpgate\"}")["data"]["result"][0]["value"][1].clone(),
        |up| *up == "1",
    );

    // Twice, with scrapes in between: a series born with its first request
    // has nothing to rate until it moves again (a latency quantile over it
    // is NaN, not data).
    traffic(&proxy);
    wait_for(
        "Prometheus to store the proxy's request series",
        Duration::from_secs(30),
        || prometheus.query("xdpgate_router_requests_total")["data"]["result"].clone(),
        |result| result.as_array().is_some_and(|r| !r.is_empty()),
    );
    std::thread::sleep(Duration::from_secs(2));
    traffic(&proxy);
    // A reload, so the reload counter moves.
    // SAFETY: signalling the daemon process this test started.
    unsafe { libc::kill(proxy.pid() as libc::pid_t, libc::SIGHUP) };

    // Every query, retried while the scrapes after the traffic come in.
    let failures = wait_for(
        "every dashboard query to return data",
        Duration::from_secs(30),
        || {
            queries
                .iter()
                .filter_map(|(place, query)| {
                    no_data(&prometheus, query).map(|why| format!("{place}: {query}: {why}"))
                })
                .collect::<Vec<_>>()
        },
        |failures| failures.is_empty(),
    );
    assert!(failures.is_empty(), "Prometheus log:\n{}", prometheus.log());
    println!(
        "{} dashboard queries returned data from Prometheus",
        queries.len()
    );

    // The top sources the daemon exports reached Prometheus too, with the
    // prefix of a source the filter dropped.
    let top = prometheus.query("xdpgate_filter_top_source_drops");
    let prefixes: Vec<&str> = top["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metric"]["prefix"].as_str())
        .collect();
    assert!(
        prefixes.contains(&"203.0.113.0/24"),
        "top sources in Prometheus: {top}"
    );

    // promtool's linter on a scrape. It reads only the 0.0.4 text format,
    // which the admin listener serves to an Accept of text/plain.
    let scrape = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-D",
            "/dev/stderr",
        ])
        .args(["-H", "Accept: text/plain;version=0.0.4"])
        .arg(format!("http://127.0.0.1:{ADMIN_PORT}/metrics"))
        .output()
        .expect("curl /metrics");
    let headers = String::from_utf8_lossy(&scrape.stderr).to_ascii_lowercase();
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let text = String::from_utf8(scrape.stdout).expect("UTF-8 scrape");
    assert!(
        text.contains("# TYPE xdpgate_packets_total counter"),
        "the text format names counters by their samples: {text}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the scrape to promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The OpenMetrics scrape Prometheus takes carries the same values.
    let openmetrics = admin_get(&ns, "/metrics").expect("GET /metrics");
    assert!(openmetrics.body.ends_with("# EOF\n"));
}
