//! The last-known-good lists of file and Cloudflare sources, persisted under
//! `<state_dir>/sets/` so that a restarted daemon enforces the last list it
//! accepted when its source is unreadable or unreachable. One JSON file per
//! source, replaced atomically. The store never fails the caller: an
//! unwritable directory is logged and the daemon keeps going in memory; a
//! corrupt file is logged and ignored.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::parse::normalise;

/// The subdirectory of the state directory that holds the lists.
pub const LKG_DIR: &str = "sets";

/// What is persisted for one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct LkgRecord {
    pub set: String,
    /// `file` or `cloudflare`.
    pub kind: String,
    /// The file path or the URL; checked on load, so a file of another
    /// source (a hash collision, a hand-copied file) is never used.
    pub origin: String,
    pub prefixes: Vec<IpNet>,
    pub etag: Option<String>,
    /// Unix seconds when the list was obtained from its source.
    pub obtained_at: u64,
}

pub(crate) struct LkgStore {
    dir: PathBuf,
    /// Set after the first failed write, so an unwritable state directory
    /// is one warning, not one per update.
    warned_unwritable: AtomicBool,
    temp_counter: AtomicU64,
}

impl LkgStore {
    pub fn new(state_dir: &Path) -> Self {
        LkgStore {
            dir: state_dir.join(LKG_DIR),
            warned_unwritable: AtomicBool::new(false),
            temp_counter: AtomicU64::new(0),
        }
    }

    /// `<set>-<kind>-<hash of origin>.json`; the set name is reduced to
    /// characters that are safe in a file name.
    pub fn path_for(&self, set: &str, kind: &str, origin: &str) -> PathBuf {
        let safe_set: String = set
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
                _ => '_',
            })
            .collect();
        let hash = fnv1a64(origin.as_bytes());
        self.dir
            .join(format!("{safe_set}-{kind}-{:012x}.json", hash >> 16))
    }

    /// The persisted list of this source, if there is a usable one.
    pub fn load(&self, set: &str, kind: &str, origin: &str) -> Option<LkgRecord> {
        let path = self.path_for(set, kind, origin);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    "cannot read last-known-good list, ignoring it: {e}"
                );
                return None;
            }
        };
        let problem = match serde_json::from_slice::<LkgRecord>(&bytes) {
            Err(e) => format!("not a last-known-good record: {e}"),
            Ok(record) if record.origin != origin || record.kind != kind => format!(
                "it belongs to {} source {}, not {kind} source {origin}",
                record.kind, record.origin
            ),
            Ok(record) if record.prefixes.is_empty() => "it holds no prefixes".to_string(),
            Ok(mut record) => {
                record.prefixes = normalise(record.prefixes);
                return Some(record);
            }
        };
        tracing::warn!(
            path = %path.display(),
            set,
            "ignoring corrupt last-known-good list: {problem}"
        );
        None
    }

    /// Persists a newly accepted list. Failures are logged, not returned: the
    /// list is in force in memory either way.
    pub fn save(&self, record: &LkgRecord) {
        let path = self.path_for(&record.set, &record.kind, &record.origin);
        match self.write_atomically(&path, record) {
            Ok(()) => tracing::debug!(path = %path.display(), "saved last-known-good list"),
            Err(e) if !self.warned_unwritable.swap(true, Ordering::Relaxed) => tracing::warn!(
                path = %path.display(),
                "cannot persist last-known-good lists, keeping them in memory only: {e}"
            ),
            Err(e) => {
                tracing::debug!(path = %path.display(), "cannot persist last-known-good list: {e}")
            }
        }
    }

    fn write_atomically(&self, path: &Path, record: &LkgRecord) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("record");
        let temp = self.dir.join(format!(
            ".{file_name}.{}.{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}

/// 64-bit FNV-1a: tiny and stable across Rust releases, unlike `DefaultHasher`,
/// so file names survive an upgrade.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(origin: &str) -> LkgRecord {
        LkgRecord {
            set: "admins".into(),
            kind: "file".into(),
            origin: origin.into(),
            prefixes: vec!["10.0.0.0/8".parse().unwrap()],
            etag: None,
            obtained_at: 1_700_000_000,
        }
    }

    #[test]
    fn round_trips_and_names_files_by_set_kind_and_origin() {
        let dir = tempfile::tempdir().unwrap();
        let store = LkgStore::new(dir.path());
        let saved = record("/etc/xdpgate/admins.txt");
        store.save(&saved);
        assert_eq!(
            store.load("admins", "file", "/etc/xdpgate/admins.txt"),
            Some(saved)
        );
        assert_eq!(store.load("admins", "file", "/etc/other.txt"), None);
        let path = store.path_for("admins", "file", "/etc/xdpgate/admins.txt");
        assert!(path.starts_with(dir.path().join("sets")));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("admins-file-") && name.ends_with(".json"),
            "{name}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sets"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
    }

    #[test]
    fn file_names_are_stable_across_releases() {
        // The hash is part of the on-disk format: changing it orphans every
        // persisted list.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let store = LkgStore::new(Path::new("/state"));
        assert_eq!(
            store.path_for("../cf", "cloudflare", "a"),
            Path::new("/state/sets/.._cf-cloudflare-af63dc4c8601.json")
        );
    }

    #[test]
    fn corrupt_or_foreign_records_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = LkgStore::new(dir.path());
        let path = store.path_for("admins", "file", "/a.txt");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();

        std::fs::write(&path, b"{ truncated").unwrap();
        assert_eq!(store.load("admins", "file", "/a.txt"), None);

        let foreign = serde_json::to_vec(&record("/b.txt")).unwrap();
        std::fs::write(&path, foreign).unwrap();
        assert_eq!(store.load("admins", "file", "/a.txt"), None);

        let mut empty = record("/a.txt");
        empty.prefixes.clear();
        std::fs::write(&path, serde_json::to_vec(&empty).unwrap()).unwrap();
        assert_eq!(store.load("admins", "file", "/a.txt"), None);
    }

    #[test]
    fn an_unwritable_state_dir_is_survivable() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be: not even root can
        // create `sets/` under it.
        let not_a_dir = dir.path().join("state");
        std::fs::write(&not_a_dir, b"").unwrap();
        let store = LkgStore::new(&not_a_dir);
        store.save(&record("/a.txt"));
        store.save(&record("/a.txt"));
        assert_eq!(store.load("admins", "file", "/a.txt"), None);
    }
}
