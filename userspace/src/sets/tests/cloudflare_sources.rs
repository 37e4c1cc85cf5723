//! The `cloudflare` source against a local stand-in for the API: conditional
//! refreshes, every way an answer can be wrong, and the last-known-good list
//! across restarts.
use std::{path::PathBuf, time::Duration};

use super::{
    api_server::{Reply, TestApi},
    *,
};
use crate::sets::CloudflareSpec;

const HOUR: Duration = Duration::from_secs(3600);

/// The embedded snapshot plus one documentation prefix per family, so the
/// first fetch is distinguishable from the snapshot and within max_shrink.
fn list_1() -> (Vec<&'static str>, Vec<&'static str>) {
    let mut v4 = crate::cloudflare::IPV4.to_vec();
    v4.push("192.0.2.0/24");
    let mut v6 = crate::cloudflare::IPV6.to_vec();
    v6.push("2001:db8::/32");
    (v4, v6)
}

fn list_1_nets() -> Vec<IpNet> {
    let (v4, v6) = list_1();
    nets(&[v4, v6].concat())
}

fn list_1_reply(etag: &str) -> Reply {
    let (v4, v6) = list_1();
    Reply::list(&v4, &v6, etag)
}

fn cloudflare_spec(api: &TestApi, refresh: Duration) -> CloudflareSpec {
    CloudflareSpec {
        url: api.url(),
        refresh,
        timeout: Duration::from_secs(5),
        ca_file: Some(api.ca_file.clone()),
    }
}

fn specs(spec: CloudflareSpec) -> Vec<SetSpec> {
    vec![set("cloudflare", 0.5, vec![SourceSpec::Cloudflare(spec)])]
}

struct Fixture {
    state: tempfile::TempDir,
    api: TestApi,
    service: SetsService,
}

impl Fixture {
    fn state_dir(&self) -> PathBuf {
        self.state.path().to_path_buf()
    }

    /// The service after its first fetch, which put list 1 (etag `e1`) in force.
    async fn with_list_1() -> Fixture {
        let api = TestApi::https(list_1_reply("e1")).await;
        let state = tempfile::tempdir().unwrap();
        let service = SetsService::start(
            specs(cloudflare_spec(&api, HOUR)),
            state.path().to_path_buf(),
            POLL,
        )
        .await;
        let fetched = wait_for(&service, "the first fetch", |s| {
            source_of(s, "cloudflare").successes == 1
        })
        .await;
        assert_eq!(prefixes_of(&fetched, "cloudflare"), list_1_nets());
        Fixture {
            state,
            api,
            service,
        }
    }

    /// Triggers one refresh and waits for its outcome.
    async fn refresh(&self, what: &str, done: impl Fn(&SourceStatus) -> bool) -> Arc<SetsSnapshot> {
        self.service.refresh_now();
        wait_for(&self.service, what, |s| done(source_of(s, "cloudflare"))).await
    }

    /// Asserts that list 1 with etag `e1`, fetched from the API, is still in force.
    fn assert_list_1_in_force(&self, snapshot: &SetsSnapshot) {
        assert_eq!(prefixes_of(snapshot, "cloudflare"), list_1_nets());
        assert!(snapshot.all_loaded());
        let status = source_of(snapshot, "cloudflare");
        assert_eq!((status.from.as_str(), status.entries), ("api", 24));
        assert_eq!(status.etag.as_deref(), Some("\"e1\""));
    }
}

#[tokio::test]
async fn starts_on_the_embedded_snapshot_then_a_200_replaces_it_and_its_etag_is_kept() {
    let api = TestApi::https(list_1_reply("e1")).await;
    let state = tempfile::tempdir().unwrap();
    let service = SetsService::start(
        specs(cloudflare_spec(&api, HOUR)),
        state.path().to_path_buf(),
        POLL,
    )
    .await;

    // The fetch runs in the background; start() did not wait for it.
    let first = service.snapshot();
    assert!(first.all_loaded());
    assert_eq!(
        prefixes_of(&first, "cloudflare"),
        normalise(crate::cloudflare::snapshot())
    );
    let status = source_of(&first, "cloudflare");
    assert_eq!(
        (
            status.kind.as_str(),
            status.origin.as_str(),
            status.from.as_str()
        ),
        ("cloudflare", api.url().as_str(), "embedded")
    );
    assert_eq!(
        (
            status.entries,
            status.last_result.as_str(),
            status.etag.as_deref()
        ),
        (22, "not fetched yet", None)
    );

    let fetched = wait_for(&service, "the first fetch", |s| {
        source_of(s, "cloudflare").successes == 1
    })
    .await;
    assert_eq!(prefixes_of(&fetched, "cloudflare"), list_1_nets());
    let status = source_of(&fetched, "cloudflare");
    assert_eq!(
        (
            status.from.as_str(),
            status.entries,
            status.last_result.as_str()
        ),
        ("api", 24, "ok")
    );
    assert_eq!(status.etag.as_deref(), Some("\"e1\""));
    assert_eq!((status.failures, status.refusals), (0, 0));
    assert!(status.obtained_at > 0 && status.last_success_at >= status.obtained_at);
    assert_eq!(
        api.if_none_match_seen(),
        [None],
        "nothing to be conditional on yet"
    );

    // A new list with a new etag replaces it.
    let (mut v4, v6) = list_1();
    v4.push("198.51.100.0/24");
    api.reply_with(Reply::list(&v4, &v6, "e2"));
    service.refresh_now();
    let replaced = wait_for(&service, "the second list", |s| {
        source_of(s, "cloudflare").successes == 2
    })
    .await;
    assert_eq!(
        prefixes_of(&replaced, "cloudflare"),
        nets(&[v4, v6].concat())
    );
    let status = source_of(&replaced, "cloudflare");
    assert_eq!(
        (status.entries, status.etag.as_deref()),
        (25, Some("\"e2\""))
    );
    assert_eq!(api.if_none_match_seen(), [None, Some("\"e1\"".to_string())]);
    service.shutdown();
}

#[tokio::test]
async fn a_304_keeps_the_list_and_the_request_was_conditional() {
    let fixture = Fixture::with_list_1().await;
    let before = fixture.service.snapshot();
    let not_modified = fixture
        .refresh("a second success", |s| s.successes == 2)
        .await;
    fixture.assert_list_1_in_force(&not_modified);
    let status = source_of(&not_modified, "cloudflare");
    assert_eq!(status.last_result, "not modified");
    assert_eq!(
        status.obtained_at,
        source_of(&before, "cloudflare").obtained_at
    );
    assert_eq!((status.failures, status.refusals), (0, 0));
    assert_eq!(
        fixture.api.if_none_match_seen(),
        [None, Some("\"e1\"".to_string())]
    );
    fixture.service.shutdown();
}

#[tokio::test]
async fn malformed_json_is_a_failure_that_keeps_the_list() {
    let fixture = Fixture::with_list_1().await;
    fixture
        .api
        .reply_with(Reply::raw(200, "{\"result\": {\"ipv4_cidrs\": ["));
    let failed = fixture.refresh("a failure", |s| s.failures == 1).await;
    fixture.assert_list_1_in_force(&failed);
    let status = source_of(&failed, "cloudflare");
    assert!(
        status.last_result.starts_with("error: malformed answer: "),
        "{}",
        status.last_result
    );
    assert_eq!((status.successes, status.refusals), (1, 0));
    fixture.service.shutdown();
}

#[tokio::test]
async fn success_false_is_a_failure_that_names_the_apis_errors() {
    let fixture = Fixture::with_list_1().await;
    fixture.api.reply_with(Reply::raw(
        200,
        r#"{"result":null,"success":false,"messages":[],
            "errors":[{"code":10000,"message":"Authentication error"}]}"#,
    ));
    let failed = fixture.refresh("a failure", |s| s.failures == 1).await;
    fixture.assert_list_1_in_force(&failed);
    assert_eq!(
        source_of(&failed, "cloudflare").last_result,
        "error: the API answered success: false: 10000 Authentication error"
    );
    fixture.service.shutdown();
}

#[tokio::test]
async fn an_http_error_status_is_a_failure() {
    let fixture = Fixture::with_list_1().await;
    fixture.api.reply_with(Reply::raw(503, "upstream down"));
    let failed = fixture.refresh("a failure", |s| s.failures == 1).await;
    fixture.assert_list_1_in_force(&failed);
    assert_eq!(
        source_of(&failed, "cloudflare").last_result,
        "error: HTTP 503 Service Unavailable"
    );
    fixture.service.shutdown();
}

#[tokio::test]
async fn a_bad_cidr_in_the_answer_is_a_failure() {
    let fixture = Fixture::with_list_1().await;
    let (mut v4, v6) = list_1();
    v4.push("173.245.48.0/40");
    fixture.api.reply_with(Reply::list(&v4, &v6, "e2"));
    let failed = fixture.refresh("a failure", |s| s.failures == 1).await;
    fixture.assert_list_1_in_force(&failed);
    assert_eq!(
        source_of(&failed, "cloudflare").last_result,
        "error: ipv4_cidrs[16]: \"173.245.48.0/40\" is not an IP address or CIDR"
    );
    fixture.service.shutdown();
}

#[tokio::test]
async fn empty_lists_are_refused() {
    let fixture = Fixture::with_list_1().await;
    fixture.api.reply_with(Reply::list(&[], &[], "e2"));
    let refused = fixture.refresh("a refusal", |s| s.refusals == 1).await;
    fixture.assert_list_1_in_force(&refused);
    let status = source_of(&refused, "cloudflare");
    assert_eq!(status.last_result, "refused: empty list");
    assert_eq!((status.successes, status.failures), (1, 0));

    // The etag stayed that of the list in force, so the next request asks
    // for everything again rather than being told "not modified".
    fixture
        .refresh("a second refusal", |s| s.refusals == 2)
        .await;
    assert_eq!(
        fixture
            .api
            .if_none_match_seen()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("\"e1\"")
    );
    fixture.service.shutdown();
}

#[tokio::test]
async fn a_large_shrink_is_refused() {
    let fixture = Fixture::with_list_1().await;
    fixture
        .api
        .reply_with(Reply::list(&crate::cloudflare::IPV4[..4], &[], "e2"));
    let refused = fixture.refresh("a refusal", |s| s.refusals == 1).await;
    fixture.assert_list_1_in_force(&refused);
    let status = source_of(&refused, "cloudflare");
    assert_eq!(
        status.last_result,
        "refused: would remove 83.3% of 24 entries (max_shrink 50%)"
    );
    assert_eq!((status.successes, status.failures), (1, 0));
    fixture.service.shutdown();
}

#[tokio::test]
async fn a_server_that_is_down_is_a_failure_that_keeps_the_list() {
    let Fixture {
        state,
        mut api,
        service,
    } = Fixture::with_list_1().await;
    api.stop().await;
    service.refresh_now();
    let failed = wait_for(&service, "a failure", |s| {
        source_of(s, "cloudflare").failures == 1
    })
    .await;
    assert_eq!(prefixes_of(&failed, "cloudflare"), list_1_nets());
    let status = source_of(&failed, "cloudflare");
    assert_eq!(
        (status.from.as_str(), status.etag.as_deref()),
        ("api", Some("\"e1\""))
    );
    assert!(
        status.last_result.starts_with("error: ")
            && status.last_result.contains("Connection refused"),
        "{}",
        status.last_result
    );
    service.shutdown();
    drop(state);
}

#[tokio::test]
async fn a_restart_with_the_server_down_uses_the_last_known_good_list() {
    let fixture = Fixture::with_list_1().await;
    let obtained_at = source_of(&fixture.service.snapshot(), "cloudflare").obtained_at;
    let spec = cloudflare_spec(&fixture.api, HOUR);
    let state_dir = fixture.state_dir();
    fixture.service.shutdown();
    let Fixture {
        state,
        mut api,
        service,
    } = fixture;
    drop(service);
    api.stop().await;

    let restarted = SetsService::start(specs(spec), state_dir, POLL).await;
    let snapshot = restarted.snapshot();
    assert_eq!(
        prefixes_of(&snapshot, "cloudflare"),
        list_1_nets(),
        "the API's list, not the embedded one"
    );
    assert!(snapshot.all_loaded());
    let status = source_of(&snapshot, "cloudflare");
    assert_eq!(
        (status.from.as_str(), status.entries, status.obtained_at),
        ("last-known-good", 24, obtained_at)
    );
    assert_eq!(status.etag.as_deref(), Some("\"e1\""));

    let failed = wait_for(&restarted, "the background fetch to fail", |s| {
        source_of(s, "cloudflare").failures == 1
    })
    .await;
    assert_eq!(prefixes_of(&failed, "cloudflare"), list_1_nets());
    let status = source_of(&failed, "cloudflare");
    assert_eq!(status.from, "last-known-good");
    assert!(
        status.last_result.contains("Connection refused"),
        "{}",
        status.last_result
    );
    restarted.shutdown();
    drop(state);
}

#[tokio::test]
async fn an_unreadable_ca_file_is_a_failure_with_a_clear_reason() {
    let api = TestApi::https(list_1_reply("e1")).await;
    let state = tempfile::tempdir().unwrap();
    let mut spec = cloudflare_spec(&api, HOUR);
    spec.ca_file = Some(state.path().join("missing-ca.pem"));
    let service = SetsService::start(specs(spec), state.path().to_path_buf(), POLL).await;
    let failed = wait_for(&service, "a failure", |s| {
        source_of(s, "cloudflare").failures == 1
    })
    .await;
    let status = source_of(&failed, "cloudflare");
    let expected = format!(
        "error: cannot read ca_file {}/missing-ca.pem: ",
        state.path().display()
    );
    assert!(
        status.last_result.starts_with(&expected),
        "{}",
        status.last_result
    );
    assert_eq!((status.from.as_str(), status.entries), ("embedded", 22));
    assert!(
        api.if_none_match_seen().is_empty(),
        "no request without trust roots"
    );
    service.shutdown();
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_a_failure() {
    let api = TestApi::https(list_1_reply("e1")).await;
    let other = TestApi::https(list_1_reply("e1")).await;
    let state = tempfile::tempdir().unwrap();
    let mut spec = cloudflare_spec(&api, HOUR);
    spec.ca_file = Some(other.ca_file.clone());
    let service = SetsService::start(specs(spec), state.path().to_path_buf(), POLL).await;
    let failed = wait_for(&service, "a failure", |s| {
        source_of(s, "cloudflare").failures == 1
    })
    .await;
    let status = source_of(&failed, "cloudflare");
    assert!(
        status.last_result.contains("certificate"),
        "{}",
        status.last_result
    );
    assert_eq!(status.from, "embedded");
    service.shutdown();
}

#[tokio::test]
async fn a_whole_request_timeout_is_a_failure() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let state = tempfile::tempdir().unwrap();
    let spec = CloudflareSpec {
        url: format!("http://{addr}/client/v4/ips"),
        refresh: HOUR,
        timeout: Duration::from_millis(200),
        ca_file: None,
    };
    let service = SetsService::start(specs(spec), state.path().to_path_buf(), POLL).await;
    let failed = wait_for(&service, "a failure", |s| {
        source_of(s, "cloudflare").failures == 1
    })
    .await;
    assert_eq!(
        source_of(&failed, "cloudflare").last_result,
        "error: no complete answer within 200ms"
    );
    service.shutdown();
    silent.abort();
}

#[tokio::test]
async fn an_oversized_answer_is_a_failure() {
    let api = TestApi::https(Reply::raw(200, &" ".repeat(2 << 20))).await;
    let state = tempfile::tempdir().unwrap();
    let service = SetsService::start(
        specs(cloudflare_spec(&api, HOUR)),
        state.path().to_path_buf(),
        POLL,
    )
    .await;
    let failed = wait_for(&service, "a failure", |s| {
        source_of(s, "cloudflare").failures == 1
    })
    .await;
    let status = source_of(&failed, "cloudflare");
    assert!(
        status
            .last_result
            .starts_with("error: reading the answer: length limit exceeded"),
        "{}",
        status.last_result
    );
    service.shutdown();
}

#[tokio::test]
async fn the_jsons_etag_is_used_when_there_is_no_etag_header() {
    let (v4, v6) = list_1();
    let api = TestApi::https(Reply::json_only(&v4, &v6, "38f79d05")).await;
    let state = tempfile::tempdir().unwrap();
    let service = SetsService::start(
        specs(cloudflare_spec(&api, HOUR)),
        state.path().to_path_buf(),
        POLL,
    )
    .await;
    let fetched = wait_for(&service, "the first fetch", |s| {
        source_of(s, "cloudflare").successes == 1
    })
    .await;
    assert_eq!(
        source_of(&fetched, "cloudflare").etag.as_deref(),
        Some("\"38f79d05\"")
    );
    service.refresh_now();
    wait_for(&service, "the second fetch", |s| {
        source_of(s, "cloudflare").successes == 2
    })
    .await;
    assert_eq!(
        api.if_none_match_seen(),
        [None, Some("\"38f79d05\"".to_string())]
    );
    service.shutdown();
}

#[tokio::test]
async fn refreshes_on_its_interval_and_retries_after_a_failure() {
    let api = TestApi::plain_http(list_1_reply("e1")).await;
    let state = tempfile::tempdir().unwrap();
    let spec = CloudflareSpec {
        ca_file: None,
        ..cloudflare_spec(&api, Duration::from_millis(200))
    };
    let service = SetsService::start(specs(spec), state.path().to_path_buf(), POLL).await;
    wait_for(&service, "the first fetch over plain HTTP", |s| {
        prefixes_of(s, "cloudflare") == list_1_nets()
    })
    .await;

    // No refresh_now from here on: only the timers fetch.
    let (mut v4, v6) = list_1();
    v4.push("198.51.100.0/24");
    api.reply_with(Reply::list(&v4, &v6, "e2"));
    wait_for(&service, "the list changed on the server", |s| {
        source_of(s, "cloudflare").etag.as_deref() == Some("\"e2\"")
    })
    .await;

    api.reply_with(Reply::raw(500, ""));
    let retried = wait_for(&service, "a retry after a failure", |s| {
        source_of(s, "cloudflare").failures >= 2
    })
    .await;
    assert_eq!(
        prefixes_of(&retried, "cloudflare"),
        nets(&[v4, v6].concat())
    );
    service.shutdown();
}

#[tokio::test]
async fn a_reload_with_the_same_spec_does_not_refetch_and_a_changed_one_does() {
    let fixture = Fixture::with_list_1().await;
    let spec = cloudflare_spec(&fixture.api, HOUR);
    let mut sets = specs(spec.clone());
    sets.push(set(
        "nodes",
        0.5,
        vec![SourceSpec::Inline(nets(&["10.0.0.1/32"]))],
    ));
    fixture.service.reconfigure(sets).await;
    let reloaded = fixture.service.snapshot();
    assert_eq!(reloaded.contents()["nodes"], nets(&["10.0.0.1/32"]));
    fixture.assert_list_1_in_force(&reloaded);
    // Give a refetch, if one had been started, the time to land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fixture.api.if_none_match_seen().len(), 1, "no refetch");
    assert_eq!(
        source_of(&fixture.service.snapshot(), "cloudflare").successes,
        1
    );

    // A changed timeout is a new source: it starts from the persisted list
    // and asks the API at once, conditionally.
    let changed = CloudflareSpec {
        timeout: Duration::from_secs(7),
        ..spec
    };
    fixture.service.reconfigure(specs(changed)).await;
    let snapshot = fixture.service.snapshot();
    assert_eq!(
        snapshot.sets.keys().collect::<Vec<_>>(),
        ["cloudflare"],
        "nodes removed"
    );
    assert_eq!(source_of(&snapshot, "cloudflare").from, "last-known-good");
    let confirmed = wait_for(&fixture.service, "the conditional refetch", |s| {
        source_of(s, "cloudflare").last_result == "not modified"
    })
    .await;
    fixture.assert_list_1_in_force(&confirmed);
    assert_eq!(
        fixture.api.if_none_match_seen(),
        [None, Some("\"e1\"".to_string())]
    );
    fixture.service.shutdown();
}
