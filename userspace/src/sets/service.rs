//! The running service: the registry of sets and their sources, the
//! background task of each file and Cloudflare source, and the watch channel
//! that publishes a [`SetsSnapshot`] after every change. Sources are loaded
//! and reconfigured here; what a valid update is, is `source`'s business.
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::Duration,
};

use tokio::{sync::watch, task::AbortHandle};

use super::{
    api, file,
    file::Seen,
    normalise,
    source::{Fetched, Kind, Obtained, SourceState, Verdict},
    store::{LkgRecord, LkgStore},
    LoadedSet, SetSpec, SetsSnapshot, SourceSpec,
};
use crate::status::{unix_now, SetStatus};

/// Polling faster than this would only burn CPU.
const MIN_FILE_POLL: Duration = Duration::from_millis(10);

/// The running sets subsystem. Clones share it.
#[derive(Clone)]
pub struct SetsService {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    snapshots: watch::Sender<Arc<SetsSnapshot>>,
    /// Bumped by `refresh_now`; every background task watches it.
    refresh: watch::Sender<u64>,
    store: Arc<LkgStore>,
    file_poll: Duration,
    next_id: AtomicU64,
    /// Reconfigurations run one at a time: each plans against the registry,
    /// loads without the lock held, then installs.
    reconfiguring: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Registry {
    sets: BTreeMap<String, SetEntry>,
    stopped: bool,
}

struct SetEntry {
    max_shrink: f64,
    sources: Vec<SourceEntry>,
}

struct SourceEntry {
    /// Background tasks find their source by this id, so a reconfiguration
    /// that reorders or removes sources cannot misdirect an update.
    id: u64,
    spec: SourceSpec,
    state: SourceState,
    task: Option<AbortHandle>,
}

/// A source loaded by `start` or `reconfigure`, before it joins the registry.
struct NewSource {
    state: SourceState,
    /// For files: what the load read.
    seen: Seen,
}

impl SetsService {
    /// Loads every source once and starts background refresh tasks on the
    /// current tokio runtime. Returns once each source has its first list or
    /// has failed: inline at once; files read now (falling back to the
    /// persisted last-known-good if unreadable or invalid); `cloudflare` takes
    /// the persisted last-known-good if any, else the embedded snapshot, and
    /// fetches in the background.
    pub async fn start(
        specs: Vec<SetSpec>,
        state_dir: PathBuf,
        file_poll: Duration,
    ) -> SetsService {
        let (snapshots, _) = watch::channel(Arc::new(SetsSnapshot::default()));
        let (refresh, _) = watch::channel(0);
        let service = SetsService {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::default()),
                snapshots,
                refresh,
                store: Arc::new(LkgStore::new(&state_dir)),
                file_poll: file_poll.max(MIN_FILE_POLL),
                next_id: AtomicU64::new(1),
                reconfiguring: tokio::sync::Mutex::new(()),
            }),
        };
        service.reconfigure(specs).await;
        service
    }

    /// Every change of contents or status publishes a new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<SetsSnapshot>> {
        self.inner.snapshots.subscribe()
    }

    pub fn snapshot(&self) -> Arc<SetsSnapshot> {
        self.inner.snapshots.borrow().clone()
    }

    /// New specs after a config reload. Sources whose spec is unchanged (same
    /// set name, equal `SourceSpec`) keep their list, status and task (no
    /// refetch); a changed `max_shrink` applies to their next update. New
    /// sources load as in [`start`](Self::start); removed ones stop. Does
    /// nothing after [`shutdown`](Self::shutdown).
    pub async fn reconfigure(&self, specs: Vec<SetSpec>) {
        let specs = one_spec_per_name(specs);
        let _one_at_a_time = self.inner.reconfiguring.lock().await;
        let Some(kept) = self.inner.plan(&specs) else {
            return;
        };
        let mut loaded: Vec<Vec<Option<NewSource>>> = Vec::with_capacity(specs.len());
        for (set, kept) in specs.iter().zip(&kept) {
            let mut new_sources = Vec::with_capacity(set.sources.len());
            for (spec, kept) in set.sources.iter().zip(kept) {
                new_sources.push(match kept {
                    Some(_) => None,
                    None => Some(self.inner.load(set, spec).await),
                });
            }
            loaded.push(new_sources);
        }
        self.install(specs, kept, loaded);
    }

    /// SIGHUP: re-read every file and refetch the API now, whatever the
    /// timers say. API requests stay conditional.
    pub fn refresh_now(&self) {
        self.inner.refresh.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stops the background tasks. The last snapshot stays readable.
    pub fn shutdown(&self) {
        let mut registry = self.inner.lock();
        registry.stopped = true;
        for source in registry.sets.values_mut().flat_map(|s| &mut s.sources) {
            if let Some(task) = source.task.take() {
                task.abort();
            }
        }
    }

    /// Puts the planned sets in force: kept sources move over with their
    /// state and task, new ones get a task, the rest are stopped.
    fn install(
        &self,
        specs: Vec<SetSpec>,
        kept: Vec<Vec<Option<u64>>>,
        loaded: Vec<Vec<Option<NewSource>>>,
    ) {
        let mut registry = self.inner.lock();
        if registry.stopped {
            return;
        }
        let mut previous: HashMap<u64, SourceEntry> = std::mem::take(&mut registry.sets)
            .into_values()
            .flat_map(|set| set.sources)
            .map(|source| (source.id, source))
            .collect();
        for ((set, kept), loaded) in specs.into_iter().zip(kept).zip(loaded) {
            let mut sources = Vec::with_capacity(set.sources.len());
            for ((spec, kept), new) in set.sources.into_iter().zip(kept).zip(loaded) {
                let entry = match (kept, new) {
                    (Some(id), _) => previous.remove(&id).expect(
                        "reconfigurations are serialised, so a planned source is still there",
                    ),
                    (None, Some(new)) => {
                        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                        let task = self.spawn_task(id, &spec, new.seen);
                        SourceEntry {
                            id,
                            spec,
                            state: new.state,
                            task,
                        }
                    }
                    (None, None) => unreachable!("every source is either kept or loaded"),
                };
                sources.push(entry);
            }
            registry.sets.insert(
                set.name,
                SetEntry {
                    max_shrink: set.max_shrink,
                    sources,
                },
            );
        }
        for removed in previous.into_values() {
            if let Some(task) = removed.task {
                task.abort();
            }
        }
        self.inner.publish(&registry);
    }

    fn spawn_task(&self, id: u64, spec: &SourceSpec, seen: Seen) -> Option<AbortHandle> {
        let handle = SourceHandle {
            inner: Arc::downgrade(&self.inner),
            id,
            refresh: self.inner.refresh.subscribe(),
        };
        let task = match spec {
            SourceSpec::Inline(_) => return None,
            SourceSpec::File(path) => tokio::spawn(file::watch(
                handle,
                path.clone(),
                self.inner.file_poll,
                seen,
            )),
            SourceSpec::Cloudflare(cloudflare) => {
                tokio::spawn(api::refresh(handle, cloudflare.clone()))
            }
        };
        Some(task.abort_handle())
    }
}

impl fmt::Debug for SetsService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetsService")
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock; if something did, the
        // registry is still a consistent value.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// For each source in `specs`, the id of the running source it keeps
    /// (same set, equal spec), or `None` if it must be loaded. `None` overall
    /// once the service is shut down.
    fn plan(&self, specs: &[SetSpec]) -> Option<Vec<Vec<Option<u64>>>> {
        let registry = self.lock();
        if registry.stopped {
            return None;
        }
        let plan = specs
            .iter()
            .map(|set| {
                let running = registry
                    .sets
                    .get(&set.name)
                    .map(|s| s.sources.as_slice())
                    .unwrap_or_default();
                let mut claimed: Vec<u64> = Vec::new();
                set.sources
                    .iter()
                    .map(|spec| {
                        let id = running
                            .iter()
                            .find(|source| source.spec == *spec && !claimed.contains(&source.id))?
                            .id;
                        claimed.push(id);
                        Some(id)
                    })
                    .collect()
            })
            .collect();
        Some(plan)
    }

    /// Gives a new source its first list: see [`SetsService::start`].
    async fn load(&self, set: &SetSpec, spec: &SourceSpec) -> NewSource {
        let now = unix_now();
        match spec {
            SourceSpec::Inline(cidrs) => {
                let mut state = SourceState::new(Kind::Inline, "config".to_string());
                state.install(
                    normalise(cidrs.iter().copied()),
                    Obtained::Config,
                    now,
                    None,
                );
                state.status.last_attempt_at = now;
                state.status.last_success_at = now;
                state.status.last_result = "ok".to_string();
                state.status.successes = 1;
                NewSource {
                    state,
                    seen: Seen::default(),
                }
            }
            SourceSpec::File(path) => {
                let mut state = SourceState::new(Kind::File, path.display().to_string());
                let fingerprint = file::fingerprint(path);
                let (fetched, content) = file::read(path).await;
                let verdict = state.apply(fetched, set.max_shrink, now);
                report(&set.name, &state, &verdict);
                if matches!(verdict, Verdict::Accepted { .. }) {
                    self.save(lkg_record(&set.name, &state)).await;
                } else {
                    self.fall_back_to_last_known_good(&set.name, &mut state);
                }
                NewSource {
                    state,
                    seen: Seen::new(fingerprint, content),
                }
            }
            SourceSpec::Cloudflare(cloudflare) => {
                let mut state = SourceState::new(Kind::Cloudflare, cloudflare.url.clone());
                self.fall_back_to_last_known_good(&set.name, &mut state);
                if state.list.is_none() {
                    state.install(
                        normalise(crate::cloudflare::snapshot()),
                        Obtained::Embedded,
                        0,
                        None,
                    );
                }
                state.status.last_result = "not fetched yet".to_string();
                NewSource {
                    state,
                    seen: Seen::default(),
                }
            }
        }
    }

    fn fall_back_to_last_known_good(&self, set: &str, state: &mut SourceState) {
        let kind = state.kind.as_str();
        let Some(record) = self.store.load(set, kind, &state.status.origin) else {
            return;
        };
        tracing::info!(
            set,
            kind,
            source = %state.status.origin,
            entries = record.prefixes.len(),
            obtained_at = record.obtained_at,
            "using the last-known-good list"
        );
        state.install(
            record.prefixes,
            Obtained::LastKnownGood,
            record.obtained_at,
            record.etag,
        );
    }

    /// Persists off the async workers: the write ends with an fsync.
    async fn save(&self, record: LkgRecord) {
        let store = Arc::clone(&self.store);
        let _ = tokio::task::spawn_blocking(move || store.save(&record)).await;
    }

    fn publish(&self, registry: &Registry) {
        let next = registry.snapshot();
        self.snapshots.send_if_modified(|current| {
            if **current == next {
                return false;
            }
            *current = Arc::new(next);
            true
        });
    }
}

impl Registry {
    fn find_mut(&mut self, id: u64) -> Option<(&str, f64, &mut SourceEntry)> {
        self.sets.iter_mut().find_map(|(name, set)| {
            let max_shrink = set.max_shrink;
            set.sources
                .iter_mut()
                .find(|source| source.id == id)
                .map(|source| (name.as_str(), max_shrink, source))
        })
    }

    fn snapshot(&self) -> SetsSnapshot {
        let sets = self
            .sets
            .iter()
            .map(|(name, set)| {
                let prefixes = normalise(
                    set.sources
                        .iter()
                        .filter_map(|source| source.state.list.as_deref())
                        .flatten()
                        .copied(),
                );
                let status = SetStatus {
                    name: name.clone(),
                    size: prefixes.len(),
                    loaded: set.sources.iter().all(|source| source.state.list.is_some()),
                    sources: set
                        .sources
                        .iter()
                        .map(|source| source.state.status.clone())
                        .collect(),
                };
                (name.clone(), LoadedSet { prefixes, status })
            })
            .collect();
        SetsSnapshot { sets }
    }
}

/// A background task's way back to its source. It holds the service weakly,
/// so dropping the last `SetsService` ends the tasks too.
pub(crate) struct SourceHandle {
    inner: Weak<Inner>,
    id: u64,
    refresh: watch::Receiver<u64>,
}

impl SourceHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Changes on every `refresh_now`; errors once the service is gone.
    pub fn refresh_requests(&self) -> watch::Receiver<u64> {
        self.refresh.clone()
    }

    /// The entity tag of the list in force; `None` if the source is gone.
    pub fn etag(&self) -> Option<Option<String>> {
        let inner = self.inner.upgrade()?;
        let mut registry = inner.lock();
        let (_, _, source) = registry.find_mut(self.id)?;
        Some(source.state.status.etag.clone())
    }

    /// Validates and applies one attempt's result, logs it, persists a newly
    /// accepted list and then publishes the change, so a list that has been
    /// published is on disk. False if the source is gone (removed by a
    /// reconfiguration, or the service dropped).
    ///
    /// The state is updated on a copy outside the lock (the write ends with
    /// an fsync); only this source's task changes its state, so putting the
    /// copy back loses nothing.
    pub async fn apply(&self, fetched: Fetched) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let (set, max_shrink, mut state) = {
            let mut registry = inner.lock();
            let Some((set, max_shrink, source)) = registry.find_mut(self.id) else {
                return false;
            };
            (set.to_string(), max_shrink, source.state.clone())
        };
        let verdict = state.apply(fetched, max_shrink, unix_now());
        report(&set, &state, &verdict);
        if verdict == (Verdict::Accepted { changed: true }) {
            inner.save(lkg_record(&set, &state)).await;
        }
        let mut registry = inner.lock();
        let Some((_, _, source)) = registry.find_mut(self.id) else {
            return false;
        };
        source.state = state;
        inner.publish(&registry);
        true
    }
}

/// The config module keeps set names unique; should two specs share a name
/// anyway, the last one wins, as it would in a map.
fn one_spec_per_name(specs: Vec<SetSpec>) -> Vec<SetSpec> {
    let mut by_name: BTreeMap<String, SetSpec> = BTreeMap::new();
    for spec in specs {
        if let Some(earlier) = by_name.insert(spec.name.clone(), spec) {
            tracing::warn!(set = %earlier.name, "set defined twice; the last definition is used");
        }
    }
    by_name.into_values().collect()
}

fn lkg_record(set: &str, state: &SourceState) -> LkgRecord {
    LkgRecord {
        set: set.to_string(),
        kind: state.kind.as_str().to_string(),
        origin: state.status.origin.clone(),
        prefixes: state.list.clone().unwrap_or_default(),
        etag: state.status.etag.clone(),
        obtained_at: state.status.obtained_at,
    }
}

/// One log line per attempt that changed something or went wrong.
fn report(set: &str, state: &SourceState, verdict: &Verdict) {
    let kind = state.kind.as_str();
    let source = &state.status.origin;
    let kept = match &state.list {
        Some(list) => format!("keeping the {} entries in force", list.len()),
        None => "the source has no list yet".to_string(),
    };
    match verdict {
        Verdict::Accepted { changed: true } => {
            tracing::info!(set, kind, %source, entries = state.status.entries, "new list in force")
        }
        Verdict::Accepted { changed: false } | Verdict::NotModified => {
            tracing::debug!(set, kind, %source, "{}", state.status.last_result)
        }
        Verdict::Refused(reason) => {
            tracing::warn!(set, kind, %source, "update refused: {reason}; {kept}")
        }
        Verdict::Failed(reason) => {
            tracing::warn!(set, kind, %source, "update failed: {reason}; {kept}")
        }
    }
}
