//! The Cloudflare list refreshed through the daemon from a local HTTPS
//! server (a test CA, inside the server namespace) that answers what the test
//! scripts: a list, 304 for a matching `If-None-Match`, a new list, malformed
//! JSON, `success: false`, an empty list, a large shrink, nothing at all, and
//! a daemon restart while it is down. After each step the test checks the
//! list in force in the kernel (`xdpgate sets`, `xdpgate check`, real
//! connections) and what is reported (`xdpgate status`, `/metrics`).
//! Needs root.
use std::time::Duration;

use serde_json::Value;
use xdpgate_tests::lab::{
    lab_ready, tcp_connects, wait_for, ApiServer, Daemon, Lab, Metrics, Reply, TcpServer, TestPki,
    Workdir, TCP_PORT,
};

/// The test API's port on 127.0.0.1 inside the server namespace.
const API_PORT: u16 = 8444;
/// A refresh every second means a step shows within a few seconds.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The test's "Cloudflare list": Cloudflare's real ranges (as embedded in
/// xdpgate; a first list that dropped most of them would be refused as a
/// shrink) plus prefixes of the lab. List B adds the client's IPv4
/// "outsiders", which no embedded or list-A prefix covers.
const LAB_V4: [&str; 2] = ["198.51.100.0/29", "198.51.100.64/26"];
const LAB_V6: [&str; 2] = ["2001:db8:1::/64", "2001:db8:100::/48"];
const LIST_B_EXTRA_V4: &str = "203.0.113.0/29";

/// (IPv4, IPv6) prefixes of list A, or list B with `with_extra`.
fn list(with_extra: bool) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut v4: Vec<&str> = xdpgate::cloudflare::IPV4
        .iter()
        .copied()
        .chain(LAB_V4)
        .collect();
    if with_extra {
        v4.push(LIST_B_EXTRA_V4);
    }
    let v6 = xdpgate::cloudflare::IPV6
        .iter()
        .copied()
        .chain(LAB_V6)
        .collect();
    (v4, v6)
}

fn reply(with_extra: bool, etag: &str) -> Reply {
    let (v4, v6) = list(with_extra);
    Reply::list(&v4, &v6, etag)
}

/// The `cloudflare` source as `xdpgate status --json` describes it.
fn cloudflare_source(work: &Workdir) -> Value {
    let status = work.status();
    let sets = status["daemon"]["status"]["sets"].as_array().cloned();
    sets.unwrap_or_default()
        .into_iter()
        .find(|s| s["name"] == "cloudflare")
        .map(|s| s["sources"][0].clone())
        .unwrap_or(Value::Null)
}

fn wait_source(work: &Workdir, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    wait_for(
        what,
        STEP_TIMEOUT,
        || cloudflare_source(work),
        |s| condition(s),
    )
}

fn count(source: &Value, key: &str) -> u64 {
    source[key].as_u64().unwrap_or(0)
}

fn text<'a>(source: &'a Value, key: &str) -> &'a str {
    source[key].as_str().unwrap_or("")
}

/// The prefixes of the `cloudflare` set in the kernel's active policy.
fn kernel_list(work: &Workdir) -> Vec<String> {
    let out = work.cli(&["sets", "cloudflare", "--json"]);
    assert_eq!(out.code, 0, "xdpgate sets cloudflare: {out:?}");
    let mut prefixes: Vec<String> = out.json()["sets"][0]["prefixes"]
        .as_array()
        .expect("prefixes")
        .iter()
        .map(|p| p.as_str().expect("prefix").to_string())
        .collect();
    prefixes.sort();
    prefixes
}

/// The list as `xdpgate sets` prints it: every prefix, sorted.
fn sorted(with_extra: bool) -> Vec<String> {
    let (v4, v6) = list(with_extra);
    let mut all: Vec<String> = v4.iter().chain(&v6).map(|s| s.to_string()).collect();
    all.sort();
    all
}

/// The kernel holds exactly `expected`, and `check` agrees on a few
/// addresses in and out of it.
fn assert_in_force(
    work: &Workdir,
    step: &str,
    expected: &[String],
    passes: &[&str],
    drops: &[&str],
) {
    assert_eq!(kernel_list(work), expected, "{step}: the list in force");
    for address in passes {
        assert_eq!(
            work.check(address, "tcp", TCP_PORT),
            (0, "pass".to_string()),
            "{step}: check {address}"
        );
    }
    for address in drops {
        assert_eq!(
            work.check(address, "tcp", TCP_PORT),
            (5, "drop".to_string()),
            "{step}: check {address}"
        );
    }
}

/// `/metrics` reports the source as `status` does: refresh counts by
/// result, entries and where the list came from.
fn assert_metrics_agree(work: &Workdir, lab: &Lab, step: &str) {
    let labels = |result| {
        [
            ("set", "cloudflare"),
            ("source", "cloudflare"),
            ("result", result),
        ]
    };
    for _ in 0..5 {
        let before = cloudflare_source(work);
        let metrics = Metrics::scrape(&lab.server_ns);
        if before != cloudflare_source(work) {
            continue; // a refresh landed in between; look again
        }
        let refresh = |result| metrics.get("xdpgate_set_refresh_total", &labels(result));
        let reported = (refresh("success"), refresh("failure"), refresh("refused"));
        let counted = |key| Some(count(&before, key) as f64);
        assert_eq!(
            reported,
            (
                counted("successes"),
                counted("failures"),
                counted("refusals")
            ),
            "{step}: xdpgate_set_refresh_total agrees with status {before}"
        );
        let set = [("set", "cloudflare"), ("source", "cloudflare")];
        assert_eq!(
            metrics.get("xdpgate_set_source_entries", &set),
            counted("entries"),
            "{step}: xdpgate_set_source_entries"
        );
        let from = [set[0], set[1], ("from", text(&before, "from"))];
        assert_eq!(
            metrics.get("xdpgate_set_source_info", &from),
            Some(1.0),
            "{step}: xdpgate_set_source_info names where the list came from"
        );
        return;
    }
    panic!("{step}: the status never held still across a /metrics scrape");
}

#[test]
fn the_cloudflare_list_is_refreshed_validated_and_survives_a_restart_with_the_api_down() {
    let test =
        "the_cloudflare_list_is_refreshed_validated_and_survives_a_restart_with_the_api_down";
    if !lab_ready(test, &[]) {
        return;
    }
    let lab = Lab::new("cf");
    let work = Workdir::new("cloudflare", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _tcp = TcpServer::start(&lab.server_ns, TCP_PORT);
    let pki = TestPki::new(&work.path("ca.pem"));
    let mut api = ApiServer::start(&lab.server_ns, API_PORT, &pki, reply(false, "a1"));
    let config = work.write(
        "config.yaml",
        &format!(
            "filter:
  interfaces: [{}]
  sets:
    cloudflare:
      cloudflare: {{ url: \"{}\", ca_file: {}, refresh: 1s, timeout: 2s }}
  allow:
    - {{ tcp: [{TCP_PORT}], from: [cloudflare] }}
",
            lab.server_if,
            api.url(),
            pki.ca_file.display()
        ),
    );
    let mut first = Daemon::start_ready(&lab, &work, &config, "daemon-1");

    // 200 with an etag: the API's list replaces the embedded snapshot.
    let list_a = sorted(false);
    let source = wait_source(&work, "the first list from the API", |s| {
        s["etag"] == "\"a1\"" && s["from"] == "api"
    });
    assert_eq!(count(&source, "entries"), list_a.len() as u64, "{source}");
    // The next refresh may already have been a 304 on a slow machine.
    assert!(
        ["ok", "not modified"].contains(&text(&source, "last_result")),
        "{source}"
    );
    let first_request = &api.served()[0];
    assert_eq!(
        (first_request.status, first_request.if_none_match.as_deref()),
        (200, None),
        "the first request is unconditional and gets the list"
    );
    assert_in_force(
        &work,
        "list A",
        &list_a,
        &["198.51.100.1", "2001:db8:1::1", "173.245.48.1"],
        &["203.0.113.1", "2001:db8:2::1"],
    );
    for (source, connects) in [
        ("198.51.100.1", true),
        ("2001:db8:1::1", true),
        ("203.0.113.1", false),
    ] {
        assert_eq!(
            tcp_connects(
                &lab.client_ns,
                source.parse().unwrap(),
                TCP_PORT,
                Duration::from_secs(1)
            ),
            connects,
            "a real connection from {source} with the API's list A in force"
        );
    }
    assert_metrics_agree(&work, &lab, "list A");

    // 304: the next request carries If-None-Match, and the list stays.
    let successes = count(&source, "successes");
    let source = wait_source(&work, "a 304 Not Modified", |s| {
        s["last_result"] == "not modified" && count(s, "successes") > successes
    });
    let conditional = api.served().into_iter().find(|r| r.status == 304);
    assert_eq!(
        conditional.and_then(|r| r.if_none_match).as_deref(),
        Some("\"a1\""),
        "the 304 answered a request that carried If-None-Match: \"a1\""
    );
    assert_eq!(
        (text(&source, "from"), count(&source, "entries")),
        ("api", list_a.len() as u64)
    );
    assert_in_force(
        &work,
        "after 304",
        &list_a,
        &["198.51.100.1"],
        &["203.0.113.1"],
    );
    assert_metrics_agree(&work, &lab, "after 304");

    // 200 with a new etag and a longer list: it replaces list A.
    api.reply_with(reply(true, "b2"));
    let list_b = sorted(true);
    let entries_b = list_b.len() as u64;
    let source = wait_source(&work, "list B", |s| s["etag"] == "\"b2\"");
    assert_eq!(
        (text(&source, "from"), count(&source, "entries")),
        ("api", entries_b)
    );
    assert!(
        api.served()
            .iter()
            .any(|r| r.status == 200 && r.if_none_match.as_deref() == Some("\"a1\"")),
        "list B came in answer to a request for anything newer than a1"
    );
    assert_in_force(
        &work,
        "list B",
        &list_b,
        &["203.0.113.1", "198.51.100.1"],
        &["2001:db8:2::1"],
    );
    assert!(
        tcp_connects(
            &lab.client_ns,
            "203.0.113.1".parse().unwrap(),
            TCP_PORT,
            Duration::from_secs(1)
        ),
        "203.0.113.1 connects once list B is in force"
    );
    assert_metrics_agree(&work, &lab, "list B");

    // Answers that are refused or fail: each is reported, list B stays.
    let bad_answers = [
        (
            "malformed JSON",
            Reply::raw(200, "{\"result\": {\"ipv4_cidrs\": [\"198.51"),
            "error: malformed answer",
            "failures",
        ),
        (
            "success: false",
            Reply::raw(
                200,
                r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[],"result":null}"#,
            ),
            "error: the API answered success: false: 10000 Authentication error",
            "failures",
        ),
        (
            "an empty list",
            Reply::list(&[], &[], "e3"),
            "refused: empty list",
            "refusals",
        ),
        (
            "a large shrink",
            Reply::list(&["198.51.100.0/29"], &["2001:db8:1::/64"], "s4"),
            "refused: would remove 92.6% of 27 entries (max_shrink 50%)",
            "refusals",
        ),
    ];
    for (step, reply, result, counter) in bad_answers {
        let before = cloudflare_source(&work);
        api.reply_with(reply);
        let source = wait_source(&work, step, |s| {
            text(s, "last_result").starts_with(result)
                && count(s, counter) > count(&before, counter)
        });
        assert_eq!(
            (
                text(&source, "from"),
                text(&source, "etag"),
                count(&source, "entries")
            ),
            ("api", "\"b2\"", entries_b),
            "{step}: the list in force is still B"
        );
        assert_in_force(&work, step, &list_b, &["203.0.113.1"], &["2001:db8:2::1"]);
        assert_metrics_agree(&work, &lab, step);
    }

    // The server goes away: connection refused, reported, list B stays.
    let before = cloudflare_source(&work);
    api.stop();
    let source = wait_source(&work, "a failure with the API down", |s| {
        s["last_result"] != before["last_result"]
            && count(s, "failures") > count(&before, "failures")
    });
    assert!(
        text(&source, "last_result").starts_with("error: "),
        "{source}"
    );
    assert_in_force(
        &work,
        "API down",
        &list_b,
        &["203.0.113.1"],
        &["2001:db8:2::1"],
    );
    assert_metrics_agree(&work, &lab, "API down");

    // A restart while the API is down comes up with the last-known-good
    // list B, not the embedded snapshot.
    let stopped = first.terminate(Duration::from_secs(10));
    assert!(
        stopped.success(),
        "the daemon exits cleanly on SIGTERM: {stopped}"
    );
    let second = Daemon::start_ready(&lab, &work, &config, "daemon-2");
    let source = wait_source(&work, "the restarted daemon's first attempt", |s| {
        count(s, "failures") >= 1
    });
    assert_eq!(
        (
            text(&source, "from"),
            text(&source, "etag"),
            count(&source, "entries")
        ),
        ("last-known-good", "\"b2\"", entries_b),
        "after a restart with the API down: {source}"
    );
    assert_in_force(
        &work,
        "restarted with the API down",
        &list_b,
        &["203.0.113.1", "2001:db8:1::1"],
        &["2001:db8:2::1"],
    );
    for (source, connects) in [
        ("203.0.113.1", true),
        ("2001:db8:1::1", true),
        ("2001:db8:2::1", false),
    ] {
        assert_eq!(
            tcp_connects(
                &lab.client_ns,
                source.parse().unwrap(),
                TCP_PORT,
                Duration::from_secs(1)
            ),
            connects,
            "a real connection from {source} after the restart"
        );
    }
    assert_metrics_agree(&work, &lab, "restarted with the API down");

    // The API comes back with list B: the persisted etag makes it a 304,
    // and the list is from the API again.
    let api = ApiServer::start(&lab.server_ns, API_PORT, &pki, reply(true, "b2"));
    let source = wait_source(&work, "a 304 for the persisted etag", |s| {
        s["last_result"] == "not modified"
    });
    assert_eq!(text(&source, "from"), "api");
    assert!(
        api.served()
            .iter()
            .any(|r| r.status == 304 && r.if_none_match.as_deref() == Some("\"b2\"")),
        "the restarted daemon asked with If-None-Match: \"b2\": {:?}",
        api.served()
    );
    assert_in_force(
        &work,
        "API back",
        &list_b,
        &["203.0.113.1"],
        &["2001:db8:2::1"],
    );
    assert_metrics_agree(&work, &lab, "API back");
    drop(second);
}
