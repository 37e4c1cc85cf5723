//! Config reloads through the running daemon: an edited config file takes
//! effect (a new port binding is enforced), a bad one is refused, logged and
//! counted while the running policy stays, and SIGHUP reloads on demand.
//! Needs root.
use std::time::Duration;

use xdpgate_tests::lab::{lab_ready, wait_for, Daemon, Lab, Metrics, Workdir, TCP_PORT};

const SECOND_PORT: u16 = 8444;

fn config(lab: &Lab, ports: &str, from: &str) -> String {
    format!(
        "filter:
  interfaces: [{}]
  sets:
    members: {{ cidrs: [198.51.100.0/29, \"2001:db8:1::/64\"] }}
  allow:
    - {{ tcp: [{ports}], from: [{from}] }}
",
        lab.server_if
    )
}

fn reloads(lab: &Lab, result: &str) -> f64 {
    Metrics::scrape(&lab.server_ns)
        .get("xdpgate_config_reloads_total", &[("result", result)])
        .unwrap_or(-1.0)
}

#[test]
fn config_edits_reload_bad_ones_are_refused_and_sighup_reloads() {
    let test = "config_edits_reload_bad_ones_are_refused_and_sighup_reloads";
    if !lab_ready(test, &[]) {
        return;
    }
    let lab = Lab::new("rl");
    let work = Workdir::new("reload", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let path = work.write(
        "config.yaml",
        &config(&lab, &TCP_PORT.to_string(), "members"),
    );
    let daemon = Daemon::start_ready(&lab, &work, &path, "daemon");

    assert_eq!(work.check("203.0.113.1", "tcp", TCP_PORT).1, "drop");
    assert_eq!(
        work.check("203.0.113.1", "tcp", SECOND_PORT).1,
        "pass",
        "8444 is not protected yet"
    );

    // An edit that also protects 8444 is in force without a restart.
    std::fs::write(
        &path,
        config(&lab, &format!("{TCP_PORT}, {SECOND_PORT}"), "members"),
    )
    .unwrap();
    wait_for(
        "the edited config to protect 8444",
        Duration::from_secs(3),
        || work.check("203.0.113.1", "tcp", SECOND_PORT).1,
        |action| action == "drop",
    );
    assert_eq!(work.check("198.51.100.2", "tcp", SECOND_PORT).1, "pass");
    assert_eq!(reloads(&lab, "ok"), 1.0);

    // A config naming a set that does not exist is refused; the policy in
    // force stays, and the refusal is visible in the log, status and metrics.
    let generation = work.status()["kernel"]["generation"].as_u64();
    std::fs::write(&path, config(&lab, &TCP_PORT.to_string(), "membres")).unwrap();
    wait_for(
        "the bad config to be refused",
        Duration::from_secs(3),
        || reloads(&lab, "failed"),
        |failed| *failed == 1.0,
    );
    let status = work.status();
    assert_eq!(
        status["kernel"]["generation"].as_u64(),
        generation,
        "policy unchanged"
    );
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("membres") && problems.contains("did you mean `members`"),
        "status names the refused config's error: {problems}"
    );
    assert_eq!(
        work.check("203.0.113.1", "tcp", SECOND_PORT).1,
        "drop",
        "the previous config still runs"
    );
    assert!(
        daemon.log().contains("config reload refused"),
        "the refusal is logged:\n{}",
        daemon.log()
    );

    // Fixing the file is picked up; SIGHUP reloads it again on demand.
    std::fs::write(&path, config(&lab, &TCP_PORT.to_string(), "members")).unwrap();
    wait_for(
        "the fixed config to reload",
        Duration::from_secs(3),
        || reloads(&lab, "ok"),
        |ok| *ok == 2.0,
    );
    assert_eq!(work.check("203.0.113.1", "tcp", SECOND_PORT).1, "pass");
    // SAFETY: signalling the daemon process this test started.
    unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGHUP) };
    wait_for(
        "SIGHUP to reload the config",
        Duration::from_secs(3),
        || reloads(&lab, "ok"),
        |ok| *ok == 3.0,
    );
    assert!(
        work.status()["problems"]
            .as_array()
            .is_some_and(|p| p.is_empty()),
        "healthy again once a good config is in force"
    );
}

/// An edit that lands while the daemon starts (after it read the config,
/// before it is ready) is in force once it is ready: the file is stamped
/// before it is read, so the edit counts as a change.
#[test]
fn an_edit_made_while_the_daemon_starts_is_not_lost() {
    let test = "an_edit_made_while_the_daemon_starts_is_not_lost";
    if !lab_ready(test, &[]) {
        return;
    }
    let lab = Lab::new("rs");
    let work = Workdir::new("reload-start", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let path = work.write(
        "config.yaml",
        &config(&lab, &TCP_PORT.to_string(), "members"),
    );
    let mut daemon = Daemon::start(&lab, &work, &path, "daemon");
    // The first policy is applied from the config as first read; the edit
    // goes in right then, while the filter is attached and the rest starts.
    // Watched closely: the window before the daemon is ready is short.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("policy applied") {
        assert!(std::time::Instant::now() < deadline, "no policy applied");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::fs::write(
        &path,
        config(&lab, &format!("{TCP_PORT}, {SECOND_PORT}"), "members"),
    )
    .unwrap();
    daemon.wait_ready(Duration::from_secs(10));
    wait_for(
        "the edit made during start-up to protect 8444",
        Duration::from_secs(3),
        || work.check("203.0.113.1", "tcp", SECOND_PORT).1,
        |action| action == "drop",
    );
    assert_eq!(work.check("198.51.100.2", "tcp", SECOND_PORT).1, "pass");
}
