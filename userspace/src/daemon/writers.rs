//! The three things the reconciler changes, each behind a small trait: the
//! sets subsystem, the kernel (policy maps and XDP links) and the proxy. The
//! real implementations here are thin adapters over [`SetsService`],
//! [`Filter`] and [`Proxy`]; the model test puts fakes in their place. The
//! reconciler is the only caller of any of them once the daemon is up.
use std::{collections::BTreeMap, future::Future, path::PathBuf, sync::Arc};

use ipnet::IpNet;

use crate::{
    filter::{bpfsys, AttachMode, Filter, PinLayout, XdpModeChoice},
    ingress::{secrets, translate::SecretCert},
    policy::CompiledPolicy,
    proxy::{
        forwarded::TrustedPeers,
        middleware::Sets,
        server::{PreparedReload, Proxy},
        ProxyConfig,
    },
    sets::{SetSpec, SetsService, SetsSnapshot},
    status::InterfaceStatus,
};

/// The sets subsystem, as the reconciler drives it.
pub trait SetsWriter {
    /// Runs exactly `specs`; returns once every new source has its first list.
    fn reconfigure(&self, specs: Vec<SetSpec>) -> impl Future<Output = ()>;
    fn snapshot(&self) -> Arc<SetsSnapshot>;
}

/// The kernel side: the policy maps and the XDP links.
pub trait KernelWriter {
    /// A complete policy is in the maps, so the program judges packets.
    fn armed(&self) -> bool;
    /// Writes `policy` into the inactive slot and flips; returns the generation.
    fn apply(&mut self, policy: &CompiledPolicy) -> Result<u64, String>;
    fn attach(&mut self, interface: &str, choice: XdpModeChoice)
        -> Result<InterfaceStatus, String>;
    /// Takes the program off every pinned interface not in `keep`.
    fn release_unlisted(&mut self, keep: &[String]) -> Result<Vec<String>, String>;
    /// Those of `names` that exist now, with their index (a read, not a write:
    /// the interface table is the kernel's).
    fn present(&self, names: &[String]) -> BTreeMap<String, u32>;
}

/// The proxy's run-time state.
pub trait ProxyWriter {
    type Prepared;
    /// Writes the Ingress TLS Secrets; returns whether any file changed.
    fn write_certs(&mut self, certs: &[SecretCert]) -> Result<bool, String>;
    /// Builds the state `config` describes without putting it in force.
    fn prepare(&self, config: &ProxyConfig) -> Result<Self::Prepared, String>;
    /// Puts a prepared state in force; `certs_changed` makes the TLS loader
    /// re-read files whose paths stayed but whose content changed.
    fn commit(&self, prepared: Self::Prepared, certs_changed: bool);
    fn set_trusted(&self, trusted: &[IpNet]);
    fn set_sets(&self, sets: &BTreeMap<String, Vec<IpNet>>);
    /// Re-reads certificate and htpasswd files changed on disk.
    fn housekeep(&self);
}

impl SetsWriter for SetsService {
    fn reconfigure(&self, specs: Vec<SetSpec>) -> impl Future<Output = ()> {
        SetsService::reconfigure(self, specs)
    }

    fn snapshot(&self) -> Arc<SetsSnapshot> {
        SetsService::snapshot(self)
    }
}

/// The loaded filter and where its links are pinned.
pub struct KernelFilter {
    pub filter: Filter,
    pub layout: PinLayout,
}

impl KernelWriter for KernelFilter {
    fn armed(&self) -> bool {
        self.filter.control().map(|c| c.armed()).unwrap_or(false)
    }

    fn apply(&mut self, policy: &CompiledPolicy) -> Result<u64, String> {
        tokio::task::block_in_place(|| self.filter.apply(policy))
            .map_err(|e| format!("writing the policy into the kernel failed: {e}"))
    }

    fn attach(
        &mut self,
        interface: &str,
        choice: XdpModeChoice,
    ) -> Result<InterfaceStatus, String> {
        let outcome = self
            .filter
            .attach_pinned(interface, choice)
            .map_err(|e| e.to_string())?;
        let (mode, how) = (outcome.mode, outcome.how);
        match mode {
            AttachMode::Driver => tracing::info!(
                interface = %interface, mode = mode.label(),
                "{} in driver (native) mode", how.label()
            ),
            AttachMode::Generic if choice == XdpModeChoice::Generic => tracing::info!(
                interface = %interface, mode = mode.label(),
                "{} in generic mode, as filter.xdp_mode asks", how.label()
            ),
            AttachMode::Generic => tracing::warn!(
                interface = %interface, mode = mode.label(),
                "{} in generic mode: the driver refused native XDP, so packets are judged \
                 later in the receive path", how.label()
            ),
        }
        if outcome.mode_differs {
            tracing::warn!(
                interface = %interface, mode = mode.label(), wanted = choice.label(),
                "{}",
                crate::status::mode_differs(interface, mode.label(), choice.label())
            );
        }
        Ok(InterfaceStatus {
            name: interface.to_string(),
            mode: mode.label().to_string(),
            how: how.label().to_string(),
            wanted_mode: outcome.mode_differs.then(|| choice.label().to_string()),
        })
    }

    fn release_unlisted(&mut self, keep: &[String]) -> Result<Vec<String>, String> {
        self.layout
            .release_unlisted(keep)
            .map_err(|e| e.to_string())
    }

    fn present(&self, names: &[String]) -> BTreeMap<String, u32> {
        names
            .iter()
            .filter_map(|name| Some((name.clone(), bpfsys::ifindex(name)?)))
            .collect()
    }
}

/// The running proxy and the directory its Ingress Secrets go to.
pub struct RunningProxy {
    pub proxy: Proxy,
    pub tls_dir: PathBuf,
}

impl ProxyWriter for RunningProxy {
    type Prepared = PreparedReload;

    fn write_certs(&mut self, certs: &[SecretCert]) -> Result<bool, String> {
        secrets::write_all(&self.tls_dir, certs).map_err(|e| {
            format!(
                "cannot write the Ingress TLS Secrets under {}: {e}",
                self.tls_dir.display()
            )
        })
    }

    fn prepare(&self, config: &ProxyConfig) -> Result<PreparedReload, String> {
        self.proxy.prepare(config).map_err(|e| format!("{e:#}"))
    }

    fn commit(&self, prepared: PreparedReload, certs_changed: bool) {
        self.proxy.commit(prepared);
        if certs_changed {
            // Same paths, new content: the TLS loader re-reads it now.
            self.proxy.reload_certificates();
        }
    }

    fn set_trusted(&self, trusted: &[IpNet]) {
        self.proxy
            .set_trusted(TrustedPeers::new(trusted.iter().copied()));
    }

    fn set_sets(&self, sets: &BTreeMap<String, Vec<IpNet>>) {
        self.proxy.set_sets(proxy_sets(sets));
    }

    fn housekeep(&self) {
        self.proxy.reload_certificates();
    }
}

/// Set contents as the proxy's `ip_allow` reads them.
pub fn proxy_sets(sets: &BTreeMap<String, Vec<IpNet>>) -> Sets {
    sets.iter()
        .map(|(name, prefixes)| (name.clone(), TrustedPeers::new(prefixes.iter().copied())))
        .collect()
}
