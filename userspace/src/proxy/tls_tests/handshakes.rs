//! What a handshake allows: client certificates signed by the configured
//! CA, TLS 1.2 and 1.3 only, the minimum version, ALPN, session resumption.
use super::*;

#[test]
fn entrypoint_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TlsEntrypoint>();
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

/// The server's order decides: a client that lists AES-256-GCM-SHA384 first
/// (as OpenSSL, curl and wrk do) gets AES-128-GCM-SHA256, whose hash the CPU
/// accelerates; a client that offers only AES-256 still gets it.
#[tokio::test]
async fn the_server_prefers_aes_128_gcm_whatever_the_client_lists_first() {
    use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    let dir = tempdir();
    let ca = TestCa::new("test CA");
    let pair = write_pair(dir.path(), "site", &ca.server_cert(&["site.test"]));
    let tls = TlsEntrypoint::load("websecure", &tls_config(vec![pair])).unwrap();
    let server = TestServer::start(tls.acceptor()).await;

    let openssl_order = client(&ca);
    let seen = connect(&server, openssl_order, "site.test").await.unwrap();
    assert_eq!(seen.suite, Some(TLS13_AES_128_GCM_SHA256));

    let mut only_256 = rustls::crypto::ring::default_provider();
    only_256
        .cipher_suites
        .retain(|s| s.suite() == TLS13_AES_256_GCM_SHA384);
    let config = ClientConfig::builder_with_provider(std::sync::Arc::new(only_256))
        .with_protocol_versions(&[&TLS13])
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    let seen = connect(&server, config, "site.test").await.unwrap();
    assert_eq!(seen.suite, Some(TLS13_AES_256_GCM_SHA384));
}
