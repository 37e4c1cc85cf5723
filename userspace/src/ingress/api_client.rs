//! Reaching the API server: the client (a kubeconfig, or the in-cluster
//! service account read from files), what a failed watch says when TLS is
//! the cause, and how long a failed watch waits before it is tried again.
//! What is watched, and what the objects become, is [`super::kube`]'s.
use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use futures_util::{Stream, StreamExt as _};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{utils::Backoff, watcher, WatchStreamExt as _},
    Client,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer};

use crate::proxy::KubernetesConfig;

pub(crate) async fn client(config: &KubernetesConfig) -> anyhow::Result<Client> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => in_cluster(&config.service_account_dir)?,
    };
    Ok(Client::try_from(kube_config)?)
}

/// The in-cluster configuration as client-go builds it: the API server from
/// `KUBERNETES_SERVICE_HOST`/`PORT`, the CA and the token from the service
/// account's files in `dir` (the token file is read again as the kubelet
/// rotates it; only its path is kept here, never its contents).
fn in_cluster(dir: &Path) -> anyhow::Result<kube::Config> {
    let variable = |name: &str| {
        std::env::var(name).map_err(|_| {
            anyhow::anyhow!(
                "{name} is not set: not running in a pod? (outside a cluster, name a \
                 `kubeconfig` under proxy.ingress.kubernetes)"
            )
        })
    };
    let host = variable("KUBERNETES_SERVICE_HOST")?;
    let port: u16 = variable("KUBERNETES_SERVICE_PORT")?
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("KUBERNETES_SERVICE_PORT is not a port: {e}"))?;
    let url = match host.trim().parse::<std::net::IpAddr>() {
        Ok(ip) => format!("https://{}", std::net::SocketAddr::new(ip, port)),
        Err(_) => format!("https://{}:{port}", host.trim()),
    };
    let url: hyper::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("KUBERNETES_SERVICE_HOST `{host}`: {e}"))?;
    let ca_file = dir.join("ca.crt");
    let pem = std::fs::read(&ca_file)
        .map_err(|e| anyhow::anyhow!("the service account's CA {}: {e}", ca_file.display()))?;
    let roots = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the service account's CA {}: {e}", ca_file.display()))?;
    if roots.is_empty() {
        anyhow::bail!(
            "the service account's CA {} holds no PEM certificate",
            ca_file.display()
        );
    }
    let token_file = dir.join("token");
    if let Err(e) = std::fs::metadata(&token_file) {
        anyhow::bail!("the service account's token {}: {e}", token_file.display());
    }
    let mut kube_config = kube::Config::new(url);
    kube_config.root_cert = Some(roots);
    kube_config.root_cert_file = Some(ca_file);
    kube_config.auth_info.token_file = Some(token_file.to_string_lossy().into_owned());
    if let Ok(namespace) = std::fs::read_to_string(dir.join("namespace")) {
        if !namespace.trim().is_empty() {
            kube_config.default_namespace = namespace.trim().to_string();
        }
    }
    Ok(kube_config)
}

/// Where the CA that must verify the API server's certificate comes from,
/// for the error when it does not.
pub(crate) fn ca_source(config: &KubernetesConfig) -> String {
    match &config.kubeconfig {
        Some(path) => format!("the certificate authority of kubeconfig {}", path.display()),
        None => format!("{}", config.service_account_dir.join("ca.crt").display()),
    }
}

/// The TLS error under `error`, if a handshake with the API server failed.
/// hyper-rustls wraps tokio-rustls's `io::Error` in another `io::Error`,
/// whose `source()` skips the inner one, so wrapped I/O errors are opened
/// by hand.
fn tls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(tls) = tls_error(inner) {
            return Some(tls);
        }
    }
    error.source().and_then(tls_error)
}

/// What a failed watch says: for a TLS failure, the TLS cause (and for a
/// refused certificate, the CA it was checked against), which the client's
/// own message (`client error (Connect)`) does not name.
pub(crate) fn watch_failure(error: &watcher::Error, ca_source: &str) -> String {
    match tls_error(error) {
        Some(tls @ rustls::Error::InvalidCertificate(_)) => {
            format!("the API server's certificate does not verify against {ca_source} ({tls})")
        }
        Some(tls) => format!("TLS with the API server failed: {tls}"),
        None => error.to_string(),
    }
}

/// Waits before a watch is retried after an error: 100 ms, doubling up to
/// 30 s, back to 100 ms once the watch works again. Shorter at first than
/// kube-runtime's default (800 ms), because the commonest error, a `410
/// Gone`, is routine and a relist answers it; the doubling still spares a
/// struggling API server.
///
/// "Works again" means it delivered an object or finished a list: the
/// watcher announces `Init` before its list request, and a backoff reset
/// by that would retry a list that keeps failing (no RBAC, a wrong CA)
/// every 100 ms forever.
#[derive(Clone, Debug)]
struct WatchBackoff {
    next: std::time::Duration,
    /// Set by [`retried`] when the watch made progress.
    progressed: Arc<AtomicBool>,
}

const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
const LONGEST_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: FIRST_RETRY,
            progressed: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let now = self.next;
        self.next = (self.next * 2).min(LONGEST_RETRY);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        if self.progressed.swap(false, Ordering::SeqCst) {
            self.next = FIRST_RETRY;
        }
    }
}

/// `events` retried with a [`WatchBackoff`] after each error.
pub(crate) fn retried<K, S>(
    events: S,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Send,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let backoff = WatchBackoff::default();
    let progressed = backoff.progressed.clone();
    events
        .inspect(move |event| {
            if matches!(event, Ok(e) if !matches!(e, watcher::Event::Init)) {
                progressed.store(true, Ordering::SeqCst);
            }
        })
        .backoff(backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_backoff_doubles_to_a_ceiling_and_resets() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<u128> = (0..11)
            .map(|_| backoff.next().unwrap().as_millis())
            .collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        // The watcher's `Init` before a list that fails again is no
        // progress: the wait keeps growing.
        backoff.reset();
        assert_eq!(backoff.next(), Some(LONGEST_RETRY));
        backoff.progressed.store(true, Ordering::SeqCst);
        backoff.reset();
        assert_eq!(backoff.next(), Some(FIRST_RETRY));
    }
}
