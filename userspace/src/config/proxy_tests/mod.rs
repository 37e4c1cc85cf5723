//! The `proxy:` section: what it parses into, and where each refusal points.
//!
//! Each test file puts the proxy section first and a fixed filter section
//! after it, so the line numbers asserted are the lines of the text in the
//! test.
//!
//! The tests are split by the area they check: what the section parses into
//! (`parsing`), the section as a whole with its drain and access log
//! (`section`), entrypoints with their TLS and limits (`entrypoints`),
//! services (`services`) and routes (`routes`). This module holds the
//! helpers they share, which the middleware, store and weighted-service
//! tests use too.
use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use super::{
    parse,
    tests::{assert_at, dedent, ORIGIN},
    Config, ConfigError,
};
use crate::proxy::{
    AccessLogConfig, CertPair, DrainConfig, EntrypointConfig, Limits, PathType, ProxyConfig,
    RedirectConfig, RequestPolicy, RouteConfig, ServiceConfig, TlsConfig, TlsVersion,
};

/// A valid policy with the sets `cloudflare` and `nodes`, appended after the
/// proxy section under test.
const FILTER: &str = "\
filter:
  sets:
    cloudflare: { cloudflare: {} }
    nodes: { cidrs: [10.0.0.1] }
  allow:
    - { tcp: [80, 443], from: [cloudflare] }
";

pub(super) fn file(proxy: &str) -> String {
    dedent(proxy) + FILTER
}

pub(super) fn config(proxy: &str) -> Config {
    match parse(&file(proxy), Path::new(ORIGIN)) {
        Ok(config) => config,
        Err(e) => panic!("expected the config to parse, got: {e}"),
    }
}

pub(super) fn proxy(text: &str) -> ProxyConfig {
    config(text).proxy.expect("a proxy section")
}

pub(super) fn refused(proxy: &str) -> ConfigError {
    match parse(&file(proxy), Path::new(ORIGIN)) {
        Ok(config) => panic!("expected an error, the config parsed: {config:?}"),
        Err(e) => e,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A plain entrypoint redirecting to a TLS one, which the routes serve.
pub(super) const ENTRYPOINTS: &str = r#"
    proxy:
      entrypoints:
        web: { listen: "[::]:80", redirect: websecure }
        websecure: { listen: "[::]:443", tls: {} }
"#;

/// [`ENTRYPOINTS`] (lines 1-4) and then `more`, indented as proxy keys.
pub(super) fn with_entrypoints(more: &str) -> String {
    format!("{}{}", dedent(ENTRYPOINTS), dedent(more))
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i < 4 || line.is_empty() {
                format!("{line}\n")
            } else {
                format!("  {line}\n")
            }
        })
        .collect()
}

mod entrypoints;
mod parsing;
mod routes;
mod section;
mod services;
