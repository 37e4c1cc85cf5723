//! The Grafana dashboard the project ships (`deploy/grafana/`), read as the
//! tests that check it need it: its panels and every query in it.
use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    time::Duration,
};

use serde_json::Value;

use crate::lab::{connect_from, in_netns, members, outsiders, Call, ProxyLab, TLS_PORT};

/// The dashboard, from the repository root.
pub const DASHBOARD: &str = "deploy/grafana/xdpgate-dashboard.json";

/// The dashboard's JSON.
pub fn dashboard() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("`panels` is a list")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        all.push(panel);
    }
    all
}

/// `(panel title, expr)` of every panel target, and `("$name", query)` of
/// every query variable.
pub fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel `{title}`: a target without `expr`"));
            queries.push((title.to_string(), expr.to_string()));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = match &variable["query"] {
                Value::String(q) => q.clone(),
                q => q["query"].as_str().unwrap_or_default().to_string(),
            };
            queries.push((
                format!("${}", variable["name"].as_str().unwrap_or("?")),
                query,
            ));
        }
    }
    queries
}

/// The proxy traffic that gives the dashboard's proxy panels a series each:
/// a request on each entrypoint (HTTP/1.1 and HTTP/2 over TLS), one whose
/// upstream refuses (502), and plain text on the TLS entrypoint (a failed
/// handshake). The proxy serves `app.test` and `down.test`.
pub fn proxy_traffic(proxy: &ProxyLab) {
    let member = members()[0];
    for (call, status) in [
        (Call::plain(member).host("app.test"), 200),
        (
            Call::tls(outsiders()[6])
                .sni("localhost")
                .host("app.test")
                .h2(),
            200,
        ),
        (Call::tls(member).sni("localhost").host("app.test"), 200),
        (Call::plain(member).host("down.test"), 502),
    ] {
        let reply = proxy
            .send(&call)
            .unwrap_or_else(|e| panic!("{call:?}: no answer: {e}"));
        assert_eq!(reply.status, status, "{call:?}: {}", reply.text());
    }
    // Plain text on the TLS entrypoint: a failed handshake.
    in_netns(&proxy.lab.client_ns, || {
        let mut stream =
            connect_from(member, TLS_PORT, Duration::from_secs(2)).expect("connect to :8443");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("read timeout");
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
        let _ = stream.read_to_end(&mut Vec::new());
    });
}
