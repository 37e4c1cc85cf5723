//! The service as the daemon sees it: several sets, their union, the
//! snapshot helpers, publishing, and reconfiguration.
use super::*;

#[tokio::test]
async fn a_set_is_the_union_of_its_sources_and_loaded_only_when_all_are() {
    let dir = tempfile::tempdir().unwrap();
    let admins = dir.path().join("admins.txt");
    write_atomically(&admins, "10.0.0.1\n192.0.2.0/24\n");
    let missing = dir.path().join("missing.txt");
    let specs = vec![
        set(
            "admins",
            0.5,
            vec![
                SourceSpec::Inline(nets(&["10.0.0.1/32", "10.9.9.9/24"])),
                SourceSpec::File(admins.clone()),
            ],
        ),
        set(
            "partial",
            0.5,
            vec![
                SourceSpec::Inline(nets(&["10.0.0.2/32"])),
                SourceSpec::File(missing.clone()),
            ],
        ),
    ];
    let service = SetsService::start(specs, dir.path().join("state"), POLL).await;
    let snapshot = service.snapshot();

    let admins_set = &snapshot.sets["admins"];
    assert_eq!(
        admins_set.prefixes,
        nets(&["10.0.0.1/32", "10.9.9.0/24", "192.0.2.0/24"]),
        "sorted, deduplicated, host bits cleared"
    );
    assert_eq!(
        (admins_set.status.size, admins_set.status.loaded),
        (3, true)
    );
    let inline = &admins_set.status.sources[0];
    assert_eq!(
        (
            inline.kind.as_str(),
            inline.origin.as_str(),
            inline.from.as_str()
        ),
        ("inline", "config", "config")
    );
    assert_eq!((inline.entries, inline.last_result.as_str()), (2, "ok"));
    assert_eq!(admins_set.status.sources[1].entries, 2);

    assert!(!snapshot.sets["partial"].status.loaded);
    assert!(!snapshot.all_loaded());
    assert_eq!(snapshot.contents().keys().collect::<Vec<_>>(), ["admins"]);
    let statuses = snapshot.statuses();
    assert_eq!(
        statuses
            .iter()
            .map(|s| (s.name.as_str(), s.loaded))
            .collect::<Vec<_>>(),
        [("admins", true), ("partial", false)]
    );
    service.shutdown();
}

#[tokio::test]
async fn a_reload_keeps_unchanged_sources_loads_new_ones_and_stops_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let admins = dir.path().join("admins.txt");
    let old = dir.path().join("old.txt");
    write_atomically(&admins, "10.0.0.1\n");
    write_atomically(&old, "10.5.0.1\n");
    let admins_set = set("admins", 0.5, vec![SourceSpec::File(admins.clone())]);
    let specs = vec![
        admins_set.clone(),
        set(
            "nodes",
            0.5,
            vec![SourceSpec::Inline(nets(&["10.1.0.1/32"]))],
        ),
        set("old", 0.5, vec![SourceSpec::File(old.clone())]),
    ];
    let service = SetsService::start(specs, dir.path().join("state"), POLL).await;
    let before = service.snapshot();

    let mut updates = service.subscribe();
    updates.borrow_and_update();
    service
        .reconfigure(vec![
            admins_set,
            set(
                "nodes",
                0.5,
                vec![SourceSpec::Inline(nets(&["10.1.0.2/32"]))],
            ),
            set(
                "extra",
                0.5,
                vec![SourceSpec::Inline(nets(&["10.2.0.0/16"]))],
            ),
        ])
        .await;
    assert!(updates.has_changed().unwrap(), "a reload publishes");
    let after = service.snapshot();
    assert_eq!(
        after.sets.keys().collect::<Vec<_>>(),
        ["admins", "extra", "nodes"]
    );
    assert_eq!(
        source_of(&after, "admins"),
        source_of(&before, "admins"),
        "the unchanged file source kept its state"
    );
    assert_eq!(after.contents()["nodes"], nets(&["10.1.0.2/32"]));
    assert_eq!(after.contents()["extra"], nets(&["10.2.0.0/16"]));

    // The kept source still polls; the removed one does not publish.
    write_atomically(&old, "10.5.0.2\n");
    write_atomically(&admins, "10.0.0.1\n10.0.0.2\n");
    let edited = wait_for(&service, "the edit of the kept file", |s| {
        prefixes_of(s, "admins") == nets(&["10.0.0.1/32", "10.0.0.2/32"])
    })
    .await;
    assert!(!edited.sets.contains_key("old"));
    service.shutdown();
}

#[tokio::test]
async fn nothing_is_published_when_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let admins = dir.path().join("admins.txt");
    write_atomically(&admins, "10.0.0.1\n");
    let specs = vec![set("admins", 0.5, vec![SourceSpec::File(admins)])];
    let service = SetsService::start(specs.clone(), dir.path().join("state"), POLL).await;
    let mut updates = service.subscribe();
    updates.borrow_and_update();
    service.reconfigure(specs).await;
    tokio::time::sleep(POLL * 4).await;
    assert!(!updates.has_changed().unwrap(), "{:#?}", service.snapshot());
    service.shutdown();
}

#[tokio::test]
async fn a_set_named_twice_is_its_last_definition() {
    let dir = tempfile::tempdir().unwrap();
    let inline = |cidr: &str| SourceSpec::Inline(nets(&[cidr]));
    let specs = vec![
        set("nodes", 0.5, vec![inline("10.0.0.1/32")]),
        set(
            "nodes",
            0.5,
            vec![inline("10.0.0.2/32"), inline("10.0.0.2/32")],
        ),
    ];
    let service = SetsService::start(specs.clone(), dir.path().to_path_buf(), POLL).await;
    assert_eq!(
        service.snapshot().contents()["nodes"],
        nets(&["10.0.0.2/32"])
    );
    service.reconfigure(specs).await;
    let snapshot = service.snapshot();
    assert_eq!(snapshot.contents()["nodes"], nets(&["10.0.0.2/32"]));
    assert_eq!(snapshot.sets["nodes"].status.sources.len(), 2);
    service.shutdown();
}
