//! The reconciler: it makes the sets subsystem, the kernel and the proxy
//! hold what [`desired`] asks, touching only what differs from what it
//! applied last, in a fixed order:
//!
//! 1. the proxy's new state is *prepared* (built, not put in force) when its
//!    configuration changed, because that is where a certificate that does
//!    not load is found, and a change it refuses must change nothing at all;
//! 2. sets: the sets subsystem runs the desired specs, and their contents
//!    are read back before anything uses them;
//! 3. policy: compiled and written into the inactive slot, then flipped;
//! 4. attach: the program goes on the interfaces (only once a policy is in
//!    force) and comes off the ones no longer configured;
//! 5. proxy: sets and trusted peers first, then the prepared state is committed,
//!    so a route never names a set the proxy does not know yet;
//! 6. status: `status.json`, the Ingress metrics, and log lines for what changed.
//!
//! Run twice on the same inputs, the second run writes nothing.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use super::{
    desired::{desired, Desired, DesiredIngress, DesiredProxy, Inputs},
    shared::Shared,
    writers::{KernelWriter, ProxyWriter, SetsWriter},
};
use crate::{
    filter::{AttachMode, XdpModeChoice},
    ingress::{metrics::ReasonLabels, translate::SecretCert},
    policy::{self, PolicySpec},
    proxy::ProxyConfig,
    sets::SetSpec,
    status::{unix_now, IngressStatus, InterfaceStatus},
};

/// How often attaching to an interface that exists but refused is tried again.
const ATTACH_RETRY: Duration = Duration::from_secs(5);

/// What the reconciler last put in force.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub sets: Option<Vec<SetSpec>>,
    pub policy: Option<PolicySpec>,
    /// A policy that could not be compiled or written. It is not tried again
    /// until the desired policy changes; the one in force stays.
    pub refused_policy: Option<PolicySpec>,
    /// Interface -> the index it had when attached, and how.
    pub attached: BTreeMap<String, (u32, InterfaceStatus)>,
    /// The configured interfaces the pinned links were last pruned against.
    pub released_for: Option<Vec<String>>,
    pub proxy: Option<AppliedProxy>,
    pub ingress: Option<DesiredIngress>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AppliedProxy {
    pub config: ProxyConfig,
    pub certs: Vec<SecretCert>,
    pub trusted: Vec<IpNet>,
    pub sets: BTreeMap<String, Vec<IpNet>>,
}

impl AppliedProxy {
    /// What a proxy started with `desired` runs.
    pub fn started_with(desired: &DesiredProxy) -> Self {
        AppliedProxy {
            config: desired.config.clone(),
            certs: desired.certs.clone(),
            trusted: desired.trusted.clone(),
            sets: desired.sets.clone(),
        }
    }
}

/// A proxy state built in step 1, waiting for step 5.
struct Staged<T> {
    config: ProxyConfig,
    certs: Vec<SecretCert>,
    prepared: T,
    certs_changed: bool,
}

pub struct Reconciler<S, K, P> {
    sets: S,
    kernel: K,
    proxy: Option<P>,
    shared: Arc<Shared>,
    applied: Applied,
    /// Interfaces that exist but refused the program: index and when.
    attach_failed: BTreeMap<String, (u32, Instant)>,
    /// Whether the config's proxy section and the running proxy disagree
    /// (added or removed by a reload), so it is said once.
    proxy_mismatch: bool,
}

impl<S: SetsWriter, K: KernelWriter, P: ProxyWriter> Reconciler<S, K, P> {
    pub fn new(sets: S, kernel: K, shared: Arc<Shared>) -> Self {
        Reconciler {
            sets,
            kernel,
            proxy: None,
            shared,
            applied: Applied::default(),
            attach_failed: BTreeMap::new(),
            proxy_mismatch: false,
        }
    }

    /// Hands over a proxy started with `applied`; from here on only the
    /// reconciler changes it.
    pub fn adopt_proxy(&mut self, proxy: P, applied: AppliedProxy) {
        self.proxy = Some(proxy);
        self.applied.proxy = Some(applied);
    }

    pub fn take_proxy(&mut self) -> Option<P> {
        self.applied.proxy = None;
        self.proxy.take()
    }

    pub fn sets(&self) -> &S {
        &self.sets
    }

    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn proxy(&self) -> Option<&P> {
        self.proxy.as_ref()
    }

    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// Brings everything to `desired(inputs)`. `Err` when the proxy refuses
    /// its new configuration: then nothing was changed. The sets step
    /// refreshes `inputs.sets`, because the rest is computed from the
    /// contents of the sets the config now names.
    pub async fn reconcile(&mut self, inputs: &mut Inputs) -> Result<Desired, String> {
        let staged = self.prepare_proxy(&desired(inputs))?;
        self.sync_sets(inputs).await;
        let desired = desired(inputs);
        self.sync_policy(&desired.policy);
        self.sync_links(&desired);
        self.sync_proxy(desired.proxy.as_ref(), staged);
        self.publish_status(inputs, &desired);
        Ok(desired)
    }

    /// An interface that exists but refused the program is due another try.
    pub fn attach_retry_due(&self) -> bool {
        self.attach_failed
            .values()
            .any(|(_, at)| at.elapsed() >= ATTACH_RETRY)
    }

    /// Re-reads certificate and htpasswd files that changed on disk.
    pub fn housekeep(&self) {
        if let Some(proxy) = &self.proxy {
            proxy.housekeep();
        }
    }

    fn prepare_proxy(&mut self, desired: &Desired) -> Result<Option<Staged<P::Prepared>>, String> {
        let (Some(proxy), Some(want), Some(applied)) = (
            self.proxy.as_mut(),
            desired.proxy.as_ref(),
            self.applied.proxy.as_ref(),
        ) else {
            return Ok(None);
        };
        if applied.config == want.config && applied.certs == want.certs {
            return Ok(None);
        }
        let certs_changed = proxy.write_certs(&want.certs)?;
        let prepared = proxy.prepare(&want.config)?;
        Ok(Some(Staged {
            config: want.config.clone(),
            certs: want.certs.clone(),
            prepared,
            certs_changed,
        }))
    }

    async fn sync_sets(&mut self, inputs: &mut Inputs) {
        let specs = &inputs.config.filter.sets;
        if self.applied.sets.as_ref() == Some(specs) {
            return;
        }
        self.sets.reconfigure(specs.clone()).await;
        self.applied.sets = Some(specs.clone());
        inputs.sets = self.sets.snapshot();
    }

    fn sync_policy(&mut self, spec: &PolicySpec) {
        if self.applied.policy.as_ref() == Some(spec)
            || self.applied.refused_policy.as_ref() == Some(spec)
        {
            return;
        }
        let started = Instant::now();
        let result = policy::compile(spec)
            .map_err(|e| format!("the new policy is refused: {e}"))
            .and_then(|compiled| Ok((self.kernel.apply(&compiled)?, compiled)));
        match result {
            Ok((generation, compiled)) => {
                tracing::info!(
                    generation,
                    v4_prefixes = compiled.v4.len(),
                    v6_prefixes = compiled.v6.len(),
                    tcp_ports = compiled.tcp_ports.len(),
                    udp_ports = compiled.udp_ports.len(),
                    "policy applied in {:.1?}",
                    started.elapsed()
                );
                self.applied.policy = Some(spec.clone());
                self.applied.refused_policy = None;
                self.shared.update(|s| {
                    s.policy.generation = generation;
                    s.policy.set_names = compiled.set_names.clone();
                    s.policy.tunnels = crate::status::describe_tunnels(&spec.tunnels);
                    s.policy.applied_at = unix_now();
                    s.policy.last_error = None;
                });
            }
            Err(message) => {
                if self.kernel.armed() {
                    tracing::error!("{message}; the policy in force stays");
                } else {
                    tracing::error!(
                        "{message}; nothing is enforced yet, and the program is not attached \
                         until a policy can be applied"
                    );
                }
                self.applied.refused_policy = Some(spec.clone());
                self.shared.update(|s| {
                    s.policy.last_error = Some(message.clone());
                    s.policy.refused += 1;
                });
            }
        }
    }

    /// Only once the maps are armed: a program with unarmed maps passes
    /// everything, and swapping it into a link that filters today would open
    /// a window.
    fn sync_links(&mut self, desired: &Desired) {
        if !self.kernel.armed() {
            return;
        }
        if self.applied.released_for.as_ref() != Some(&desired.interfaces) {
            match self.kernel.release_unlisted(&desired.interfaces) {
                Ok(released) => {
                    for interface in released {
                        tracing::warn!(interface = %interface, "no longer configured: the filter is taken off {interface}");
                    }
                    self.applied.released_for = Some(desired.interfaces.clone());
                }
                Err(e) => tracing::error!("cannot release interfaces no longer configured: {e}"),
            }
        }
        // An interface that went away took the program with it; one that
        // came back (a new index) gets it again.
        self.applied
            .attached
            .retain(|name, (index, _)| desired.attach.get(name) == Some(index));
        for (name, &index) in &desired.attach {
            if self.applied.attached.contains_key(name) {
                continue;
            }
            if let Some((failed_index, at)) = self.attach_failed.get(name) {
                if *failed_index == index && at.elapsed() < ATTACH_RETRY {
                    continue;
                }
            }
            match self.kernel.attach(name, desired.xdp_mode) {
                Ok(status) => {
                    self.attach_failed.remove(name);
                    self.applied.attached.insert(name.clone(), (index, status));
                }
                Err(e) => {
                    tracing::error!(interface = %name, "cannot filter {name}: {e}");
                    self.attach_failed
                        .insert(name.clone(), (index, Instant::now()));
                }
            }
        }
        note_mode_changes(&mut self.applied.attached, desired.xdp_mode);
    }

    fn sync_proxy(&mut self, want: Option<&DesiredProxy>, staged: Option<Staged<P::Prepared>>) {
        let mismatch = want.is_some() != self.proxy.is_some();
        if mismatch && !self.proxy_mismatch {
            tracing::warn!(
                "adding or removing the proxy section takes effect only after a restart"
            );
        }
        self.proxy_mismatch = mismatch;
        let (Some(proxy), Some(want), Some(applied)) =
            (self.proxy.as_ref(), want, self.applied.proxy.as_mut())
        else {
            return;
        };
        if applied.sets != want.sets {
            proxy.set_sets(&want.sets);
            applied.sets = want.sets.clone();
        }
        if applied.trusted != want.trusted {
            proxy.set_trusted(&want.trusted);
            applied.trusted = want.trusted.clone();
        }
        if let Some(staged) = staged {
            proxy.commit(staged.prepared, staged.certs_changed);
            applied.config = staged.config;
            applied.certs = staged.certs;
        }
    }

    fn publish_status(&mut self, inputs: &Inputs, desired: &Desired) {
        let ingress = desired.proxy.as_ref().and_then(|p| p.ingress.clone());
        if ingress != self.applied.ingress {
            if let Some(now) = &ingress {
                self.report_ingress(self.applied.ingress.as_ref(), now);
            }
            self.applied.ingress = ingress.clone();
        }
        let statuses = inputs.sets.statuses();
        let interfaces: Vec<InterfaceStatus> = self
            .applied
            .attached
            .values()
            .map(|(_, status)| status.clone())
            .collect();
        let ingress_loaded = ingress.as_ref().is_none_or(|i| i.loaded);
        self.shared.update(|s| {
            s.sets = statuses;
            s.interfaces = interfaces;
            s.readiness.ingress_loaded = ingress_loaded;
            match &ingress {
                None => s.ingress = None,
                Some(i) => {
                    let changed = s.ingress.as_ref().map(|old| IngressStatus {
                        applied_at: 0,
                        ..old.clone()
                    }) != Some(i.status.clone());
                    if changed {
                        s.ingress = Some(IngressStatus {
                            applied_at: unix_now(),
                            ..i.status.clone()
                        });
                    }
                }
            }
        });
    }

    /// Logs problems and conflicts when they appear and when they go away,
    /// not on every change, and sets the Ingress metrics.
    fn report_ingress(&self, before: Option<&DesiredIngress>, now: &DesiredIngress) {
        let empty = IngressStatus::default();
        let old = before.map_or(&empty, |b| &b.status);
        log_changes("Ingress problem", &old.problems, &now.status.problems);
        log_changes("Ingress conflict", &old.conflicts, &now.status.conflicts);
        for warning in now
            .status
            .warnings
            .iter()
            .filter(|w| !old.warnings.contains(w))
        {
            tracing::warn!("{warning}");
        }
        if now.loaded && before.is_none_or(|b| !b.loaded) {
            tracing::info!(
                ingresses = now.status.ingresses,
                routes = now.status.routes,
                "Ingress routes applied"
            );
        }
        let Some(metrics) = self.shared.ingress_metrics() else {
            return;
        };
        metrics.invalid.clear();
        for (reason, n) in &now.invalid {
            metrics
                .invalid
                .get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                })
                .set(*n);
        }
        metrics.conflicts.set(now.status.conflicts.len() as i64);
        metrics.routes.set(now.status.routes as i64);
    }
}

fn log_changes(what: &str, before: &[String], now: &[String]) {
    for new in now.iter().filter(|p| !before.contains(p)) {
        tracing::error!("{what}: {new}");
    }
    for gone in before.iter().filter(|p| !now.contains(p)) {
        tracing::info!("{what} resolved: {gone}");
    }
}

/// A reload that changes `filter.xdp_mode` keeps the links in force (moving
/// one to the other mode would leave its interface unfiltered for a moment):
/// each one's status says whether it runs in the mode asked for.
fn note_mode_changes(
    attached: &mut BTreeMap<String, (u32, InterfaceStatus)>,
    choice: XdpModeChoice,
) {
    for (name, (_, status)) in attached.iter_mut() {
        let differs = AttachMode::parse(&status.mode).is_some_and(|mode| !choice.accepts(mode));
        let wanted = differs.then(|| choice.label().to_string());
        if wanted == status.wanted_mode {
            continue;
        }
        if differs {
            tracing::warn!(
                interface = %name, mode = %status.mode, wanted = choice.label(),
                "{}",
                crate::status::mode_differs(name, &status.mode, choice.label())
            );
        }
        status.wanted_mode = wanted;
    }
}
