//! The daemon's event handlers. Each takes one kind of news (a config file
//! read, new set contents, an Ingress snapshot, the interface table, a
//! tick), folds it into a copy of the current [`Inputs`], and makes one call
//! into the reconciler. Only when the reconciler accepts do the copied
//! inputs become the current ones, so a refused change leaves behind neither
//! half-applied state nor inputs that disagree with what is in force.
use std::sync::Arc;

use super::{
    desired::{Desired, IngressInput, Inputs},
    reconcile::Reconciler,
    shared::Shared,
    writers::{KernelWriter, ProxyWriter, SetsWriter},
};
use crate::{
    config::Config,
    ingress::source::Snapshot,
    status::{unix_now, IngressStatus},
};

pub struct Controller<S, K, P> {
    inputs: Inputs,
    reconciler: Reconciler<S, K, P>,
    shared: Arc<Shared>,
}

impl<S: SetsWriter, K: KernelWriter, P: ProxyWriter> Controller<S, K, P> {
    pub fn new(inputs: Inputs, reconciler: Reconciler<S, K, P>, shared: Arc<Shared>) -> Self {
        Controller {
            inputs,
            reconciler,
            shared,
        }
    }

    /// The inputs in force: the last ones the reconciler accepted.
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    pub fn reconciler(&self) -> &Reconciler<S, K, P> {
        &self.reconciler
    }

    pub fn reconciler_mut(&mut self) -> &mut Reconciler<S, K, P> {
        &mut self.reconciler
    }

    /// The first reconcile: sets, policy, then the interfaces. The proxy is
    /// not running yet, so nothing can refuse it.
    pub async fn start(&mut self) -> Result<Desired, String> {
        let mut candidate = self.inputs.clone();
        candidate.present = self.reconciler.kernel().present(&candidate.interfaces);
        candidate.sets = self.reconciler.sets().snapshot();
        self.reconcile(candidate).await
    }

    /// The reload path: `loaded` is a config file just read (with the
    /// interfaces it resolves to) or why it could not be. A config that
    /// does not load, or that the proxy refuses, changes nothing and is
    /// counted as a failed reload. Returns whether the config is in force.
    pub async fn reload(&mut self, loaded: Result<(Config, Vec<String>), String>) -> bool {
        let outcome = match loaded {
            Ok((config, interfaces)) => {
                let mut candidate = self.inputs.clone();
                if config
                    .proxy
                    .as_ref()
                    .and_then(|p| p.ingress.as_ref())
                    .is_none()
                {
                    candidate.ingress = IngressInput::default();
                }
                candidate.present = self.reconciler.kernel().present(&interfaces);
                candidate.config = config;
                candidate.interfaces = interfaces;
                self.reconcile(candidate)
                    .await
                    .map_err(|e| format!("proxy: {e}"))
            }
            Err(message) => Err(message),
        };
        let accepted = outcome.is_ok();
        if let Err(message) = &outcome {
            tracing::error!("config reload refused, the running config stays: {message}");
        }
        self.shared.update(|s| {
            if accepted {
                s.reloads.ok += 1;
                s.reloads.last_error = None;
            } else {
                s.reloads.failed += 1;
                s.reloads.last_error = outcome.err();
            }
            s.reloads.last_at = unix_now();
        });
        accepted
    }

    /// The sets subsystem published new contents or statuses.
    pub async fn sets_changed(&mut self) {
        let mut candidate = self.inputs.clone();
        candidate.sets = self.reconciler.sets().snapshot();
        // New contents change no proxy configuration, so nothing refuses them.
        let _ = self.reconcile(candidate).await;
    }

    /// The Ingress sources sent a snapshot. An incomplete one brings only its
    /// problems; a configuration the proxy refuses leaves the running one in
    /// force, and the status says so.
    pub async fn ingress_changed(&mut self, snapshot: &Snapshot) {
        let mut candidate = self.inputs.clone();
        candidate.ingress.follow(snapshot);
        if let Err(e) = self.reconcile(candidate).await {
            let message = format!(
                "the proxy refused the configuration with the Ingress routes, the previous \
                 one stays: {e}"
            );
            tracing::error!("{message}");
            self.shared.update(|s| {
                let status = s.ingress.get_or_insert_with(IngressStatus::default);
                if !status.problems.contains(&message) {
                    status.problems.push(message);
                }
            });
        }
    }

    /// The periodic look around: interfaces that appeared, went away or came
    /// back with a new index, and certificate files changed on disk. An
    /// interface that refused the program is tried again from here.
    pub async fn tick(&mut self) {
        let present = self.reconciler.kernel().present(&self.inputs.interfaces);
        if present != self.inputs.present || self.reconciler.attach_retry_due() {
            let mut candidate = self.inputs.clone();
            candidate.present = present;
            let _ = self.reconcile(candidate).await;
        }
        self.reconciler.housekeep();
    }

    async fn reconcile(&mut self, mut candidate: Inputs) -> Result<Desired, String> {
        let desired = self.reconciler.reconcile(&mut candidate).await?;
        self.inputs = candidate;
        Ok(desired)
    }
}
