//! The sets subsystem: named address sets built from inline CIDRs, files and
//! Cloudflare's published ranges, kept current and validated before use.
//!
//! [`SetsService`] loads every source once, then keeps files polled and the
//! Cloudflare list refreshed in background tasks. A new list from a file or
//! the API replaces the one in force only if it parses, is not empty and does
//! not shrink the source beyond the set's `max_shrink`; accepted lists are
//! persisted as last-known-good under `<state_dir>/sets/` and used after a
//! restart when the source cannot produce a valid list. Every change of
//! contents or status is published as a new [`SetsSnapshot`] on a watch
//! channel. Compiling sets into the kernel's maps is `policy`'s job, and
//! rendering the counters as metrics is `metrics`' job, not this module's.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use ipnet::IpNet;

use crate::status::SetStatus;

mod api;
mod file;
mod parse;
mod service;
mod source;
mod store;
#[cfg(test)]
mod tests;

pub use parse::{normalise, parse_set_file, SetFileError};
pub use service::SetsService;
pub use store::LKG_DIR;

use service::SourceHandle;

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

/// The contents and status of every set at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetsSnapshot {
    pub sets: BTreeMap<String, LoadedSet>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadedSet {
    /// The union of the sources' lists in force: sorted, deduplicated, host
    /// bits cleared.
    pub prefixes: Vec<IpNet>,
    pub status: SetStatus,
}

impl SetsSnapshot {
    /// The prefixes of every loaded set; a set with a source that has not
    /// produced a list yet is left out (it is not enforced).
    pub fn contents(&self) -> BTreeMap<String, Vec<IpNet>> {
        self.sets
            .iter()
            .filter(|(_, set)| set.status.loaded)
            .map(|(name, set)| (name.clone(), set.prefixes.clone()))
            .collect()
    }

    pub fn statuses(&self) -> Vec<SetStatus> {
        self.sets.values().map(|set| set.status.clone()).collect()
    }

    pub fn all_loaded(&self) -> bool {
        self.sets.values().all(|set| set.status.loaded)
    }
}
