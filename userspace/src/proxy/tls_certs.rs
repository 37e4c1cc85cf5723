//! What a TLS entrypoint is made of: the crypto provider and its order of
//! cipher suites, certificate/key pairs parsed from PEM (files, Ingress
//! Secrets), their names and expiry, and the self-signed fallback.
use super::*;

/// ring's suites, AES-128-GCM with SHA-256 first. The handshake's key
/// schedule and transcript run on the suite's hash, and SHA-256 has CPU
/// instructions (SHA-NI) where SHA-384 has none: with OpenSSL-based clients,
/// which list AES-256-GCM-SHA384 first, SHA-512 blocks were a tenth of the
/// CPU of a new connection. Browsers list AES-128-GCM first themselves.
/// ChaCha20 comes next, then AES-256; TLS 1.2 suites keep the same order.
pub(super) fn server_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 1,
            _ => 2,
        });
    provider
}

/// Whether a certificate chain and key in PEM would load as a pair, checked
/// as [`TlsEntrypoint::load`] checks files (for Ingress TLS Secrets, before
/// they are written out: one bad Secret must not refuse the whole reload).
/// The error names `tls.crt`/`tls.key`, never their content.
pub fn check_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    let pair = CertPair {
        cert: PathBuf::from("tls.crt"),
        key: PathBuf::from("tls.key"),
    };
    load_pair("ingress", &pair, cert_pem, key_pem, &provider)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Parses one pair: the certificate file holds the chain, leaf first; the key
/// file's first private key must be the leaf's.
pub(super) fn load_pair(
    entrypoint: &str,
    pair: &CertPair,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<LoadedCert, TlsError> {
    let invalid_pem = |file: &Path| {
        let entrypoint = entrypoint.to_string();
        let file = file.to_path_buf();
        move |error| TlsError::InvalidPem {
            entrypoint,
            file,
            error,
        }
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid_pem(&pair.cert))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            entrypoint: entrypoint.to_string(),
            file: pair.cert.clone(),
        });
    };
    let invalid_cert = |error: String| TlsError::InvalidCertificate {
        entrypoint: entrypoint.to_string(),
        file: pair.cert.clone(),
        error,
    };
    let (names, not_after) = describe(leaf).map_err(invalid_cert)?;

    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                entrypoint: entrypoint.to_string(),
                file: pair.key.clone(),
            })
        }
        Err(error) => return Err(invalid_pem(&pair.key)(error)),
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::UnsupportedKey {
            entrypoint: entrypoint.to_string(),
            file: pair.key.clone(),
            error,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // A key type that cannot tell its public half is taken on trust, as rustls does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                entrypoint: entrypoint.to_string(),
                cert: pair.cert.clone(),
                key: pair.key.clone(),
            })
        }
        Err(error) => return Err(invalid_cert(error.to_string())),
    }
    Ok(LoadedCert {
        key: Arc::new(certified),
        file: pair.cert.display().to_string(),
        names,
        not_after,
        self_signed: false,
    })
}

/// A certificate's DNS names (SANs, else the subject CN), lower-cased, and
/// its expiry in Unix seconds.
pub(super) fn describe(cert: &CertificateDer<'_>) -> Result<(Vec<String>, i64), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let sans = parsed
        .subject_alternative_name()
        .map_err(|e| format!("subjectAltName: {e}"))?;
    let mut names: Vec<String> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    if names.is_empty() && sans.is_none() {
        names.extend(
            parsed
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok((names, parsed.validity().not_after.timestamp()))
}

pub(super) fn log_loaded(entrypoint: &str, cert: &LoadedCert, what: &str) {
    let now = crate::status::unix_now() as i64;
    let names = cert.names.join(", ");
    if cert.not_after < now {
        tracing::warn!(
            entrypoint,
            file = %cert.file,
            "{what} an EXPIRED certificate for {names} (not after {})",
            cert.not_after
        );
    } else if cert.names.is_empty() {
        tracing::warn!(
            entrypoint,
            file = %cert.file,
            "{what} a certificate with no DNS name: it is served only as the default"
        );
    } else {
        tracing::info!(entrypoint, file = %cert.file, "{what} certificate for {names}");
    }
}

pub(super) fn self_signed(
    entrypoint: &str,
    provider: &CryptoProvider,
) -> Result<LoadedCert, TlsError> {
    let failed = |error: String| TlsError::SelfSigned {
        entrypoint: entrypoint.to_string(),
        error,
    };
    let mut names = vec!["localhost".to_string()];
    names.extend(host_name());
    let mut params = rcgen::CertificateParams::new(names.clone())
        // A host name rcgen will not encode should not stop the proxy.
        .or_else(|_| rcgen::CertificateParams::new(vec!["localhost".to_string()]))
        .map_err(|e| failed(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "xdpgate self-signed");
    let now = SystemTime::now();
    // An hour of slack for clients whose clock is behind.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + SELF_SIGNED_VALIDITY).into();
    let key_pair = rcgen::KeyPair::generate().map_err(|e| failed(e.to_string()))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| failed(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| failed(e.to_string()))?;
    let (names, not_after) = describe(cert.der()).map_err(failed)?;
    Ok(LoadedCert {
        key: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing_key)),
        file: SELF_SIGNED.to_string(),
        names,
        not_after,
        self_signed: true,
    })
}

pub(super) fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end])
        .ok()?
        .trim()
        .to_ascii_lowercase();
    (!name.is_empty() && name != "localhost").then_some(name)
}
