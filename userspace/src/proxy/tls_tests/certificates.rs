//! Which certificate a handshake is served (by SNI, exact before wildcard
//! before default, or a generated one), how a replaced file is picked up or
//! refused, and what loading reports.
use super::*;

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
