//! A rolling update simulated on one machine: the daemon runs in a container
//! built from the binary under test (as `deploy_image.rs` does), and is
//! replaced as the kubelet replaces a pod with `maxSurge: 0`: the old
//! container is stopped first (`podman stop`, SIGTERM), then the new one
//! starts from a second tag of the image. Members keep connecting and a
//! flood of non-member SYNs keeps arriving throughout. No member connection
//! fails (the filter stays attached while no daemon runs), no non-member
//! gets through, the new daemon adopts the pinned link (one XDP program on
//! the veth at the end) and the counters carry on. Containers, images, pins
//! and namespaces are removed on drop, also when an assertion fails. Needs
//! root, buildah, podman and runc.
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use xdpgate_tests::lab::{
    connect_from, container_tools_ready, enter_netns, flood, lab_ready, members, outsiders,
    wait_for, xdp_program_ids, Container, Flood, KernelCounters, Lab, TcpServer, TestImage,
    Workdir, FLOOD_THREADS, TCP_PORT,
};

const BIN: &str = env!("CARGO_BIN_EXE_xdpgate-under-test");
/// A member's connection must complete within this: a dropped member SYN
/// (retransmitted after 1 s) fails it.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between one member's connections.
const MEMBER_PAUSE: Duration = Duration::from_millis(5);
const MEMBER_THREADS: usize = 4;
/// How long traffic keeps running after the new container is ready.
const AFTER_UPDATE: Duration = Duration::from_secs(1);
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What the member connect loops saw.
#[derive(Default)]
struct MemberTraffic {
    connected: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Connections from `sources` in turn, each within [`MEMBER_TIMEOUT`], until
/// `stop`.
fn member_loop(client_ns: &str, sources: &[IpAddr], stop: &AtomicBool, seen: &MemberTraffic) {
    enter_netns(client_ns);
    let mut next = sources.iter().cycle();
    while !stop.load(Ordering::Relaxed) {
        let source = *next.next().expect("a member source");
        let started = Instant::now();
        match connect_from(source, TCP_PORT, MEMBER_TIMEOUT) {
            Ok(_) => {
                seen.connected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => seen
                .failures
                .lock()
                .unwrap()
                .push(format!("{source} after {:.0?}: {e}", started.elapsed())),
        }
        std::thread::sleep(MEMBER_PAUSE);
    }
}

/// What the non-member flood saw.
fn not_member_tcp(counters: &KernelCounters) -> u64 {
    counters.get("not_member_tcp", "ipv4") + counters.get("not_member_tcp", "ipv6")
}

/// What happened during the update, from the test thread.
struct Update {
    before_stop: KernelCounters,
    after_update: KernelCounters,
    programs_before: Vec<u64>,
    programs_after: Vec<u64>,
    old_exit_code: i32,
    /// From `podman stop` of the old container to the new one's /readyz.
    without_daemon: Duration,
}

#[test]
fn a_rolling_update_of_the_container_keeps_members_in_and_outsiders_out() {
    let test = "a_rolling_update_of_the_container_keeps_members_in_and_outsiders_out";
    if !lab_ready(test, &[]) || !container_tools_ready(test) {
        return;
    }
    // Declared so that they drop in reverse: containers, listener, images,
    // pins (detach), namespaces.
    let lab = Lab::new("ru");
    let work = Workdir::new("rolling", BIN);
    let old_image = TestImage::build(BIN);
    let new_image = old_image.retag("next");
    let tcp = TcpServer::start(&lab.server_ns, TCP_PORT);
    let config = work.write(
        "config.yaml",
        &format!(
            "filter:
  interfaces: [{}]
  sets:
    members: {{ cidrs: [198.51.100.0/29, \"2001:db8:1::/64\"] }}
  allow:
    - {{ tcp: [{TCP_PORT}], from: [members] }}
",
            lab.server_if
        ),
    );
    let (members, outsiders) = (members(), outsiders());

    let old = Container::start(&lab, &work, &old_image, &config, "old");
    old.wait_ready(&lab.server_ns, READY_TIMEOUT);
    let mut new: Option<Container> = None;

    let stop = AtomicBool::new(false);
    let member_traffic = MemberTraffic::default();
    let seen = Flood::default();
    let update = std::thread::scope(|scope| {
        let ns = lab.client_ns.as_str();
        let mut threads = Vec::new();
        for i in 0..MEMBER_THREADS {
            // Each thread its own rotation of v4 and v6 members.
            let mut sources = members.clone();
            sources.rotate_left(i * 3);
            let (stop, seen) = (&stop, &member_traffic);
            threads.push(scope.spawn(move || member_loop(ns, &sources, stop, seen)));
        }
        for i in 0..FLOOD_THREADS {
            let mut sources = outsiders.clone();
            sources.rotate_left(i * 3);
            let (stop, seen) = (&stop, &seen);
            threads.push(scope.spawn(move || flood(ns, &sources, stop, seen)));
        }
        // Both kinds of traffic are under way through the old container's
        // filter. Stops the traffic even if a step below panics.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop_guard = StopOnDrop(&stop);
        wait_for(
            "members to connect and the flood's SYNs to be dropped",
            Duration::from_secs(10),
            || {
                (
                    member_traffic.connected.load(Ordering::Relaxed),
                    not_member_tcp(&work.stats()),
                )
            },
            |(connected, dropped)| *connected >= 20 && *dropped >= 100,
        );
        let programs_before = xdp_program_ids(&lab.server_ns, &lab.server_if);
        let before_stop = work.stats();

        // The old pod goes first (maxSurge 0), then the new one starts.
        let stopping = Instant::now();
        let old_exit_code = old.stop();
        let next = new.insert(Container::start(&lab, &work, &new_image, &config, "new"));
        next.wait_ready(&lab.server_ns, READY_TIMEOUT);
        let without_daemon = stopping.elapsed();

        std::thread::sleep(AFTER_UPDATE);
        let after_update = work.stats();
        let programs_after = xdp_program_ids(&lab.server_ns, &lab.server_if);
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().expect("traffic thread");
        }
        Update {
            before_stop,
            after_update,
            programs_before,
            programs_after,
            old_exit_code,
            without_daemon,
        }
    });

    let connected = member_traffic.connected.load(Ordering::Relaxed);
    let unanswered = seen.unanswered.load(Ordering::Relaxed);
    let local_errors = seen.local_errors.lock().unwrap().clone();
    println!(
        "rolling update: {connected} member connections, {unanswered} non-member attempts \
         ({} local errors), {:.2?} from podman stop to the new container's /readyz; \
         non-member drops before the stop {}, after the update {}",
        local_errors.len(),
        update.without_daemon,
        not_member_tcp(&update.before_stop),
        not_member_tcp(&update.after_update),
    );

    let failures = member_traffic.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} member connections failed during the update ({connected} made): {failures:?}",
        failures.len()
    );
    seen.assert_kept_out(&tcp, &members, "the update");
    assert!(
        local_errors.is_empty(),
        "every flood attempt sent its SYN: {local_errors:?}"
    );
    assert!(unanswered > 0, "the flood ran");
    assert_eq!(
        update.old_exit_code, 0,
        "the old daemon's exit code after podman stop"
    );

    // One program on the veth: the new daemon's, swapped into the pinned link.
    assert_eq!(
        update.programs_before.len(),
        1,
        "one XDP program before the update: {:?}",
        update.programs_before
    );
    assert_eq!(
        update.programs_after.len(),
        1,
        "exactly one XDP program after the update: {:?}",
        update.programs_after
    );
    assert_ne!(
        update.programs_after, update.programs_before,
        "the new daemon swapped its own program in"
    );
    assert_eq!(
        xdp_program_ids(&lab.server_ns, &lab.server_if),
        update.programs_after,
        "still exactly that program at the end"
    );

    // The new daemon says it adopted the interface (its pid is in the
    // container's namespace, so `running` means nothing from here).
    let status = work.status();
    let interfaces = &status["daemon"]["status"]["interfaces"];
    assert_eq!(
        interfaces,
        &serde_json::json!([{ "name": lab.server_if, "mode": "driver", "how": "adopted" }]),
        "the new daemon adopted the pinned link: {status}"
    );
    assert_eq!(
        status["links"][0]["program_id"].as_u64(),
        update.programs_after.first().copied(),
        "{status}"
    );

    // The counters carried on through the update.
    for (cell, before) in &update.before_stop.cells {
        let after = update.after_update.cells.get(cell).copied().unwrap_or(0);
        assert!(
            after >= *before,
            "counter {cell:?} went from {before} before the update to {after} after it"
        );
    }
    assert!(
        not_member_tcp(&update.after_update) > not_member_tcp(&update.before_stop),
        "the flood kept being counted"
    );
    assert!(
        not_member_tcp(&work.stats()) >= unanswered,
        "every unanswered flood attempt is a dropped SYN"
    );
    drop(new);
    drop(old);
}
