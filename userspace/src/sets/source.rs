//! One source's list in force and the rules for replacing it: every new list
//! is validated (not empty, not shrinking beyond `max_shrink`) before it
//! replaces the current one, and every attempt is recorded in the source's
//! [`SourceStatus`]. Pure state transitions; reading files, fetching and
//! logging happen around them.
use ipnet::IpNet;

use crate::status::SourceStatus;

/// What a source is, as the status names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Inline,
    File,
    Cloudflare,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inline => "inline",
            Kind::File => "file",
            Kind::Cloudflare => "cloudflare",
        }
    }

    /// Where a list obtained live from this kind of source comes from.
    fn live(self) -> Obtained {
        match self {
            Kind::Inline => Obtained::Config,
            Kind::File => Obtained::File,
            Kind::Cloudflare => Obtained::Api,
        }
    }
}

/// Where the entries in force came from (`SourceStatus::from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Obtained {
    Config,
    File,
    Api,
    LastKnownGood,
    Embedded,
}

impl Obtained {
    pub fn as_str(self) -> &'static str {
        match self {
            Obtained::Config => "config",
            Obtained::File => "file",
            Obtained::Api => "api",
            Obtained::LastKnownGood => "last-known-good",
            Obtained::Embedded => "embedded",
        }
    }
}

/// What one attempt to read a file or fetch the API produced.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fetched {
    /// A list that parsed, in normal form.
    List {
        prefixes: Vec<IpNet>,
        etag: Option<String>,
    },
    /// The API confirmed the list in force (HTTP 304).
    NotModified,
    /// No list: I/O, HTTP or parse error.
    Failed(String),
}

/// How an attempt changed the source.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// The new list is in force. `changed` if the list, its etag or where it
    /// came from differ from before, i.e. the persisted copy is stale.
    Accepted {
        changed: bool,
    },
    NotModified,
    Refused(String),
    Failed(String),
}

#[derive(Clone, Debug)]
pub(crate) struct SourceState {
    pub kind: Kind,
    /// `None` until the source has produced a list.
    pub list: Option<Vec<IpNet>>,
    pub status: SourceStatus,
}

impl SourceState {
    pub fn new(kind: Kind, origin: String) -> Self {
        SourceState {
            kind,
            list: None,
            status: SourceStatus {
                kind: kind.as_str().to_string(),
                origin,
                ..SourceStatus::default()
            },
        }
    }

    /// Puts a list in force without validation: the config's own CIDRs, a
    /// persisted last-known-good list or the embedded snapshot.
    pub fn install(
        &mut self,
        prefixes: Vec<IpNet>,
        from: Obtained,
        obtained_at: u64,
        etag: Option<String>,
    ) {
        self.status.entries = prefixes.len();
        self.status.from = from.as_str().to_string();
        self.status.obtained_at = obtained_at;
        self.status.etag = etag;
        self.list = Some(prefixes);
    }

    /// Applies the result of one attempt at time `now`: a valid list
    /// replaces the one in force, anything else keeps it.
    pub fn apply(&mut self, fetched: Fetched, max_shrink: f64, now: u64) -> Verdict {
        self.status.last_attempt_at = now;
        let verdict = match fetched {
            Fetched::Failed(reason) => Verdict::Failed(reason),
            Fetched::NotModified => Verdict::NotModified,
            Fetched::List { prefixes, .. } if prefixes.is_empty() => {
                Verdict::Refused("empty list".to_string())
            }
            Fetched::List { prefixes, etag } => {
                // The embedded snapshot is Cloudflare's own list: a yardstick
                // for Cloudflare's endpoint, not for a mirror at another URL
                // that may serve a list of its own.
                let foreign_snapshot = self.status.from == Obtained::Embedded.as_str()
                    && self.status.origin != super::CLOUDFLARE_URL;
                let current = if foreign_snapshot {
                    &[][..]
                } else {
                    self.list.as_deref().unwrap_or_default()
                };
                match shrink_refusal(current, &prefixes, max_shrink) {
                    Some(reason) => Verdict::Refused(reason),
                    None => {
                        let live = self.kind.live();
                        let changed = self.list.as_ref() != Some(&prefixes)
                            || self.status.etag != etag
                            || self.status.from != live.as_str();
                        self.install(prefixes, live, now, etag);
                        Verdict::Accepted { changed }
                    }
                }
            }
        };
        match &verdict {
            Verdict::Accepted { .. } => {
                self.status.successes += 1;
                self.status.last_success_at = now;
                self.status.last_result = "ok".to_string();
            }
            Verdict::NotModified => {
                self.status.successes += 1;
                self.status.last_success_at = now;
                self.status.last_result = "not modified".to_string();
                // The API vouched for the list in force, whatever it was
                // loaded from.
                if self.list.is_some() {
                    self.status.from = self.kind.live().as_str().to_string();
                }
            }
            Verdict::Refused(reason) => {
                self.status.refusals += 1;
                self.status.last_result = format!("refused: {reason}");
            }
            Verdict::Failed(reason) => {
                self.status.failures += 1;
                self.status.last_result = format!("error: {reason}");
            }
        }
        verdict
    }
}

/// Removing this many entries or fewer is never refused as a shrink: on a
/// short list (an `admins.txt` of one or two lines) any edit is a large
/// fraction, and a truncated list is not what such an edit looks like.
pub const SHRINK_ALWAYS_ALLOWED: usize = 2;

/// Why replacing `current` with `new` (both in normal form) removes too much,
/// or `None` if it does not. The fraction is of `current`'s entries that are
/// absent from `new`; `max_shrink >= 1.0` never refuses, and neither does
/// removing at most [`SHRINK_ALWAYS_ALLOWED`] entries.
pub(crate) fn shrink_refusal(current: &[IpNet], new: &[IpNet], max_shrink: f64) -> Option<String> {
    if current.is_empty() || max_shrink >= 1.0 {
        return None;
    }
    let removed = current
        .iter()
        .filter(|net| new.binary_search(net).is_err())
        .count();
    if removed <= SHRINK_ALWAYS_ALLOWED {
        return None;
    }
    let fraction = removed as f64 / current.len() as f64;
    (fraction > max_shrink).then(|| {
        format!(
            "would remove {} of {} entries (max_shrink {})",
            percent(fraction),
            current.len(),
            percent(max_shrink)
        )
    })
}

/// `0.8` as `80%`, `0.125` as `12.5%`.
fn percent(fraction: f64) -> String {
    let value = fraction * 100.0;
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0}%")
    } else {
        format!("{value:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sets::parse::normalise;

    fn hosts(range: std::ops::Range<u8>) -> Vec<IpNet> {
        normalise(range.map(|i| IpNet::from(std::net::IpAddr::from([10, 0, 0, i]))))
    }

    fn list(prefixes: Vec<IpNet>) -> Fetched {
        Fetched::List {
            prefixes,
            etag: None,
        }
    }

    #[test]
    fn shrink_is_the_fraction_of_current_entries_missing_from_the_new_list() {
        let twenty = hosts(0..20);
        // Keeps 4 of 20 and adds 10 new ones: 80% of the old entries go.
        let mut new = hosts(16..30);
        new.sort();
        assert_eq!(
            shrink_refusal(&twenty, &new, 0.5).as_deref(),
            Some("would remove 80% of 20 entries (max_shrink 50%)")
        );
        // Exactly at the limit is allowed.
        assert_eq!(shrink_refusal(&twenty, &hosts(10..20), 0.5), None);
        assert_eq!(
            shrink_refusal(&twenty, &hosts(11..20), 0.5).as_deref(),
            Some("would remove 55% of 20 entries (max_shrink 50%)")
        );
        assert_eq!(shrink_refusal(&twenty, &hosts(19..20), 1.0), None);
        assert_eq!(shrink_refusal(&[], &hosts(0..1), 0.0), None);
        assert_eq!(
            shrink_refusal(&hosts(0..8), &hosts(0..5), 0.1).as_deref(),
            Some("would remove 37.5% of 8 entries (max_shrink 10%)")
        );
        // A one-line file replaced by another line, or two of three removed,
        // is an edit, not a truncation.
        assert_eq!(shrink_refusal(&hosts(0..1), &hosts(5..6), 0.5), None);
        assert_eq!(shrink_refusal(&hosts(0..3), &hosts(2..3), 0.0), None);
        assert_eq!(
            shrink_refusal(&hosts(0..3), &hosts(5..6), 0.5).as_deref(),
            Some("would remove 100% of 3 entries (max_shrink 50%)")
        );
    }

    #[test]
    fn the_embedded_snapshot_is_a_shrink_yardstick_only_for_cloudflares_own_url() {
        let snapshot = hosts(0..20);
        let unrelated = hosts(100..103);
        let mut official = SourceState::new(Kind::Cloudflare, super::super::CLOUDFLARE_URL.into());
        official.install(snapshot.clone(), Obtained::Embedded, 0, None);
        assert!(matches!(
            official.apply(list(unrelated.clone()), 0.5, 1),
            Verdict::Refused(_)
        ));
        assert_eq!(official.list, Some(snapshot.clone()));

        let mut mirror = SourceState::new(Kind::Cloudflare, "https://mirror.example/ips".into());
        mirror.install(snapshot, Obtained::Embedded, 0, None);
        assert_eq!(
            mirror.apply(list(unrelated.clone()), 0.5, 1),
            Verdict::Accepted { changed: true }
        );
        // From then on the mirror's own list is the yardstick.
        assert!(matches!(
            mirror.apply(list(hosts(200..201)), 0.5, 2),
            Verdict::Refused(_)
        ));
        assert_eq!(mirror.list, Some(unrelated));
    }

    #[test]
    fn a_valid_list_replaces_the_one_in_force_and_is_counted() {
        let mut source = SourceState::new(Kind::File, "/a.txt".into());
        assert_eq!(
            source.apply(list(hosts(0..3)), 0.5, 100),
            Verdict::Accepted { changed: true }
        );
        assert_eq!(source.list, Some(hosts(0..3)));
        let s = &source.status;
        assert_eq!(
            (
                s.entries,
                s.from.as_str(),
                s.obtained_at,
                s.last_result.as_str()
            ),
            (3, "file", 100, "ok")
        );
        assert_eq!((s.successes, s.failures, s.refusals), (1, 0, 0));

        // The same list again is a success that leaves the stored copy valid.
        assert_eq!(
            source.apply(list(hosts(0..3)), 0.5, 101),
            Verdict::Accepted { changed: false }
        );
        assert_eq!(source.status.successes, 2);
        assert_eq!(source.status.last_success_at, 101);
    }

    #[test]
    fn refusals_and_failures_keep_the_list_in_force() {
        let mut source = SourceState::new(Kind::Cloudflare, "https://x/ips".into());
        source.install(hosts(0..20), Obtained::LastKnownGood, 0, None);

        let verdict = source.apply(list(vec![]), 0.5, 10);
        assert_eq!(verdict, Verdict::Refused("empty list".into()));
        let verdict = source.apply(list(hosts(0..4)), 0.5, 11);
        assert!(matches!(verdict, Verdict::Refused(_)), "{verdict:?}");
        assert_eq!(
            source.status.last_result,
            "refused: would remove 80% of 20 entries (max_shrink 50%)"
        );
        let verdict = source.apply(Fetched::Failed("HTTP 502 Bad Gateway".into()), 0.5, 12);
        assert!(matches!(verdict, Verdict::Failed(_)));
        assert_eq!(source.status.last_result, "error: HTTP 502 Bad Gateway");

        assert_eq!(source.list, Some(hosts(0..20)));
        let s = &source.status;
        assert_eq!((s.entries, s.from.as_str()), (20, "last-known-good"));
        assert_eq!((s.successes, s.failures, s.refusals), (0, 1, 2));
        assert_eq!((s.last_attempt_at, s.last_success_at), (12, 0));
    }

    #[test]
    fn not_modified_confirms_the_list_and_its_origin() {
        let mut source = SourceState::new(Kind::Cloudflare, "https://x/ips".into());
        source.install(
            hosts(0..5),
            Obtained::LastKnownGood,
            7,
            Some("\"e1\"".into()),
        );
        assert_eq!(
            source.apply(Fetched::NotModified, 0.5, 20),
            Verdict::NotModified
        );
        let s = &source.status;
        assert_eq!(
            (s.from.as_str(), s.obtained_at, s.last_success_at),
            ("api", 7, 20)
        );
        assert_eq!(
            (s.last_result.as_str(), s.successes, s.etag.as_deref()),
            ("not modified", 1, Some("\"e1\""))
        );
    }
}
