//! The sets subsystem: named address sets built from inline CIDRs, files and
//! Cloudflare's published ranges, kept current and validated before use.
//!
//! (Being written. The spec types below are the contract with `config`.)
use std::{path::PathBuf, time::Duration};

use ipnet::IpNet;

/// Cloudflare's address-list endpoint.
pub const CLOUDFLARE_URL: &str = "https://api.cloudflare.com/client/v4/ips";
/// Default fraction of a source's entries that one update may remove.
pub const DEFAULT_MAX_SHRINK: f64 = 0.5;

/// One named set as configured: the union of its sources.
#[derive(Clone, Debug, PartialEq)]
pub struct SetSpec {
    pub name: String,
    pub sources: Vec<SourceSpec>,
    /// An update from a file or the API that would remove more than this
    /// fraction (0.0..=1.0) of a source's entries is refused; 1.0 disables
    /// the check.
    pub max_shrink: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// CIDRs written in the config.
    Inline(Vec<IpNet>),
    /// A file with one address or CIDR per line; `#` starts a comment.
    File(PathBuf),
    /// Cloudflare's ranges: the embedded snapshot, refreshed from the API.
    Cloudflare(CloudflareSpec),
}

#[derive(Clone, Debug, PartialEq)]
pub struct CloudflareSpec {
    /// The JSON endpoint; `https://api.cloudflare.com/client/v4/ips` by default.
    pub url: String,
    /// How often to ask for a new list (default 6h).
    pub refresh: Duration,
    /// Timeout of one whole request (default 10s).
    pub timeout: Duration,
    /// A PEM bundle of CA certificates to trust instead of the built-in web
    /// roots (for a private mirror, or a test server).
    pub ca_file: Option<PathBuf>,
}

impl Default for CloudflareSpec {
    fn default() -> Self {
        CloudflareSpec {
            url: CLOUDFLARE_URL.to_string(),
            refresh: Duration::from_secs(6 * 3600),
            timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}
