//! Tests of the config file outside the `proxy:` section, split by what
//! they check: what a file parses into (`parsing`), how a refusal reads and
//! structural refusals (`structure`), bad values (`values`), the policy as
//! the compiler checks it (`policy`), and the reference doc (`reference_doc`).
//! This module holds the helpers they share, which the other config test
//! modules use too.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;

use super::*;
use crate::{
    logging::LogFormat,
    policy::{compile, Binding, PortRange},
    sets::{CloudflareSpec, SetSpec, SourceSpec, DEFAULT_MAX_SHRINK},
};

pub(super) const ORIGIN: &str = "/etc/xdpgate/config.yaml";

/// Strips the indentation the test source adds, so that line 1 is the first
/// line after the opening quote.
pub(super) fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn config(text: &str) -> Config {
    match parse(&dedent(text), Path::new(ORIGIN)) {
        Ok(config) => config,
        Err(e) => panic!("expected the config to parse, got: {e}"),
    }
}

fn error(text: &str) -> ConfigError {
    match parse(&dedent(text), Path::new(ORIGIN)) {
        Ok(config) => panic!("expected an error, the config parsed: {config:?}"),
        Err(e) => e,
    }
}

/// The error names `key` on `line` and says `fragment`.
#[track_caller]
pub(super) fn assert_at(e: &ConfigError, line: usize, key: &str, fragment: &str) {
    assert_eq!(e.path, PathBuf::from(ORIGIN), "{e}");
    assert_eq!(e.line, Some(line), "wrong line in: {e}");
    assert_eq!(e.key, key, "wrong key in: {e}");
    assert!(
        e.message.contains(fragment),
        "message lacks {fragment:?}: {e}"
    );
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ports(list: &[(u16, u16)]) -> Vec<PortRange> {
    list.iter()
        .map(|&(first, last)| PortRange { first, last })
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A config with a valid policy, to which a test adds the part it checks.
const POLICY: &str = "
    filter:
      sets:
        cloudflare: { cloudflare: {} }
      allow:
        - { tcp: [443], from: [cloudflare] }
";

mod parsing;
mod policy;
mod reference_doc;
mod structure;
mod values;
