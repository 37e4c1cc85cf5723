//! The Grafana dashboard in deploy/grafana queries only metrics the daemon
//! really exports, under the names Prometheus stores them by. The JSON is
//! parsed, every metric name in every panel target's `expr` (and in the
//! template variables' queries) is extracted, and each one must have samples
//! in a real scrape of `/metrics` from the daemon running the filter and the
//! proxy in the lab, after traffic that makes every series exist: requests on
//! both entrypoints, an upstream error, a failed TLS handshake, a SYN the
//! filter drops and a config reload. A counter is queried as `<name>_total` and only through `rate()` or
//! `increase()`; a histogram through its `_bucket` series. The lab part needs
//! root; the structure checks run everywhere.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::Value;
use xdpgate_tests::dashboard::{self, DASHBOARD};
use xdpgate_tests::lab::{
    admin_get, connect_from, in_netns, lab_ready, outsiders, wait_for, ProxyLab, ProxySetup,
};

const DATASOURCE: &str = "${datasource}";
const APP_PORT: u16 = 9100;
/// Nothing listens here: the `down` service answers 502 (`connect`).
const DOWN_PORT: u16 = 9101;

/// Metrics the dashboard must show (the operator's questions it answers).
const REQUIRED: [&str; 13] = [
    "xdpgate_packets_total",
    "xdpgate_set_entries",
    "xdpgate_set_last_success_timestamp_seconds",
    "xdpgate_router_requests_total",
    "xdpgate_router_request_duration_seconds_bucket",
    "xdpgate_entrypoint_request_duration_seconds_bucket",
    "xdpgate_upstream_errors_total",
    "xdpgate_tls_certs_not_after",
    "xdpgate_config_reloads_total",
    "xdpgate_policy_generation",
    "xdpgate_open_connections",
    "xdpgate_set_refresh_total",
    "xdpgate_filter_top_source_drops",
];

fn ident_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// Every `xdpgate_[a-z0-9_]+` in `expr`, with the text before it.
fn metric_uses(expr: &str) -> Vec<(&str, &str)> {
    let mut uses = Vec::new();
    let mut from = 0;
    while let Some(found) = expr[from..].find("xdpgate_") {
        let start = from + found;
        let end = expr[start..]
            .find(|c: char| !ident_char(c))
            .map_or(expr.len(), |n| start + n);
        let preceded = expr[..start]
            .chars()
            .next_back()
            .is_some_and(|c| ident_char(c) || c.is_ascii_uppercase());
        if !preceded {
            uses.push((&expr[start..end], &expr[..start]));
        }
        from = end;
    }
    uses
}

/// Every metric name the dashboard queries, with the panels that use it.
fn queried_metrics(dashboard: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (title, expr) in dashboard::queries(dashboard) {
        for (name, _) in metric_uses(&expr) {
            metrics
                .entry(name.to_string())
                .or_default()
                .insert(title.clone());
        }
    }
    metrics
}

/// What a scrape holds: `# TYPE` per family, and the sample names.
struct Scrape {
    types: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = BTreeMap::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((family, kind)) = rest.split_once(' ') {
                    types.insert(family.to_string(), kind.trim().to_string());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.insert(line[..end].to_string());
            }
        }
        Scrape { types, samples }
    }

    /// The family a sample name belongs to, and its type.
    fn family(&self, name: &str) -> Option<(String, String)> {
        if let Some(kind) = self.types.get(name) {
            return Some((name.to_string(), kind.clone()));
        }
        for (suffix, kinds) in [
            ("_total", &["counter"][..]),
            ("_bucket", &["histogram", "gaugehistogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
            ("_info", &["info"][..]),
            ("_created", &["counter", "histogram", "summary"][..]),
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(kind) = self.types.get(base) {
                    if kinds.contains(&kind.as_str()) {
                        return Some((base.to_string(), kind.clone()));
                    }
                }
            }
        }
        None
    }

    /// Why `name`, as the dashboard queries it, would find nothing in
    /// Prometheus; `None` when it has samples under exactly that name.
    fn problem(&self, name: &str) -> Option<String> {
        let Some((family, kind)) = self.family(name) else {
            return Some(format!("`{name}`: no such metric family in the scrape"));
        };
        if kind == "histogram" {
            let missing: Vec<String> = ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .filter(|s| !self.samples.contains(s))
                .collect();
            if !missing.is_empty() {
                return Some(format!("histogram `{family}` has no samples {missing:?}"));
            }
            if name == family {
                return Some(format!(
                    "`{name}` is a histogram: query `{name}_bucket`, `_sum` or `_count`"
                ));
            }
        }
        if kind == "counter" && name == family {
            return Some(format!(
                "`{name}` is a counter: it is stored as `{name}_total`"
            ));
        }
        if !self.samples.contains(name) {
            return Some(format!(
                "`{name}` ({kind} `{family}`): no samples in the scrape"
            ));
        }
        None
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_over_a_prometheus_datasource_variable() {
    let dashboard = dashboard::dashboard();
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion {schema} (Grafana 10/11 write 38-39)"
    );
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` template variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(
        datasource["query"], "prometheus",
        "the datasource variable lists Prometheus data sources"
    );

    let mut ids = BTreeSet::new();
    for panel in dashboard::panels(&dashboard) {
        let title = panel["title"].as_str().expect("every panel has a title");
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} (`{title}`) is used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24),
            "panel `{title}`: gridPos {grid} must fit 24 columns"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], DATASOURCE,
            "panel `{title}` uses the datasource variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel `{title}` has no query");
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], DATASOURCE,
                "panel `{title}`: its targets use the datasource variable"
            );
        }
    }

    let queried = queried_metrics(&dashboard);
    for name in REQUIRED {
        assert!(
            queried.contains_key(name),
            "the dashboard has no panel over `{name}`; it queries {:?}",
            queried.keys()
        );
    }

    // Counters only through rate() or increase(): a raw counter graph
    // resets with every restart and says nothing.
    for (title, expr) in dashboard::queries(&dashboard) {
        for (name, before) in metric_uses(&expr) {
            if name.ends_with("_total") || name.ends_with("_bucket") {
                let before = before.trim_end();
                assert!(
                    before.ends_with("rate(") || before.ends_with("increase("),
                    "panel `{title}`: `{name}` outside rate()/increase(): {expr}"
                );
            }
        }
    }
}

#[test]
fn the_metric_extraction_takes_whole_identifiers_only() {
    let uses: Vec<&str> = metric_uses(
        "histogram_quantile(0.9, sum by (le) (rate(xdpgate_a_bucket{x=\"xdpgate_no\"}[5m]))) \
         / on() my_xdpgate_b + xdpgate_c",
    )
    .into_iter()
    .map(|(name, _)| name)
    .collect();
    // A label value is text, but it matches the pattern too; the dashboard
    // has none, and a name inside a longer identifier is not a use.
    assert_eq!(uses, ["xdpgate_a_bucket", "xdpgate_no", "xdpgate_c"]);
}

#[test]
fn every_metric_the_dashboard_queries_is_in_the_daemons_scrape() {
    let test = "every_metric_the_dashboard_queries_is_in_the_daemons_scrape";
    if !lab_ready(test, &[]) {
        return;
    }
    let queried = queried_metrics(&dashboard::dashboard());

    let mut proxy = ProxyLab::new("dsh", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _app = proxy.echo_backend("app", APP_PORT);
    let rest = format!(
        "  services:
    app: {{ target: \"127.0.0.1:{APP_PORT}\" }}
    down: {{ target: \"127.0.0.1:{DOWN_PORT}\" }}
  routes:
    - {{ name: app, host: app.test, service: app }}
    - {{ name: down, host: down.test, service: down }}
"
    );
    proxy.start(&ProxySetup {
        rest,
        ..ProxySetup::default()
    });
    let ns = proxy.lab.server_ns.clone();

    // A request on each entrypoint, a 502 and a failed handshake.
    dashboard::proxy_traffic(&proxy);
    // A SYN the filter drops (port 22 is bound to `members`), so the top
    // dropped sources have a row.
    in_netns(&proxy.lab.client_ns, || {
        let dropped = connect_from(outsiders()[0], 22, Duration::from_millis(500));
        assert!(dropped.is_err(), "a non-member's SYN to 22 is dropped");
    });
    // A reload, so the reload counter has a series.
    // SAFETY: signalling the daemon process this test started.
    unsafe { libc::kill(proxy.pid() as libc::pid_t, libc::SIGHUP) };

    let scrape_problems = || {
        let reply = admin_get(&ns, "/metrics").expect("GET /metrics");
        assert_eq!(reply.status, 200, "GET /metrics: {}", reply.body);
        let scrape = Scrape::parse(&reply.body);
        queried
            .iter()
            .filter_map(|(name, panels)| {
                scrape
                    .problem(name)
                    .map(|why| format!("{why} (panels {panels:?})"))
            })
            .collect::<Vec<_>>()
    };
    wait_for(
        "every metric the dashboard queries to have samples",
        Duration::from_secs(5),
        scrape_problems,
        Vec::is_empty,
    );
    println!(
        "{} metrics queried by {DASHBOARD}, all in the scrape: {:?}",
        queried.len(),
        queried.keys()
    );
}
