//! What should be in force, as a pure function of what the daemon was told.
//!
//! [`Inputs`] is everything the daemon gathers from outside: the last config
//! that loaded, the sets' contents, the last Ingress snapshot in which every
//! source had delivered, and which configured interfaces exist. [`desired`]
//! turns it into the policy, the interfaces and the proxy's routes, services,
//! certificates, trusted peers and sets. It reads no file, asks no kernel and
//! keeps no state, so the reconciler and the model test agree on what
//! "converged" means by calling the same function.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
};

use ipnet::IpNet;

use crate::{
    config::Config,
    filter::XdpModeChoice,
    ingress::{
        gateway,
        merge::{entrypoint_certs, merge},
        source::Snapshot,
        translate::{translate, SecretCert},
        Objects,
    },
    policy::PolicySpec,
    proxy::{tls::check_pair, IngressConfig, ProxyConfig},
    sets::{SetSpec, SetsSnapshot},
    status::IngressStatus,
};

/// Everything the reconciler works from. The select loop only ever changes
/// these; [`desired`] reads them.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The last config that loaded and that the proxy accepted.
    pub config: Config,
    /// The interfaces to filter: the config's, or the default route's.
    pub interfaces: Vec<String>,
    /// Those of `interfaces` that exist now, with their index.
    pub present: BTreeMap<String, u32>,
    /// The sets' contents and statuses as the sets subsystem last published them.
    pub sets: Arc<SetsSnapshot>,
    pub ingress: IngressInput,
    /// Where the Ingresses' TLS Secrets are written (fixed at start).
    pub tls_dir: PathBuf,
}

/// What the Ingress sources delivered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressInput {
    /// The objects of the last snapshot in which every source had delivered
    /// once; `None` until then. An incomplete snapshot never lands here: its
    /// missing objects would read as deleted routes.
    pub objects: Option<Objects>,
    /// What is wrong with the sources now, from the latest snapshot.
    pub problems: Vec<String>,
}

impl IngressInput {
    /// Takes in the sources' latest snapshot: its objects only when it is
    /// complete, its problems always.
    pub fn follow(&mut self, snapshot: &Snapshot) {
        if snapshot.complete {
            self.objects = Some(snapshot.objects.clone());
        }
        self.problems = snapshot.problems.clone();
    }
}

/// The state the kernel and the proxy should be in.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The sets subsystem runs exactly these.
    pub sets: Vec<SetSpec>,
    pub policy: PolicySpec,
    /// Pinned links on any other interface are released.
    pub interfaces: Vec<String>,
    /// Where the program should be now: the configured interfaces that
    /// exist, by index (a re-created interface is a new attachment).
    pub attach: BTreeMap<String, u32>,
    /// The XDP mode new attachments use (`filter.xdp_mode`).
    pub xdp_mode: XdpModeChoice,
    /// `None` without a `proxy:` section.
    pub proxy: Option<DesiredProxy>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredProxy {
    /// The file's `proxy:` section with the Ingress routes, services and
    /// certificates merged in.
    pub config: ProxyConfig,
    /// The Ingresses' TLS Secrets, written under the TLS directory before
    /// `config` (which names them) is prepared.
    pub certs: Vec<SecretCert>,
    /// The union of the trusted sets, sorted.
    pub trusted: Vec<IpNet>,
    /// Every loaded set, for `ip_allow`.
    pub sets: BTreeMap<String, Vec<IpNet>>,
    /// `None` without `proxy.ingress`.
    pub ingress: Option<DesiredIngress>,
}

/// What the Ingress routes come to, for the status and the metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredIngress {
    /// A complete snapshot is merged into the routes: until then the daemon
    /// is not ready, because it does not know the cluster's routes.
    pub loaded: bool,
    /// `applied_at` is left at 0; the status step stamps it.
    pub status: IngressStatus,
    /// Ingresses skipped as invalid, by reason.
    pub invalid: BTreeMap<&'static str, i64>,
}

/// The pure heart of the daemon: what `inputs` ask to be in force.
pub fn desired(inputs: &Inputs) -> Desired {
    let contents = inputs.sets.contents();
    let config = &inputs.config;
    let attach = inputs
        .interfaces
        .iter()
        .filter_map(|name| Some((name.clone(), *inputs.present.get(name)?)))
        .collect();
    Desired {
        sets: config.filter.sets.clone(),
        policy: config.policy_spec(&contents),
        interfaces: inputs.interfaces.clone(),
        attach,
        xdp_mode: config.filter.xdp_mode,
        proxy: config
            .proxy
            .as_ref()
            .map(|file| desired_proxy(file, contents, &inputs.ingress, inputs)),
    }
}

fn desired_proxy(
    file: &ProxyConfig,
    contents: BTreeMap<String, Vec<IpNet>>,
    ingress: &IngressInput,
    inputs: &Inputs,
) -> DesiredProxy {
    let trusted: BTreeSet<IpNet> = file
        .trusted
        .iter()
        .filter_map(|name| contents.get(name))
        .flatten()
        .copied()
        .collect();
    let mut proxy = DesiredProxy {
        config: file.clone(),
        certs: Vec::new(),
        trusted: trusted.into_iter().collect(),
        sets: contents,
        ingress: None,
    };
    let Some(section) = &file.ingress else {
        return proxy;
    };
    let Some(objects) = &ingress.objects else {
        proxy.ingress = Some(DesiredIngress {
            loaded: false,
            status: IngressStatus {
                problems: ingress.problems.clone(),
                ..IngressStatus::default()
            },
            invalid: BTreeMap::new(),
        });
        return proxy;
    };
    let (config, certs, outcome) = with_ingress(file, section, objects, ingress, inputs);
    proxy.config = config;
    proxy.certs = certs;
    proxy.ingress = Some(outcome);
    proxy
}

/// `file` with the Ingress routes merged in, the Secrets they need, and
/// what came of it.
fn with_ingress(
    file: &ProxyConfig,
    section: &IngressConfig,
    objects: &Objects,
    ingress: &IngressInput,
    inputs: &Inputs,
) -> (ProxyConfig, Vec<SecretCert>, DesiredIngress) {
    // An Ingress may name only middlewares the config file defines.
    let known: BTreeSet<String> = file.middlewares.keys().cloned().collect();
    let mut translation = translate(objects, section, &known, &|c, k| check_pair(c, k));
    // The Gateway API's routes join the Ingresses' (after them: an Ingress
    // that was there first keeps a route both ask for).
    let gateway = gateway::translate(objects, section, &|c, k| check_pair(c, k));
    translation.routes.extend(gateway.routes);
    translation.services.extend(gateway.services);
    translation.weighted.extend(gateway.weighted);
    translation.problems.extend(gateway.problems);
    translation.valid += gateway.accepted_routes;
    let mut merged = merge(file, &translation, &inputs.tls_dir);
    merged.conflicts.extend(entrypoint_certs(
        &mut merged.config,
        &gateway.certs,
        &inputs.tls_dir,
    ));
    for (_, cert) in gateway.certs {
        if !translation.certs.iter().any(|c| c.key == cert.key) {
            translation.certs.push(cert);
        }
    }
    let mut problems = ingress.problems.clone();
    problems.extend(translation.problems.iter().map(|p| p.to_string()));
    let mut invalid: BTreeMap<&'static str, i64> = BTreeMap::new();
    for problem in &translation.problems {
        *invalid.entry(problem.reason).or_default() += 1;
    }
    let status = IngressStatus {
        ingresses: translation.valid,
        routes: merged.routes,
        certificates: translation.certs.len(),
        problems,
        conflicts: merged.conflicts,
        warnings: translation.warnings,
        applied_at: 0,
    };
    let outcome = DesiredIngress {
        loaded: true,
        status,
        invalid,
    };
    (merged.config, translation.certs, outcome)
}
