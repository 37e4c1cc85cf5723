//! Tests for `proxy::tls`: real handshakes on 127.0.0.1 between the
//! entrypoint's acceptor and rustls clients, with certificates made by rcgen.
//!
//! Split by what they check: which certificate is served and how it is
//! loaded and replaced (`certificates`), and what a handshake allows:
//! client certificates, protocol versions, ALPN, resumption (`handshakes`).
//! This module holds the CA, servers and clients they share.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    pki_types::{ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore,
    SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use super::*;

/// A certificate authority that issues server and client certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

/// A PEM certificate and its PEM key.
struct Issued {
    cert_pem: String,
    key_pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            der: cert.der().clone(),
            pem: cert.pem(),
        }
    }

    fn server_cert(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, |_| {})
    }

    fn client_cert(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, |_| {})
    }

    fn issue(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }

    fn pem(&self) -> &str {
        &self.pem
    }
}

/// Writes `issued` as `<name>.crt` and `<name>.key` in `dir`.
fn write_pair(dir: &Path, name: &str, issued: &Issued) -> CertPair {
    let pair = CertPair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    fs::write(&pair.cert, &issued.cert_pem).unwrap();
    fs::write(&pair.key, &issued.key_pem).unwrap();
    pair
}

/// Replaces `path` the way deploy tools do: write a new file, rename it over.
fn replace_file(path: &Path, contents: &str) {
    let staging = path.with_extension("new");
    fs::write(&staging, contents).unwrap();
    fs::rename(&staging, path).unwrap();
}

fn tls_config(certs: Vec<CertPair>) -> TlsConfig {
    TlsConfig {
        certs,
        client_ca: None,
        min_version: TlsVersion::Tls12,
    }
}

/// What the server saw of one handshake.
#[derive(Debug)]
struct ServerSide {
    alpn: Option<Vec<u8>>,
    version: &'static str,
}

/// Accepts connections with one acceptor for the whole test, answers each
/// completed handshake with `ok\n`, and reports every handshake's outcome.
struct TestServer {
    addr: SocketAddr,
    outcomes: mpsc::UnboundedReceiver<Result<ServerSide, String>>,
}

impl TestServer {
    async fn start(acceptor: tokio_rustls::TlsAcceptor) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (report, outcomes) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let report = report.clone();
                tokio::spawn(async move {
                    let outcome = match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let (_, conn) = tls.get_ref();
                            let side = ServerSide {
                                alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                                version: version_label(conn),
                            };
                            let _ = tls.write_all(b"ok\n").await;
                            let _ = tls.shutdown().await;
                            Ok(side)
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = report.send(outcome);
                });
            }
        });
        TestServer { addr, outcomes }
    }

    async fn outcome(&mut self) -> Result<ServerSide, String> {
        self.outcomes.recv().await.unwrap()
    }
}

/// What the client saw of one handshake that completed.
#[derive(Debug)]
struct ClientSide {
    /// DNS SANs of the certificate the server presented.
    names: Vec<String>,
    alpn: Option<Vec<u8>>,
    kind: Option<HandshakeKind>,
    suite: Option<rustls::CipherSuite>,
}

/// Connects, completes the handshake and reads the server's `ok`, which is
/// where a TLS 1.3 client learns that the server rejected its certificate.
async fn connect(
    server: &TestServer,
    config: ClientConfig,
    name: &str,
) -> Result<ClientSide, std::io::Error> {
    connect_shared(server, Arc::new(config), name).await
}

async fn connect_shared(
    server: &TestServer,
    config: Arc<ClientConfig>,
    name: &str,
) -> Result<ClientSide, std::io::Error> {
    let tcp = TcpStream::connect(server.addr).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await?;
    assert_eq!(answer, b"ok\n");
    let (_, conn) = tls.get_ref();
    let leaf = &conn.peer_certificates().unwrap()[0];
    Ok(ClientSide {
        names: describe(leaf).unwrap().0,
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        kind: conn.handshake_kind(),
        suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_with(
    roots: RootCertStore,
    versions: &[&'static SupportedProtocolVersion],
    identity: Option<&Issued>,
) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    }
}

fn client(ca: &TestCa) -> ClientConfig {
    client_with(ca.roots(), &[&TLS13, &TLS12], None)
}

/// Checks the chain against the CA but accepts any name, to see which
/// certificate the server falls back to for a name it has none for.
#[derive(Debug)]
struct AnyNameVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn any_name_client(ca: &TestCa) -> ClientConfig {
    let mut config = client(ca);
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(ca.roots()), provider())
        .build()
        .unwrap();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(AnyNameVerifier(verifier)));
    config
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

mod certificates;
mod handshakes;
