//! File sources: change detection, validation of every new version, and the
//! last-known-good list across restarts.
use std::{path::PathBuf, time::Instant};

use super::*;

const TEN: &str = "10.0.0.1\n10.0.0.2\n10.0.0.3\n10.0.0.4\n10.0.0.5\n\
                   10.0.0.6\n10.0.0.7\n10.0.0.8\n10.0.0.9\n10.0.0.10\n";

struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new(text: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("admins.txt");
        write_atomically(&path, text);
        Fixture { dir, path }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn specs(&self, max_shrink: f64) -> Vec<SetSpec> {
        vec![set(
            "admins",
            max_shrink,
            vec![SourceSpec::File(self.path.clone())],
        )]
    }

    async fn start(&self) -> SetsService {
        SetsService::start(self.specs(0.5), self.state_dir(), POLL).await
    }
}

#[tokio::test]
async fn a_file_is_loaded_at_start_and_an_edit_is_picked_up_by_polling() {
    let fixture = Fixture::new("10.0.0.1\n10.0.0.2\n");
    let service = fixture.start().await;

    let first = service.snapshot();
    assert_eq!(
        prefixes_of(&first, "admins"),
        nets(&["10.0.0.1/32", "10.0.0.2/32"])
    );
    assert!(first.all_loaded());
    let status = source_of(&first, "admins");
    assert_eq!(
        (
            status.kind.as_str(),
            status.origin.as_str(),
            status.from.as_str()
        ),
        ("file", fixture.path.to_str().unwrap(), "file")
    );
    assert_eq!((status.entries, status.last_result.as_str()), (2, "ok"));
    assert_eq!(
        (status.successes, status.failures, status.refusals),
        (1, 0, 0)
    );
    assert!(status.obtained_at > 0 && status.last_attempt_at > 0 && status.last_success_at > 0);
    assert_eq!(status.etag, None);

    // Same length, same inode: only the modification time tells.
    let edited_at = Instant::now();
    std::fs::write(&fixture.path, "10.0.0.1\n10.0.0.3\n").unwrap();
    let edited = wait_for(&service, "the edited list", |s| {
        prefixes_of(s, "admins") == nets(&["10.0.0.1/32", "10.0.0.3/32"])
    })
    .await;
    let noticed_after = edited_at.elapsed();
    assert!(
        noticed_after < POLL * 40,
        "an edit took {noticed_after:?} to notice with a {POLL:?} poll"
    );
    let status = source_of(&edited, "admins");
    assert_eq!(
        (
            status.from.as_str(),
            status.entries,
            status.last_result.as_str()
        ),
        ("file", 2, "ok")
    );
    assert!(status.successes >= 2, "{status:?}");
    assert!(lkg_path(
        &fixture.state_dir(),
        "admins",
        "file",
        fixture.path.to_str().unwrap()
    )
    .exists());
    service.shutdown();
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_detected() {
    // The layout the kubelet writes: admins.txt -> ..data/admins.txt,
    // ..data -> ..<timestamp>; an update swaps ..data only.
    let dir = tempfile::tempdir().unwrap();
    let version_1 = dir.path().join("..2026_01_01_00_00_00.1");
    let version_2 = dir.path().join("..2026_01_01_00_05_00.2");
    std::fs::create_dir(&version_1).unwrap();
    std::fs::create_dir(&version_2).unwrap();
    std::fs::write(version_1.join("admins.txt"), "192.0.2.1\n").unwrap();
    std::fs::write(version_2.join("admins.txt"), "192.0.2.1\n192.0.2.2\n").unwrap();
    std::os::unix::fs::symlink(&version_1, dir.path().join("..data")).unwrap();
    let path = dir.path().join("admins.txt");
    std::os::unix::fs::symlink("..data/admins.txt", &path).unwrap();

    let specs = vec![set("admins", 0.5, vec![SourceSpec::File(path.clone())])];
    let service = SetsService::start(specs, dir.path().join("state"), POLL).await;
    assert_eq!(
        prefixes_of(&service.snapshot(), "admins"),
        nets(&["192.0.2.1/32"])
    );

    std::os::unix::fs::symlink(&version_2, dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    let swapped = wait_for(&service, "the list of the new ConfigMap version", |s| {
        prefixes_of(s, "admins") == nets(&["192.0.2.1/32", "192.0.2.2/32"])
    })
    .await;
    let status = source_of(&swapped, "admins");
    assert_eq!((status.successes, status.last_result.as_str()), (2, "ok"));
    service.shutdown();
}

#[tokio::test]
async fn a_bad_edit_keeps_the_list_and_names_the_line() {
    let fixture = Fixture::new("10.0.0.1\n10.0.0.2\n");
    let service = fixture.start().await;

    write_atomically(&fixture.path, "10.0.0.1\n# the new one:\n10.0.0.300\n");
    let refused = wait_for(&service, "a failed re-read", |s| {
        source_of(s, "admins").failures == 1
    })
    .await;
    assert_eq!(
        prefixes_of(&refused, "admins"),
        nets(&["10.0.0.1/32", "10.0.0.2/32"])
    );
    assert!(refused.all_loaded());
    let status = source_of(&refused, "admins");
    assert_eq!(
        status.last_result,
        r#"error: line 3: "10.0.0.300" is not an IP address or CIDR"#
    );
    assert_eq!((status.from.as_str(), status.entries), ("file", 2));
    assert_eq!(
        (status.successes, status.failures, status.refusals),
        (1, 1, 0)
    );

    write_atomically(&fixture.path, "10.0.0.1\n10.0.0.30\n");
    let fixed = wait_for(&service, "the fixed list", |s| {
        source_of(s, "admins").successes == 2
    })
    .await;
    assert_eq!(
        prefixes_of(&fixed, "admins"),
        nets(&["10.0.0.1/32", "10.0.0.30/32"])
    );
    assert_eq!(source_of(&fixed, "admins").last_result, "ok");
    service.shutdown();
}

#[tokio::test]
async fn an_emptied_file_is_refused() {
    let fixture = Fixture::new("10.0.0.1\n10.0.0.2\n");
    let service = fixture.start().await;

    write_atomically(&fixture.path, "# everybody left\n\n");
    let refused = wait_for(&service, "a refusal", |s| {
        source_of(s, "admins").refusals == 1
    })
    .await;
    assert_eq!(
        prefixes_of(&refused, "admins"),
        nets(&["10.0.0.1/32", "10.0.0.2/32"])
    );
    let status = source_of(&refused, "admins");
    assert_eq!(status.last_result, "refused: empty list");
    assert_eq!(
        (status.entries, status.successes, status.failures),
        (2, 1, 0)
    );
    service.shutdown();
}

#[tokio::test]
async fn a_big_shrink_is_refused_until_max_shrink_allows_it() {
    let fixture = Fixture::new(TEN);
    let service = fixture.start().await;

    write_atomically(&fixture.path, "10.0.0.1\n10.0.0.2\n");
    let refused = wait_for(&service, "a refusal", |s| {
        source_of(s, "admins").refusals == 1
    })
    .await;
    assert_eq!(prefixes_of(&refused, "admins").len(), 10);
    let status = source_of(&refused, "admins");
    assert_eq!(
        status.last_result,
        "refused: would remove 80% of 10 entries (max_shrink 50%)"
    );
    assert_eq!(
        (status.entries, status.successes, status.failures),
        (10, 1, 0)
    );

    // The operator means it: a reload with max_shrink 1.0 keeps the source
    // (same spec) and lets the next read through.
    service.reconfigure(fixture.specs(1.0)).await;
    let kept = service.snapshot();
    assert_eq!(
        source_of(&kept, "admins").refusals,
        1,
        "the source kept its state"
    );
    service.refresh_now();
    let accepted = wait_for(&service, "the shrunk list", |s| {
        source_of(s, "admins").successes == 2
    })
    .await;
    assert_eq!(
        prefixes_of(&accepted, "admins"),
        nets(&["10.0.0.1/32", "10.0.0.2/32"])
    );
    service.shutdown();
}

#[tokio::test]
async fn a_removed_file_is_one_failure_and_keeps_the_list() {
    let fixture = Fixture::new("10.0.0.1\n");
    let service = fixture.start().await;

    std::fs::remove_file(&fixture.path).unwrap();
    let failed = wait_for(&service, "a failure", |s| {
        source_of(s, "admins").failures == 1
    })
    .await;
    assert_eq!(prefixes_of(&failed, "admins"), nets(&["10.0.0.1/32"]));
    assert!(failed.all_loaded());
    let status = source_of(&failed, "admins");
    assert!(
        status.last_result.starts_with("error: cannot read: ")
            && status.last_result.contains("No such file"),
        "{}",
        status.last_result
    );

    // Still missing is not a new attempt each poll.
    tokio::time::sleep(POLL * 5).await;
    assert_eq!(source_of(&service.snapshot(), "admins").failures, 1);

    write_atomically(&fixture.path, "10.0.0.1\n10.0.0.2\n");
    let back = wait_for(&service, "the recreated file", |s| {
        source_of(s, "admins").successes == 2
    })
    .await;
    assert_eq!(
        prefixes_of(&back, "admins"),
        nets(&["10.0.0.1/32", "10.0.0.2/32"])
    );
    service.shutdown();
}

#[tokio::test]
async fn the_last_known_good_list_survives_a_restart_when_the_file_is_unreadable() {
    let fixture = Fixture::new("10.0.0.1\n10.0.0.2\n");
    let first = fixture.start().await;
    let obtained_at = source_of(&first.snapshot(), "admins").obtained_at;
    first.shutdown();
    drop(first);

    std::fs::remove_file(&fixture.path).unwrap();
    let restarted = fixture.start().await;
    let snapshot = restarted.snapshot();
    assert_eq!(
        prefixes_of(&snapshot, "admins"),
        nets(&["10.0.0.1/32", "10.0.0.2/32"])
    );
    assert!(snapshot.all_loaded());
    assert_eq!(snapshot.contents()["admins"].len(), 2);
    let status = source_of(&snapshot, "admins");
    assert_eq!(
        (status.from.as_str(), status.entries, status.obtained_at),
        ("last-known-good", 2, obtained_at)
    );
    assert!(
        status.last_result.starts_with("error: cannot read: "),
        "{}",
        status.last_result
    );
    assert_eq!((status.successes, status.failures), (0, 1));
    restarted.shutdown();

    // An invalid file is no better than a missing one.
    write_atomically(&fixture.path, "not an address\n");
    let again = fixture.start().await;
    let status = source_of(&again.snapshot(), "admins").clone();
    assert_eq!(
        (status.from.as_str(), status.entries),
        ("last-known-good", 2)
    );
    assert_eq!(
        status.last_result,
        r#"error: line 1: "not an address" is not an IP address or CIDR"#
    );
    again.shutdown();
}

#[tokio::test]
async fn a_missing_file_without_last_known_good_is_not_loaded_until_it_appears() {
    let fixture = Fixture::new("10.0.0.1\n");
    std::fs::remove_file(&fixture.path).unwrap();
    let specs = vec![
        set("admins", 0.5, vec![SourceSpec::File(fixture.path.clone())]),
        set(
            "nodes",
            0.5,
            vec![SourceSpec::Inline(nets(&["10.1.0.1/32"]))],
        ),
    ];
    let service = SetsService::start(specs, fixture.state_dir(), POLL).await;
    let snapshot = service.snapshot();
    assert!(!snapshot.all_loaded());
    assert_eq!(snapshot.contents().keys().collect::<Vec<_>>(), ["nodes"]);
    let status = &snapshot.sets["admins"].status;
    assert!(!status.loaded);
    assert_eq!(
        (status.sources[0].entries, status.sources[0].failures),
        (0, 1)
    );
    assert_eq!(status.sources[0].from, "");

    write_atomically(&fixture.path, "10.0.0.9\n");
    let loaded = wait_for(&service, "the set loaded", |s| s.all_loaded()).await;
    assert_eq!(loaded.contents()["admins"], nets(&["10.0.0.9/32"]));
    service.shutdown();
}

#[tokio::test]
async fn a_corrupt_last_known_good_file_is_ignored() {
    let fixture = Fixture::new("10.0.0.1\n");
    let origin = fixture.path.to_str().unwrap().to_string();
    let lkg = lkg_path(&fixture.state_dir(), "admins", "file", &origin);
    std::fs::create_dir_all(lkg.parent().unwrap()).unwrap();
    std::fs::write(&lkg, b"{\"set\": \"admins\", \"prefixes\": [").unwrap();
    std::fs::remove_file(&fixture.path).unwrap();

    let service = fixture.start().await;
    let snapshot = service.snapshot();
    assert!(!snapshot.sets["admins"].status.loaded);
    assert_eq!(source_of(&snapshot, "admins").from, "");
    service.shutdown();

    // The next accepted list replaces the corrupt file.
    write_atomically(&fixture.path, "10.0.0.1\n");
    let service = fixture.start().await;
    service.shutdown();
    let text = std::fs::read_to_string(&lkg).unwrap();
    assert!(
        text.contains("10.0.0.1/32") && text.contains(&origin),
        "{text}"
    );
}

#[tokio::test]
async fn after_shutdown_edits_are_no_longer_picked_up() {
    let fixture = Fixture::new("10.0.0.1\n");
    let service = fixture.start().await;
    service.shutdown();
    write_atomically(&fixture.path, "10.0.0.2\n");
    service.refresh_now();
    tokio::time::sleep(POLL * 5).await;
    assert_eq!(
        prefixes_of(&service.snapshot(), "admins"),
        nets(&["10.0.0.1/32"])
    );
}
