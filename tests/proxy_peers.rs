//! Peers nobody here wrote, against the running proxy: `curl` over
//! HTTP/1.1 and HTTP/2 from IPv4 and IPv6 sources; `testssl.sh` against the
//! TLS entrypoint (TLS 1.2 and 1.3 only, no weak cipher, forward secrecy
//! only); a slowloris attack (`slowhttptest -H`) on the plain entrypoint
//! while an ordinary client keeps being answered within a second; and
//! `h2load` with 100,000 requests over 20 connections, 10 streams each,
//! without one error. The figures (h2load's rate and latencies, testssl's
//! findings) are printed; run with `--nocapture` to see them. Needs root,
//! curl, testssl, slowhttptest and h2load.
use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;
use xdpgate_tests::lab::{
    access_log, curl, lab_ready, members, outsiders, tools_ready, wait_for, Call, H2loadSummary,
    ProxyLab, ProxySetup, Tool, TLS_PORT,
};

const BACKEND_PORT: u16 = 9100;

/// The load tests would disturb each other's figures and timing.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn start(tag: &str, limits: &str) -> ProxyLab {
    let mut proxy = ProxyLab::new(tag, env!("CARGO_BIN_EXE_xdpgate-under-test"));
    proxy.start(&ProxySetup {
        limits: limits.to_string(),
        rest: format!("  default_service: \"127.0.0.1:{BACKEND_PORT}\"\n"),
        ..ProxySetup::default()
    });
    proxy
}

#[test]
fn curl_speaks_http1_and_http2_to_both_entrypoints_from_v4_and_v6() {
    let test = "curl_speaks_http1_and_http2_to_both_entrypoints_from_v4_and_v6";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("curl", "curl")]) {
        return;
    }
    let proxy = start("pc", "");
    let _backend = proxy.echo_backend("app", BACKEND_PORT);
    let mut expected = Vec::new();
    for source in [members()[1], outsiders()[1], members()[7], outsiders()[7]] {
        let server = if source.is_ipv4() {
            "192.0.2.1".to_string()
        } else {
            "[2001:db8::1]".to_string()
        };
        for (flag, scheme, port, version, protocol) in [
            ("--http1.1", "https", 8443, "1.1", "HTTP/1.1"),
            ("--http2", "https", 8443, "2", "HTTP/2.0"),
            ("--http1.1", "http", 8080, "1.1", "HTTP/1.1"),
            ("--http2-prior-knowledge", "http", 8080, "2", "HTTP/2.0"),
        ] {
            let path = format!("/curl/{source}/{scheme}/{version}");
            // `--connect-to` keeps `localhost` for SNI and Host.
            let connect_to = format!("localhost:{port}:{server}:{port}");
            let url = format!("{scheme}://localhost:{port}{path}");
            let source_text = source.to_string();
            let out = curl(
                &proxy.lab,
                &proxy.pki.ca_file,
                &[
                    flag,
                    "--interface",
                    &source_text,
                    "--connect-to",
                    &connect_to,
                    "--output",
                    "/dev/null",
                    "--write-out",
                    "%{http_version} %{http_code}",
                    &url,
                ],
                Duration::from_secs(10),
            );
            assert!(
                out.status.success(),
                "curl {flag} {url} from {source}: {out:?}"
            );
            assert_eq!(
                out.stdout,
                format!("{version} 200"),
                "curl {flag} {url} from {source}"
            );
            expected.push((path, protocol, source));
        }
    }
    let lines = wait_for(
        "an access log line per curl",
        Duration::from_secs(5),
        || access_log(&proxy.work),
        |lines| lines.len() >= expected.len(),
    );
    for (path, protocol, source) in expected {
        let line = lines
            .iter()
            .find(|l| l["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no access log line for {path}"));
        assert_eq!(line["protocol"], protocol, "{line}");
        assert_eq!(line["client_ip"], source.to_string(), "{line}");
    }

    // Uploads the way curl sends them (`-T`: PUT, with `Expect:
    // 100-continue` over HTTP/1.1).
    let size = 8 * 1024 * 1024;
    let file = proxy.work.write("upload.bin", &"u".repeat(size));
    let file = file.display().to_string();
    for flag in ["--http1.1", "--http2"] {
        let out = curl(
            &proxy.lab,
            &proxy.pki.ca_file,
            &[flag, "-T", &file, "https://localhost:8443/upload"],
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "curl {flag} -T: {out:?}");
        let echoed: Value = serde_json::from_str(&out.stdout).expect("the echo's JSON");
        assert_eq!(echoed["method"], "PUT", "curl {flag} -T");
        assert_eq!(
            echoed["body_bytes"], size,
            "curl {flag} -T: every byte arrived"
        );
    }
}

/// testssl's flat JSON: `id -> finding`.
fn findings(json: &str) -> BTreeMap<String, String> {
    let entries: Vec<Value> = serde_json::from_str(json).expect("testssl's JSON");
    entries
        .iter()
        .filter_map(|e| {
            Some((
                e["id"].as_str()?.to_string(),
                e["finding"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn testssl_finds_only_modern_protocols_and_forward_secret_strong_ciphers() {
    let test = "testssl_finds_only_modern_protocols_and_forward_secret_strong_ciphers";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("testssl", "testssl.sh")]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let proxy = start("pt", "");
    let _backend = proxy.echo_backend("app", BACKEND_PORT);
    let json = proxy.work.path("testssl.json");
    let json_arg = json.display().to_string();
    let url = format!("https://192.0.2.1:{TLS_PORT}/");
    let started = Instant::now();
    let out = Tool::spawn(
        &proxy.lab.client_ns,
        "testssl",
        &[
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--nodns",
            "none",
            "--jsonfile",
            &json_arg,
            "--protocols",
            "--std",
            "--fs",
            "--cipher-per-proto",
            &url,
        ],
    )
    .wait(Duration::from_secs(300));
    let text =
        std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("no testssl JSON ({e}): {out:?}"));
    let found = findings(&text);
    println!(
        "testssl --protocols --std --fs --cipher-per-proto ({:?}):",
        started.elapsed()
    );
    for (id, finding) in &found {
        println!("  {id}: {finding}");
    }
    let finding = |id: &str| found.get(id).map(String::as_str).unwrap_or("(missing)");
    let mut wrong = Vec::new();
    let mut expect = |id: &str, ok: bool, what: &str| {
        if !ok {
            wrong.push(format!("{id}: `{}`, expected {what}", finding(id)));
        }
    };
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        expect(id, finding(id) == "not offered", "not offered");
    }
    for id in ["TLS1_2", "TLS1_3"] {
        expect(id, finding(id).starts_with("offered"), "offered");
    }
    for id in ["NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"] {
        let id = format!("cipherlist_{id}");
        expect(&id, finding(&id) == "not offered", "not offered");
    }
    expect(
        "cipherlist_STRONG",
        finding("cipherlist_STRONG") == "offered",
        "offered",
    );
    expect("PFS", finding("PFS") == "offered", "offered");
    // Every cipher offered, per protocol, is an AEAD with an ephemeral key
    // exchange: forward secrecy only.
    let pfs: Vec<&str> = finding("PFS_ciphers").split_whitespace().collect();
    let ciphers: Vec<(&String, &String)> = found
        .iter()
        .filter(|(id, _)| id.starts_with("cipher-tls"))
        .collect();
    expect(
        "cipher-tls1_2_*",
        ciphers
            .iter()
            .any(|(id, _)| id.starts_with("cipher-tls1_2")),
        "some",
    );
    expect(
        "cipher-tls1_3_*",
        ciphers
            .iter()
            .any(|(id, _)| id.starts_with("cipher-tls1_3")),
        "some",
    );
    for (id, line) in ciphers {
        let name = line.split_whitespace().nth(3).unwrap_or_default();
        let strong = ["AESGCM", "ChaCha20"].iter().any(|c| line.contains(c));
        expect(
            id,
            pfs.contains(&name) && line.contains("ECDH") && strong,
            "an ECDHE AEAD suite",
        );
    }
    assert!(
        wrong.is_empty(),
        "testssl findings:\n{}\n{}",
        wrong.join("\n"),
        out.stdout
    );
}

/// slowhttptest's per-second CSV: `(second, closed, pending, connected,
/// service available)`; the last column is non-zero while its probe is
/// answered.
fn slowloris_seconds(csv: &str) -> Vec<[u64; 5]> {
    csv.lines()
        .skip(1)
        .filter_map(|line| {
            let cells: Vec<u64> = line
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect();
            cells.try_into().ok()
        })
        .collect()
}

#[test]
fn slowloris_is_cut_off_and_an_ordinary_client_is_answered_meanwhile() {
    let test = "slowloris_is_cut_off_and_an_ordinary_client_is_answered_meanwhile";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("slowhttptest", "slowhttptest")]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let proxy = start("ps", "header_read_timeout: 2s");
    let _backend = proxy.echo_backend("app", BACKEND_PORT);
    let report = proxy.work.path("slowloris");
    let report_arg = report.display().to_string();
    // 500 connections at 200 a second, each sending one more header line
    // every second, for up to 20 seconds if the server lets them.
    let attack = Tool::spawn(
        &proxy.lab.client_ns,
        "slowhttptest",
        &[
            "-H",
            "-c",
            "500",
            "-r",
            "200",
            "-i",
            "1",
            "-x",
            "24",
            "-p",
            "3",
            "-l",
            "20",
            "-g",
            "-o",
            &report_arg,
            "-u",
            "http://192.0.2.1:8080/",
        ],
    );
    // An ordinary client, four times a second, while the attack is on.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    let mut wrong = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        let call = Call::plain(outsiders()[2])
            .path("/ordinary")
            .timeout(Duration::from_secs(5));
        match proxy.send(&call) {
            Ok(reply) if reply.status == 200 && reply.took < Duration::from_secs(1) => {
                answered += 1;
                worst = worst.max(reply.took);
            }
            Ok(reply) => wrong.push(format!(
                "{:?}: {} after {:?}",
                started.elapsed(),
                reply.status,
                reply.took
            )),
            Err(e) => wrong.push(format!("{:?}: {e}", started.elapsed())),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = attack.wait(Duration::from_secs(60));
    let csv = std::fs::read_to_string(report.with_extension("csv"))
        .unwrap_or_else(|e| panic!("no slowhttptest CSV ({e}): {out:?}"));
    let seconds = slowloris_seconds(&csv);
    let held = seconds.iter().map(|s| s[3]).max().unwrap_or(0);
    let ended = seconds.last().map(|s| s[0]).unwrap_or(0);
    println!(
        "slowhttptest -H -c 500 -r 200 -i 1 (header_read_timeout 2s): at most {held} slow \
         connections open at once, all closed by the proxy by second {ended}; ordinary \
         client: {answered} requests answered, slowest in {worst:?}\n{csv}"
    );
    assert!(
        wrong.is_empty(),
        "the ordinary client during slowloris:\n{}",
        wrong.join("\n")
    );
    assert!(
        answered >= 15,
        "the ordinary client was answered {answered} times"
    );
    assert!(held >= 100, "the attack did open slow connections: {csv}");
    assert!(
        seconds.iter().all(|s| s[4] > 0),
        "slowhttptest's own probe was answered throughout: {csv}"
    );
    assert!(
        out.stdout.contains("No open connections left") && ended < 10,
        "the proxy closed every slow connection long before the attack's 20 s: {csv}\n{}",
        out.stdout
    );
}

#[test]
fn h2load_100k_requests_over_20_connections_and_10_streams_each_without_an_error() {
    let test = "h2load_100k_requests_over_20_connections_and_10_streams_each_without_an_error";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("h2load", "nghttp2-client")]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let proxy = start("ph", "");
    let backend = proxy.echo_backend("app", BACKEND_PORT);
    let url = format!("https://192.0.2.1:{TLS_PORT}/load");
    let out = Tool::spawn(
        &proxy.lab.client_ns,
        "h2load",
        &["-n", "100000", "-c", "20", "-m", "10", &url],
    )
    .wait(Duration::from_secs(400));
    let summary =
        H2loadSummary::parse(&out.stdout).unwrap_or_else(|| panic!("no h2load summary: {out:?}"));
    println!("{}", out.stdout);
    println!(
        "h2load -n 100000 -c 20 -m 10: {:.0} req/s; {} succeeded, {} failed, {} errored, \
         {} timeout; time for request (min max mean sd +/-sd): {}",
        summary.requests_per_second,
        summary.succeeded,
        summary.failed,
        summary.errored,
        summary.timeout,
        summary.request_time
    );
    assert!(out.status.success(), "h2load: {out:?}");
    assert_eq!(
        (
            summary.total,
            summary.succeeded,
            summary.failed,
            summary.errored,
            summary.timeout
        ),
        (100_000, 100_000, 0, 0, 0),
        "{}",
        out.stdout
    );
    assert_eq!(
        summary.status,
        [100_000, 0, 0, 0],
        "all 2xx: {}",
        out.stdout
    );
    assert_eq!(
        backend.served(),
        100_000,
        "every request reached the backend"
    );
}
