//! Tests for `proxy::tls`: real handshakes on 127.0.0.1 between the
//! entrypoint's acceptor and rustls clients, with certificates made by rcgen.
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

// ---------------------------------------------------------------- fixtures

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

// ------------------------------------------------------------------- tests

#[test]
fn entrypoint_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TlsEntrypoint>();
}

#[tokio::test]
async fn sni_chooses_exact_then_wildcard_then_default() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let pairs = vec![
        write_pair(dir.path(), "a", &ca.server_cert(&["a.test"])),
        write_pair(dir.path(), "b", &ca.server_cert(&["b.test"])),
        write_pair(dir.path(), "wild", &ca.server_cert(&["*.wild.test"])),
    ];
    let tls = TlsEntrypoint::load("websecure", &tls_config(pairs)).unwrap();
    let mut server = TestServer::start(tls.acceptor()).await;

    // Full verification against the test CA: only the right certificate passes.
    for (sni, expected) in [
        ("a.test", "a.test"),
        ("b.test", "b.test"),
        ("x.wild.test", "*.wild.test"),
    ] {
        let seen = connect(&server, client(&ca), sni).await.unwrap();
        assert_eq!(seen.names, [expected], "SNI {sni}");
        server.outcome().await.unwrap();
    }

    // Unknown SNI, and a wildcard never covers two labels or its own parent.
    for sni in ["unknown.test", "y.x.wild.test", "wild.test"] {
        let seen = connect(&server, any_name_client(&ca), sni).await.unwrap();
        assert_eq!(seen.names, ["a.test"], "SNI {sni}");
        server.outcome().await.unwrap();
    }

    // No SNI at all: the default, which the client verifies as a.test.
    let mut no_sni = client(&ca);
    no_sni.enable_sni = false;
    let seen = connect(&server, no_sni, "a.test").await.unwrap();
    assert_eq!(seen.names, ["a.test"]);

    // Names compare case-insensitively (rustls clients lower-case SNI
    // themselves, so ask the set directly).
    let set = tls.certs.current.load();
    assert_eq!(set.choose(Some("B.Test")).names, ["b.test"]);
    assert_eq!(set.choose(Some("X.WILD.test")).names, ["*.wild.test"]);
    assert_eq!(set.choose(None).names, ["a.test"]);

    let defaults: Vec<bool> = tls.certificates().iter().map(|c| c.default).collect();
    assert_eq!(defaults, [true, false, false]);
}

#[tokio::test]
async fn a_replaced_certificate_is_served_from_the_next_handshake() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let pair = write_pair(
        dir.path(),
        "site",
        &ca.server_cert(&["site.test", "old.test"]),
    );
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair.clone()])).unwrap();
    let acceptor = tls.acceptor();
    let mut server = TestServer::start(acceptor.clone()).await;

    assert_eq!(tls.reload_changed(), []);
    let seen = connect(&server, client(&ca), "site.test").await.unwrap();
    assert_eq!(seen.names, ["site.test", "old.test"]);
    server.outcome().await.unwrap();

    let new = ca.server_cert(&["site.test", "new.test"]);
    replace_file(&pair.cert, &new.cert_pem);
    replace_file(&pair.key, &new.key_pem);
    assert_eq!(
        tls.reload_changed(),
        [CertEvent::Reloaded {
            file: pair.cert.display().to_string()
        }]
    );
    // Same acceptor, same config: the resolver picks up the new set.
    let seen = connect(&server, client(&ca), "site.test").await.unwrap();
    assert_eq!(seen.names, ["site.test", "new.test"]);
    assert!(Arc::ptr_eq(acceptor.config(), tls.acceptor().config()));
    assert_eq!(tls.certificates()[0].names, ["site.test", "new.test"]);
    // Nothing changed since: nothing to report.
    assert_eq!(tls.reload_changed(), []);
    assert_eq!(tls.reload_failures(), 0);
}

#[tokio::test]
async fn a_kubernetes_secret_symlink_swap_is_reloaded() {
    // A Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/,
    // updated by pointing ..data at a new directory in one rename.
    let dir = tempdir();
    let root = dir.path();
    let ca = TestCa::new("test CA");
    let write_version = |version: &str, issued: &Issued| {
        let versioned = root.join(version);
        fs::create_dir(&versioned).unwrap();
        fs::write(versioned.join("tls.crt"), &issued.cert_pem).unwrap();
        fs::write(versioned.join("tls.key"), &issued.key_pem).unwrap();
        let staging = root.join("..data_tmp");
        std::os::unix::fs::symlink(version, &staging).unwrap();
        fs::rename(&staging, root.join("..data")).unwrap();
    };
    write_version("..2024_01_01", &ca.server_cert(&["first.test"]));
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), root.join(file)).unwrap();
    }
    let pair = CertPair {
        cert: root.join("tls.crt"),
        key: root.join("tls.key"),
    };
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair.clone()])).unwrap();
    let server = TestServer::start(tls.acceptor()).await;
    let seen = connect(&server, any_name_client(&ca), "first.test")
        .await
        .unwrap();
    assert_eq!(seen.names, ["first.test"]);

    write_version("..2024_02_01", &ca.server_cert(&["second.test"]));
    assert_eq!(
        tls.reload_changed(),
        [CertEvent::Reloaded {
            file: pair.cert.display().to_string()
        }]
    );
    let seen = connect(&server, any_name_client(&ca), "first.test")
        .await
        .unwrap();
    assert_eq!(seen.names, ["second.test"]);
}

#[tokio::test]
async fn a_corrupt_replacement_is_refused_and_the_old_certificate_kept() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let pair = write_pair(dir.path(), "site", &ca.server_cert(&["site.test"]));
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair.clone()])).unwrap();
    let server = TestServer::start(tls.acceptor()).await;

    replace_file(&pair.cert, "-----BEGIN CERTIFICATE-----\ntruncated");
    let events = tls.reload_changed();
    let [CertEvent::Refused { file, error }] = events.as_slice() else {
        panic!("expected one refusal, got {events:?}");
    };
    assert_eq!(file, &pair.cert.display().to_string());
    assert!(
        error.contains(&file[..]) && error.contains("websecure"),
        "{error}"
    );
    assert_eq!(tls.reload_failures(), 1);

    let seen = connect(&server, client(&ca), "site.test").await.unwrap();
    assert_eq!(seen.names, ["site.test"]);
    // The same bad file is not refused again at every check.
    assert_eq!(tls.reload_changed(), []);
    assert_eq!(tls.reload_failures(), 1);

    // A good file afterwards is picked up.
    let fixed = ca.server_cert(&["site.test", "fixed.test"]);
    replace_file(&pair.cert, &fixed.cert_pem);
    replace_file(&pair.key, &fixed.key_pem);
    assert!(matches!(
        tls.reload_changed()[..],
        [CertEvent::Reloaded { .. }]
    ));
    let seen = connect(&server, client(&ca), "site.test").await.unwrap();
    assert_eq!(seen.names, ["site.test", "fixed.test"]);
}

#[tokio::test]
async fn a_client_ca_requires_a_certificate_it_signed() {
    let dir = tempdir();
    let server_ca = TestCa::new("server CA");
    let origin_pull_ca = TestCa::new("origin pull CA");
    let other_ca = TestCa::new("other CA");
    let bundle = dir.path().join("origin-pull-ca.pem");
    fs::write(&bundle, origin_pull_ca.pem()).unwrap();
    let mut config = tls_config(vec![write_pair(
        dir.path(),
        "site",
        &server_ca.server_cert(&["site.test"]),
    )]);
    config.client_ca = Some(bundle);
    let tls = TlsEntrypoint::load("websecure", &config).unwrap();
    assert!(tls.requires_client_cert());
    let mut server = TestServer::start(tls.acceptor()).await;

    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let trusted = origin_pull_ca.client_cert("cloudflare.test");
        let with_cert = client_with(server_ca.roots(), versions, Some(&trusted));
        connect(&server, with_cert, "site.test").await.unwrap();
        server.outcome().await.unwrap();

        let without = client_with(server_ca.roots(), versions, None);
        assert!(connect(&server, without, "site.test").await.is_err());
        let refused = server.outcome().await.unwrap_err();
        assert!(refused.contains("certificate"), "{refused}");

        let stranger = other_ca.client_cert("stranger.test");
        let wrong_ca = client_with(server_ca.roots(), versions, Some(&stranger));
        assert!(connect(&server, wrong_ca, "site.test").await.is_err());
        server.outcome().await.unwrap_err();
    }
}

#[test]
fn versions_below_tls12_are_never_enabled() {
    let versions = |min| -> Vec<_> { protocol_versions(min).iter().map(|v| v.version).collect() };
    use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
    assert_eq!(versions(TlsVersion::Tls12), [TLSv1_3, TLSv1_2]);
    assert_eq!(versions(TlsVersion::Tls13), [TLSv1_3]);
}

#[tokio::test]
async fn a_tls11_client_hello_is_answered_with_a_protocol_version_alert() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let pair = write_pair(dir.path(), "site", &ca.server_cert(&["site.test"]));
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair])).unwrap();
    let mut server = TestServer::start(tls.acceptor()).await;

    // A ClientHello as a TLS 1.1 client sends it: version 3.2, no
    // supported_versions extension, CBC suites only. rustls refuses a hello
    // without signature_algorithms before looking at the version (alert 40),
    // so offer it too, to reach the version check itself (alert 70).
    let bare = client_hello_tls11(&[]);
    let with_sig_algs = client_hello_tls11(&[
        0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x01, 0x04, 0x03, // signature_algorithms
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: secp256r1
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
    ]);
    for (hello, alert) in [(bare, 40), (with_sig_algs, 70)] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(&hello).await.unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        // Nothing but one fatal alert record: no ServerHello, no certificate.
        assert_eq!(answer, [0x15, 0x03, 0x03, 0x00, 0x02, 2, alert]);
        server.outcome().await.unwrap_err();
    }
}

fn client_hello_tls11(extensions: &[u8]) -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend([0x5a; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x04, 0xc0, 0x13, 0xc0, 0x14]); // ECDHE-RSA-AES128/256-SHA
    body.extend([0x01, 0x00]); // null compression
    if !extensions.is_empty() {
        body.extend((extensions.len() as u16).to_be_bytes());
        body.extend(extensions);
    }
    let mut handshake = vec![0x01, 0, 0, body.len() as u8];
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0, handshake.len() as u8];
    record.extend(handshake);
    record
}

#[tokio::test]
async fn min_version_13_refuses_a_tls12_only_client() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let pair = write_pair(dir.path(), "site", &ca.server_cert(&["site.test"]));
    let mut config = tls_config(vec![pair]);

    let tls12 = TlsEntrypoint::load("websecure", &config).unwrap();
    let mut server = TestServer::start(tls12.acceptor()).await;
    connect(
        &server,
        client_with(ca.roots(), &[&TLS12], None),
        "site.test",
    )
    .await
    .unwrap();
    assert_eq!(server.outcome().await.unwrap().version, "TLSv1.2");
    connect(&server, client(&ca), "site.test").await.unwrap();
    assert_eq!(server.outcome().await.unwrap().version, "TLSv1.3");

    config.min_version = TlsVersion::Tls13;
    let tls13 = TlsEntrypoint::load("websecure", &config).unwrap();
    let mut server = TestServer::start(tls13.acceptor()).await;
    let refused = connect(
        &server,
        client_with(ca.roots(), &[&TLS12], None),
        "site.test",
    )
    .await;
    assert!(refused.is_err());
    server.outcome().await.unwrap_err();
}

#[tokio::test]
async fn alpn_prefers_h2_and_falls_back_to_http11() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let pair = write_pair(dir.path(), "site", &ca.server_cert(&["site.test"]));
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair])).unwrap();
    let mut server = TestServer::start(tls.acceptor()).await;

    for (offered, expected) in [
        (vec!["http/1.1", "h2"], Some("h2")),
        (vec!["http/1.1"], Some("http/1.1")),
        (vec![], None),
    ] {
        let mut config = client(&ca);
        config.alpn_protocols = offered.iter().map(|p| p.as_bytes().to_vec()).collect();
        let seen = connect(&server, config, "site.test").await.unwrap();
        let expected = expected.map(str::as_bytes);
        assert_eq!(seen.alpn.as_deref(), expected);
        assert_eq!(server.outcome().await.unwrap().alpn.as_deref(), expected);
    }
}

#[tokio::test]
async fn sessions_resume() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let pair = write_pair(dir.path(), "site", &ca.server_cert(&["site.test"]));
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair])).unwrap();
    let server = TestServer::start(tls.acceptor()).await;

    for versions in [&[&TLS13][..], &[&TLS12][..]] {
        let config = Arc::new(client_with(ca.roots(), versions, None));
        let first = connect_shared(&server, config.clone(), "site.test")
            .await
            .unwrap();
        assert_eq!(first.kind, Some(HandshakeKind::Full));
        let second = connect_shared(&server, config, "site.test").await.unwrap();
        assert_eq!(second.kind, Some(HandshakeKind::Resumed), "{versions:?}");
    }
}

#[tokio::test]
async fn without_certificates_a_self_signed_one_is_served() {
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![])).unwrap();
    let certs = tls.certificates();
    let [info] = certs.as_slice() else {
        panic!("{certs:?}")
    };
    assert!(info.self_signed && info.default);
    assert_eq!(info.file, "self-signed");
    assert_eq!(info.names[0], "localhost");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(info.not_after > now + 300 * 24 * 3600, "{info:?}");
    // Nothing on disk to watch.
    assert_eq!(tls.reload_changed(), []);

    let server = TestServer::start(tls.acceptor()).await;
    let self_signed = CertificateDer::from(tls.certs.current.load().certs[0].key.cert[0].to_vec());
    let mut roots = RootCertStore::empty();
    roots.add(self_signed).unwrap();
    let seen = connect(&server, client_with(roots, &[&TLS13], None), "localhost")
        .await
        .unwrap();
    assert_eq!(seen.names, info.names);
}

#[test]
fn certificates_report_the_expiry_and_names() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let expires = rcgen::date_time_ymd(2031, 5, 17);
    let issued = ca.issue(
        &["Site.Test", "*.site.test"],
        ExtendedKeyUsagePurpose::ServerAuth,
        |p| {
            p.not_after = expires;
        },
    );
    let pair = write_pair(dir.path(), "site", &issued);
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair.clone()])).unwrap();
    assert_eq!(
        tls.certificates(),
        [CertInfo {
            entrypoint: "websecure".to_string(),
            file: pair.cert.display().to_string(),
            names: vec!["site.test".to_string(), "*.site.test".to_string()],
            not_after: expires.unix_timestamp(),
            default: true,
            self_signed: false,
        }]
    );
    assert!(!tls.requires_client_cert());
}

#[test]
fn a_certificate_without_sans_is_named_by_its_common_name() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let issued = ca.issue(&[], ExtendedKeyUsagePurpose::ServerAuth, |p| {
        p.distinguished_name.push(DnType::CommonName, "legacy.test");
    });
    let pair = write_pair(dir.path(), "legacy", &issued);
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair])).unwrap();
    assert_eq!(tls.certificates()[0].names, ["legacy.test"]);
}

fn load_error(pairs: Vec<CertPair>) -> String {
    TlsEntrypoint::load("websecure", &tls_config(pairs))
        .unwrap_err()
        .to_string()
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let site = ca.server_cert(&["site.test"]);
    let other = ca.server_cert(&["other.test"]);
    let good = write_pair(dir.path(), "site", &site);
    let path = |name: &str| -> PathBuf { dir.path().join(name) };
    let shown = |p: &Path| p.display().to_string();

    let missing = CertPair {
        cert: path("missing.crt"),
        key: good.key.clone(),
    };
    let error = load_error(vec![missing.clone()]);
    assert!(
        error.contains("websecure") && error.contains(&shown(&missing.cert)),
        "{error}"
    );
    assert!(error.contains("cannot read"), "{error}");

    let mismatched = CertPair {
        cert: good.cert.clone(),
        key: write_pair(dir.path(), "other", &other).key,
    };
    let error = load_error(vec![mismatched.clone()]);
    assert!(
        error.contains(&shown(&mismatched.key)) && error.contains(&shown(&mismatched.cert)),
        "{error}"
    );
    assert!(error.contains("does not match"), "{error}");

    fs::write(path("empty.crt"), "just some text\n").unwrap();
    let no_cert = CertPair {
        cert: path("empty.crt"),
        key: good.key.clone(),
    };
    let error = load_error(vec![no_cert]);
    assert!(
        error.contains(&shown(&path("empty.crt"))) && error.contains("no certificate"),
        "{error}"
    );

    let no_key = CertPair {
        cert: good.cert.clone(),
        key: good.cert.clone(),
    };
    let error = load_error(vec![no_key]);
    assert!(
        error.contains(&shown(&good.cert)) && error.contains("no private key"),
        "{error}"
    );

    // An Ed448 key is valid PKCS#8 that ring cannot sign with.
    let ed448 = "-----BEGIN PRIVATE KEY-----\n\
        MEcCAQAwBQYDK2VxBDsEORlbos0ZIM3H8LHpYzMn1YJ/7OV+t6cYkyJ3ZBbkCVYi\n\
        uMMdgdBqwzS9ndeUoQ4OdXk77ktClFgzXw==\n\
        -----END PRIVATE KEY-----\n";
    fs::write(path("ed448.key"), ed448).unwrap();
    let unsupported = CertPair {
        cert: good.cert.clone(),
        key: path("ed448.key"),
    };
    let error = load_error(vec![unsupported]);
    assert!(
        error.contains(&shown(&path("ed448.key"))) && error.contains("unsupported key type"),
        "{error}"
    );

    let mut config = tls_config(vec![good]);
    config.client_ca = Some(path("empty.crt"));
    let error = TlsEntrypoint::load("websecure", &config)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&shown(&path("empty.crt"))) && error.contains("client CA"),
        "{error}"
    );
}
