//! Tests of the running service: file and Cloudflare sources end to end,
//! against real files in a temporary directory and a local HTTPS server on
//! 127.0.0.1. Each waits for the published snapshot with a deadline rather
//! than sleeping a fixed time.
use std::{path::Path, sync::Arc, time::Duration};

use ipnet::IpNet;

use super::{normalise, SetSpec, SetsService, SetsSnapshot, SourceSpec};
use crate::status::SourceStatus;

mod api_server;
mod cloudflare_sources;
mod file_sources;
mod service;

/// Long enough for a loaded CI machine; a passing test never waits it out.
const DEADLINE: Duration = Duration::from_secs(10);
/// The file poll interval of the tests.
const POLL: Duration = Duration::from_millis(50);

/// Waits until a published snapshot satisfies `ready` and returns it.
async fn wait_for(
    service: &SetsService,
    what: &str,
    ready: impl Fn(&SetsSnapshot) -> bool,
) -> Arc<SetsSnapshot> {
    let mut updates = service.subscribe();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let snapshot = updates.borrow_and_update().clone();
        if ready(&snapshot) {
            return snapshot;
        }
        match tokio::time::timeout_at(deadline, updates.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the service stopped publishing while waiting for {what}"),
            Err(_) => {
                panic!("no snapshot with {what} within {DEADLINE:?}; the last one: {snapshot:#?}")
            }
        }
    }
}

/// The status of the only (or first) source of `set`.
fn source_of<'a>(snapshot: &'a SetsSnapshot, set: &str) -> &'a SourceStatus {
    snapshot.sets[set]
        .status
        .sources
        .first()
        .unwrap_or_else(|| panic!("set {set} has no source"))
}

fn prefixes_of(snapshot: &SetsSnapshot, set: &str) -> Vec<IpNet> {
    snapshot.sets[set].prefixes.clone()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    normalise(list.iter().map(|s| {
        s.parse::<IpNet>()
            .unwrap_or_else(|e| panic!("test prefix {s}: {e}"))
    }))
}

fn set(name: &str, max_shrink: f64, sources: Vec<SourceSpec>) -> SetSpec {
    SetSpec {
        name: name.to_string(),
        sources,
        max_shrink,
    }
}

/// Replaces a file the way editors and config management do, so a poll
/// never sees it half written.
fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp-write");
    std::fs::write(&temp, text).unwrap_or_else(|e| panic!("write {}: {e}", temp.display()));
    std::fs::rename(&temp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// The persisted last-known-good file of a source.
fn lkg_path(state_dir: &Path, set: &str, kind: &str, origin: &str) -> std::path::PathBuf {
    super::store::LkgStore::new(state_dir).path_for(set, kind, origin)
}
