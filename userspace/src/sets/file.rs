//! File sources: read at load, then polled for changes and re-read.
//!
//! A change is any difference in what `stat` says about the path, followed
//! through its symlinks (device, inode, size, mtime, ctime), in `lstat` of the
//! path itself, or in where the path resolves to. The last two catch a
//! Kubernetes ConfigMap update, which swaps a `..data` symlink two levels up
//! and may leave every other number alike. File timestamps advance with the
//! kernel's coarse clock, so a second same-size write within one tick of the
//! read leaves the fingerprint alike too; a file read while that fresh is
//! read once more a little later (git's "racy" check). Polling rather than
//! inotify keeps it correct on every filesystem and through every kind of swap.
use std::{
    hash::{Hash as _, Hasher as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{io::AsyncReadExt as _, time::Instant};

use super::{parse::parse_set_file, source::Fetched, SourceHandle};

/// A set file larger than this is refused rather than read into memory
/// (a million prefixes fit in well under this).
const MAX_FILE_BYTES: u64 = 64 << 20;
/// How long after reading a freshly modified file it is read once more.
const RACY_RECHECK: Duration = Duration::from_secs(1);

/// What polling compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    link_ino: u64,
    link_mtime: (i64, i64),
    resolved: PathBuf,
}

impl Fingerprint {
    /// Modified in this second or the last: a write in the same clock tick
    /// as the read would not have changed the fingerprint.
    fn is_fresh(&self) -> bool {
        let now = i64::try_from(crate::status::unix_now()).unwrap_or(i64::MAX);
        self.mtime.0 >= now.saturating_sub(1)
    }
}

pub(crate) fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let link = std::fs::symlink_metadata(path)?;
    let target = std::fs::metadata(path)?;
    let resolved = std::fs::canonicalize(path)?;
    Ok(Fingerprint {
        dev: target.dev(),
        ino: target.ino(),
        len: target.len(),
        mtime: (target.mtime(), target.mtime_nsec()),
        ctime: (target.ctime(), target.ctime_nsec()),
        link_ino: link.ino(),
        link_mtime: (link.mtime(), link.mtime_nsec()),
        resolved,
    })
}

/// What the poller knows about the file from its last read.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seen {
    /// `None` if the path could not be stat'ed (missing, dangling symlink,
    /// no permission on a directory).
    fingerprint: Option<Fingerprint>,
    /// A hash of the bytes last read; `None` if they could not be read.
    content: Option<u64>,
    /// When to read again although the fingerprint is unchanged.
    recheck_at: Option<Instant>,
}

impl Seen {
    /// `fingerprint` is the one taken before the read that returned `content`.
    pub fn new(fingerprint: std::io::Result<Fingerprint>, content: Option<u64>) -> Seen {
        let fingerprint = fingerprint.ok();
        let recheck_at = fingerprint
            .as_ref()
            .filter(|f| f.is_fresh())
            .map(|_| Instant::now() + RACY_RECHECK);
        Seen {
            fingerprint,
            content,
            recheck_at,
        }
    }
}

/// Reads and parses a set file; also returns a hash of its bytes. Errors name
/// what went wrong but not the path, which the source's status and log lines
/// carry already.
pub(crate) async fn read(path: &Path) -> (Fetched, Option<u64>) {
    let mut bytes = Vec::new();
    let read = async {
        let file = tokio::fs::File::open(path).await?;
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).await
    };
    let fetched = match read.await {
        Err(e) => return (Fetched::Failed(format!("cannot read: {e}")), None),
        Ok(n) if n as u64 > MAX_FILE_BYTES => {
            Fetched::Failed(format!("larger than {} MiB", MAX_FILE_BYTES >> 20))
        }
        // Invalid UTF-8 becomes U+FFFD and then a parse error with its line.
        Ok(_) => match parse_set_file(&String::from_utf8_lossy(&bytes)) {
            Ok(prefixes) => Fetched::List {
                prefixes,
                etag: None,
            },
            Err(e) => Fetched::Failed(e.to_string()),
        },
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    (fetched, Some(hasher.finish()))
}

/// Why a poll reads the file, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Poll {
    Skip,
    /// `refresh_now`, or the fingerprint changed: report whatever is read.
    Read,
    /// The racy second look: report only if the bytes differ.
    Recheck,
}

impl Seen {
    fn poll(&self, now: &std::io::Result<Fingerprint>, at: Instant, forced: bool) -> Poll {
        if forced || now.as_ref().ok() != self.fingerprint.as_ref() {
            Poll::Read
        } else if self.recheck_at.is_some_and(|due| at >= due) {
            Poll::Recheck
        } else {
            Poll::Skip
        }
    }
}

/// Polls `path` every `poll` and re-reads it when its fingerprint changes, at
/// once on `refresh_now`, and once more after reading it fresh. `seen` is
/// what the load that put the current state in place saw. Returns when the
/// source is removed or the service is gone.
pub(crate) async fn watch(source: SourceHandle, path: PathBuf, poll: Duration, mut seen: Seen) {
    let mut refresh = source.refresh_requests();
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(poll) => false,
            changed = refresh.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
        };
        // Taken before reading, so a change during the read is seen next time.
        let now = fingerprint(&path);
        let why = seen.poll(&now, Instant::now(), forced);
        if why == Poll::Skip {
            continue;
        }
        let (fetched, content) = match &now {
            Err(e) => (Fetched::Failed(format!("cannot read: {e}")), None),
            Ok(_) => read(&path).await,
        };
        let same_bytes = content.is_some() && content == seen.content;
        seen = Seen::new(now, content);
        if why == Poll::Recheck && same_bytes {
            continue;
        }
        if !source.apply(fetched).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_file_gets_one_more_look_even_if_its_fingerprint_is_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admins.txt");
        std::fs::write(&path, "10.0.0.1\n").unwrap();
        let seen = Seen::new(fingerprint(&path), Some(1));
        let at = Instant::now();
        assert_eq!(seen.poll(&fingerprint(&path), at, false), Poll::Skip);
        assert_eq!(seen.poll(&fingerprint(&path), at, true), Poll::Read);
        // A write in the same clock tick as the read leaves this fingerprint;
        // only the second look can see it.
        assert_eq!(
            seen.poll(&fingerprint(&path), at + RACY_RECHECK, false),
            Poll::Recheck
        );

        // A file last modified long ago needs no second look.
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        let seen = Seen::new(fingerprint(&path), Some(1));
        assert_eq!(
            seen.poll(&fingerprint(&path), at + RACY_RECHECK * 10, false),
            Poll::Skip
        );
        std::fs::write(&path, "10.0.0.2\n").unwrap();
        assert_eq!(seen.poll(&fingerprint(&path), at, false), Poll::Read);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(seen.poll(&fingerprint(&path), at, false), Poll::Read);
        let gone = Seen::new(fingerprint(&path), None);
        assert_eq!(gone.poll(&fingerprint(&path), at, false), Poll::Skip);
    }
}
