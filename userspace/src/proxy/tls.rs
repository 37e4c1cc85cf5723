//! TLS termination for one entrypoint: loads the certificate/key PEM pairs,
//! chooses one per handshake by SNI, optionally requires a client certificate
//! (Cloudflare Authenticated Origin Pulls), and swaps in a pair whose files
//! changed on disk without touching connections or the acceptor. It does not
//! listen, speak HTTP, or decide when to look for changes: the server owns
//! the sockets and calls [`TlsEntrypoint::reload_changed`] on its own timer.
use std::{
    collections::HashMap,
    fs,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    version::{TLS12, TLS13},
    CipherSuite, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::config::{CertPair, TlsConfig, TlsVersion};

/// The value of [`CertInfo::file`] for a generated certificate.
const SELF_SIGNED: &str = "self-signed";
/// How long a generated certificate is valid; it is made again at every start.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Offered in this order; the server's order decides.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS side of one entrypoint: its certificates (chosen by SNI), optional
/// client-certificate verification, and reloading.
#[derive(Debug)]
pub struct TlsEntrypoint {
    entrypoint: String,
    provider: Arc<CryptoProvider>,
    /// Built once: its resolver reads `certs`, so reloads need no new config.
    server_config: Arc<ServerConfig>,
    certs: Arc<CertResolver>,
    /// One per configured pair, in config order (index = slot in the set);
    /// empty when serving a self-signed certificate. The lock serialises
    /// reloads; handshakes never take it.
    watched: Mutex<Vec<WatchedPair>>,
    reload_failures: AtomicU64,
    requires_client_cert: bool,
}

/// A certificate in use, for the expiry metric and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub entrypoint: String,
    /// The certificate file, or `"self-signed"`.
    pub file: String,
    /// DNS names it answers for (subjectAltName, else the subject CN),
    /// lower-cased; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// Expiry, in Unix seconds.
    pub not_after: i64,
    /// Served for unknown or missing SNI.
    pub default: bool,
    pub self_signed: bool,
}

/// What [`TlsEntrypoint::reload_changed`] did for one pair whose files changed.
/// `file` is the pair's certificate path, whichever of its two files changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertEvent {
    /// The new certificate is served from the next handshake on.
    Reloaded { file: String },
    /// The new files were bad; the previous certificate is still served.
    Refused { file: String, error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("entrypoint `{entrypoint}`: cannot read {}: {error}", file.display())]
    Unreadable {
        entrypoint: String,
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("entrypoint `{entrypoint}`: {}: not valid PEM: {error}", file.display())]
    InvalidPem {
        entrypoint: String,
        file: PathBuf,
        error: rustls_pki_types::pem::Error,
    },
    #[error("entrypoint `{entrypoint}`: {}: no certificate (expected a PEM `CERTIFICATE` block)", file.display())]
    NoCertificate { entrypoint: String, file: PathBuf },
    #[error("entrypoint `{entrypoint}`: {}: not a valid X.509 certificate: {error}", file.display())]
    InvalidCertificate {
        entrypoint: String,
        file: PathBuf,
        error: String,
    },
    #[error("entrypoint `{entrypoint}`: {}: no private key (expected an unencrypted PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)", file.display())]
    NoKey { entrypoint: String, file: PathBuf },
    #[error("entrypoint `{entrypoint}`: {}: unsupported key type (RSA, ECDSA P-256/P-384 and Ed25519 are supported): {error}", file.display())]
    UnsupportedKey {
        entrypoint: String,
        file: PathBuf,
        error: rustls::Error,
    },
    #[error("entrypoint `{entrypoint}`: the key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        entrypoint: String,
        cert: PathBuf,
        key: PathBuf,
    },
    #[error("entrypoint `{entrypoint}`: client CA bundle {}: {error}", file.display())]
    ClientCa {
        entrypoint: String,
        file: PathBuf,
        error: String,
    },
    #[error("entrypoint `{entrypoint}`: cannot generate a self-signed certificate: {error}")]
    SelfSigned { entrypoint: String, error: String },
    #[error("entrypoint `{entrypoint}`: cannot set up TLS: {error}")]
    Setup {
        entrypoint: String,
        error: rustls::Error,
    },
}

impl TlsEntrypoint {
    /// Loads every cert/key pair and the client CA bundle if any; with no
    /// pairs, generates a self-signed certificate for `localhost` and the host
    /// name (and logs a warning saying so).
    pub fn load(entrypoint: &str, config: &TlsConfig) -> Result<TlsEntrypoint, TlsError> {
        let provider = Arc::new(server_provider());
        let mut loaded = Vec::with_capacity(config.certs.len());
        let mut watched = Vec::with_capacity(config.certs.len());
        for pair in &config.certs {
            let cert_pem = read(entrypoint, &pair.cert)?;
            let key_pem = read(entrypoint, &pair.key)?;
            let cert = load_pair(entrypoint, pair, &cert_pem, &key_pem, &provider)?;
            log_loaded(entrypoint, &cert, "loaded");
            loaded.push(cert);
            watched.push(WatchedPair {
                paths: pair.clone(),
                seen: Fingerprint::of(Some(&cert_pem), Some(&key_pem)),
            });
        }
        if loaded.is_empty() {
            let generated = self_signed(entrypoint, &provider)?;
            tracing::warn!(
                entrypoint,
                "no certificate configured: serving a self-signed certificate for {} that clients will not trust",
                generated.names.join(", ")
            );
            loaded.push(generated);
        }
        let certs = Arc::new(CertResolver {
            current: ArcSwap::from_pointee(CertSet::new(loaded)),
        });

        let setup = |error| TlsError::Setup {
            entrypoint: entrypoint.to_string(),
            error,
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(protocol_versions(config.min_version))
            .map_err(setup)?;
        let builder = match &config.client_ca {
            Some(bundle) => builder.with_client_cert_verifier(client_verifier(
                entrypoint,
                bundle,
                provider.clone(),
            )?),
            None => builder.with_no_client_auth(),
        };
        let mut server_config = builder.with_cert_resolver(certs.clone());
        server_config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // The server's order of cipher suites, not the client's (see
        // `server_provider`).
        server_config.ignore_client_order = true;
        // Stateless tickets (keys rotated by the ticketer) on top of the
        // default session-ID cache, so resumption does not cost memory per client.
        server_config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(setup)?;

        Ok(TlsEntrypoint {
            entrypoint: entrypoint.to_string(),
            provider,
            server_config: Arc::new(server_config),
            certs,
            watched: Mutex::new(watched),
            reload_failures: AtomicU64::new(0),
            requires_client_cert: config.client_ca.is_some(),
        })
    }

    /// An acceptor for new handshakes. Every acceptor shares one config whose
    /// certificate resolver reads the current set, so a reload takes effect on
    /// the next handshake without a new acceptor.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config.clone())
    }

    /// Reads every pair's files (following symlinks, as a Kubernetes Secret
    /// volume swaps its `..data` link) and reloads the pairs whose content
    /// changed. A pair that fails to load keeps its old certificate; the
    /// error is logged and counted once per bad version of the files.
    pub fn reload_changed(&self) -> Vec<CertEvent> {
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        let mut events = Vec::new();
        let mut replaced = Vec::new();
        for (slot, pair) in watched.iter_mut().enumerate() {
            let cert_pem = read(&self.entrypoint, &pair.paths.cert);
            let key_pem = read(&self.entrypoint, &pair.paths.key);
            let seen = Fingerprint::of(cert_pem.as_deref().ok(), key_pem.as_deref().ok());
            if seen == pair.seen {
                continue;
            }
            pair.seen = seen;
            let file = pair.paths.cert.display().to_string();
            let outcome = cert_pem.and_then(|cert_pem| {
                let key_pem = key_pem?;
                load_pair(
                    &self.entrypoint,
                    &pair.paths,
                    &cert_pem,
                    &key_pem,
                    &self.provider,
                )
            });
            match outcome {
                Ok(cert) => {
                    log_loaded(&self.entrypoint, &cert, "reloaded");
                    replaced.push((slot, cert));
                    events.push(CertEvent::Reloaded { file });
                }
                Err(error) => {
                    tracing::warn!(
                        entrypoint = %self.entrypoint,
                        "certificate {file} changed but was not reloaded (the previous one is still served): {error}"
                    );
                    self.reload_failures.fetch_add(1, Ordering::Relaxed);
                    events.push(CertEvent::Refused {
                        file,
                        error: error.to_string(),
                    });
                }
            }
        }
        if !replaced.is_empty() {
            let mut certs = self.certs.current.load().certs.clone();
            for (slot, cert) in replaced {
                certs[slot] = cert;
            }
            self.certs.current.store(Arc::new(CertSet::new(certs)));
        }
        events
    }

    /// Every certificate in use, the default first.
    pub fn certificates(&self) -> Vec<CertInfo> {
        let set = self.certs.current.load();
        set.certs
            .iter()
            .enumerate()
            .map(|(slot, cert)| CertInfo {
                entrypoint: self.entrypoint.clone(),
                file: cert.file.clone(),
                names: cert.names.clone(),
                not_after: cert.not_after,
                default: slot == 0,
                self_signed: cert.self_signed,
            })
            .collect()
    }

    /// Reloads refused because the new files were bad, since start.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Whether client certificates are required.
    pub fn requires_client_cert(&self) -> bool {
        self.requires_client_cert
    }
}

/// The negotiated TLS version as a label for logs: `"TLSv1.2"` / `"TLSv1.3"`.
pub fn version_label(conn: &rustls::ServerConnection) -> &'static str {
    match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    }
}

/// The versions a server accepts. Nothing older than 1.2 exists in rustls, so
/// TLS 1.0/1.1 are impossible whatever the config says.
fn protocol_versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static TLS12_AND_UP: [&SupportedProtocolVersion; 2] = [&TLS13, &TLS12];
    static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&TLS13];
    match min {
        TlsVersion::Tls12 => &TLS12_AND_UP,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

/// One usable certificate: chain and key, plus what status reports about it.
#[derive(Clone, Debug)]
struct LoadedCert {
    key: Arc<CertifiedKey>,
    file: String,
    names: Vec<String>,
    not_after: i64,
    self_signed: bool,
}

/// The certificates of an entrypoint with their SNI index; the first is the
/// default. Replaced whole on reload, never changed in place.
#[derive(Debug)]
struct CertSet {
    certs: Vec<LoadedCert>,
    /// Lower-cased DNS name to slot; the first certificate naming it wins.
    exact: HashMap<String, usize>,
    /// `example.com` for a `*.example.com` SAN, to slot.
    wildcard: HashMap<String, usize>,
}

impl CertSet {
    fn new(certs: Vec<LoadedCert>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (slot, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(slot),
                    None => exact.entry(name.clone()).or_insert(slot),
                };
            }
        }
        CertSet {
            certs,
            exact,
            wildcard,
        }
    }

    /// Exact name, then a wildcard covering exactly one more label, then the default.
    fn choose(&self, server_name: Option<&str>) -> &LoadedCert {
        let slot = server_name.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        &self.certs[slot.copied().unwrap_or(0)]
    }
}

/// Hands rustls the certificate for each handshake from the current set.
#[derive(Debug)]
struct CertResolver {
    current: ArcSwap<CertSet>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        Some(set.choose(client_hello.server_name()).key.clone())
    }
}

#[derive(Debug)]
struct WatchedPair {
    paths: CertPair,
    /// The files as last read, whether or not they loaded, so a bad version
    /// is reported once rather than at every check.
    seen: Fingerprint,
}

/// Content hashes of a pair's files; `None` for a file that could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    cert: Option<u64>,
    key: Option<u64>,
}

impl Fingerprint {
    fn of(cert: Option<&[u8]>, key: Option<&[u8]>) -> Self {
        let hash = |bytes: &[u8]| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            hasher.finish()
        };
        Fingerprint {
            cert: cert.map(hash),
            key: key.map(hash),
        }
    }
}

fn read(entrypoint: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| TlsError::Unreadable {
        entrypoint: entrypoint.to_string(),
        file: path.to_path_buf(),
        error,
    })
}

fn client_verifier(
    entrypoint: &str,
    bundle: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let failed = |error: String| TlsError::ClientCa {
        entrypoint: entrypoint.to_string(),
        file: bundle.to_path_buf(),
        error,
    };
    let pem = read(entrypoint, bundle)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| failed(format!("not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| failed(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed(
            "no certificate (expected PEM `CERTIFICATE` blocks)".to_string(),
        ));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| failed(e.to_string()))
}

#[path = "tls_certs.rs"]
mod certs;
pub use certs::check_pair;
#[cfg(test)]
use certs::describe;
use certs::{load_pair, log_loaded, self_signed, server_provider};

#[cfg(test)]
#[path = "tls_tests/mod.rs"]
mod tests;
