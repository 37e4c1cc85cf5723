//! Peers nobody here wrote, against the filtered address: an `nmap -sS`
//! scan from a non-member reports the protected ports filtered while a
//! member sees them open, and an `hping3 --flood --rand-source` SYN flood is
//! dropped (the counters show it) while a member's connections still
//! succeed during the flood. Needs root, nmap and hping3.
use std::{
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use xdpgate_tests::lab::{
    lab_ready, tcp_connects, Daemon, Lab, TcpServer, Tool, Workdir, SERVER_V4, SERVER_V6,
};

/// The protected ports, and one the config leaves open to everyone.
const PROTECTED: [u16; 2] = [8443, 8444];
const UNPROTECTED: u16 = 8080;
/// How long the flood runs.
const FLOOD_FOR: Duration = Duration::from_secs(3);

/// The two tests load the machine in ways that would disturb each other
/// (a flood makes a scan's timing noisy), so they take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The lab with listeners on every port and the daemon protecting
/// `PROTECTED` for 198.51.100.0/29 and 2001:db8:1::/64.
struct Scene {
    _listeners: Vec<TcpServer>,
    _daemon: Daemon,
    work: Workdir,
    lab: Lab,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let lab = Lab::new(tag);
        let work = Workdir::new(
            &format!("peers-{tag}"),
            env!("CARGO_BIN_EXE_xdpgate-under-test"),
        );
        let listeners = PROTECTED
            .iter()
            .chain([&UNPROTECTED])
            .map(|&port| TcpServer::start(&lab.server_ns, port))
            .collect();
        let ports = PROTECTED.map(|p| p.to_string()).join(", ");
        let config = work.write(
            "config.yaml",
            &format!(
                "filter:
  interfaces: [{}]
  sets:
    members: {{ cidrs: [198.51.100.0/29, \"2001:db8:1::/64\"] }}
  allow:
    - {{ tcp: [{ports}], from: [members] }}
",
                lab.server_if
            ),
        );
        let daemon = Daemon::start_ready(&lab, &work, &config, "daemon");
        Scene {
            _listeners: listeners,
            _daemon: daemon,
            work,
            lab,
        }
    }
}

/// `port -> state` from nmap's XML output.
fn port_states(xml: &str) -> Vec<(u16, String)> {
    xml.split("<port ")
        .skip(1)
        .filter_map(|port| {
            let attr = |name: &str| {
                let start = port.find(&format!("{name}=\""))? + name.len() + 2;
                let end = port[start..].find('"')? + start;
                Some(port[start..end].to_string())
            };
            Some((attr("portid")?.parse().ok()?, attr("state")?))
        })
        .collect()
}

/// Runs an nmap SYN scan of the server from `source` and returns each
/// port's state.
fn syn_scan(scene: &Scene, source: IpAddr) -> Vec<(u16, String)> {
    let ports = PROTECTED
        .iter()
        .chain([&UNPROTECTED])
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let target = match source {
        IpAddr::V4(_) => SERVER_V4.to_string(),
        IpAddr::V6(_) => SERVER_V6.to_string(),
    };
    let mut args = vec!["-sS", "-Pn", "-n", "--max-retries", "1", "-T4"];
    if source.is_ipv6() {
        args.push("-6");
    }
    let source = source.to_string();
    args.extend(["-e", &scene.lab.client_if, "-S", &source]);
    args.extend(["-p", &ports, &target, "-oX", "-"]);
    let out = Tool::spawn(&scene.lab.client_ns, "nmap", &args).wait(Duration::from_secs(60));
    assert!(out.status.success(), "nmap {args:?}: {out:?}");
    let mut states = port_states(&out.stdout);
    states.sort();
    assert_eq!(states.len(), 3, "nmap reported every port: {}", out.stdout);
    states
}

#[test]
fn an_nmap_syn_scan_sees_protected_ports_filtered_from_outside_and_open_from_a_member() {
    let test = "an_nmap_syn_scan_sees_protected_ports_filtered_from_outside_and_open_from_a_member";
    if !lab_ready(test, &["nmap"]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scene = Scene::new("nm");
    let state = |state: &str| {
        let mut expected: Vec<(u16, String)> =
            PROTECTED.iter().map(|&p| (p, state.to_string())).collect();
        expected.push((UNPROTECTED, "open".to_string()));
        expected.sort();
        expected
    };
    for source in ["203.0.113.5", "2001:db8:2::5"] {
        assert_eq!(
            syn_scan(&scene, source.parse().unwrap()),
            state("filtered"),
            "nmap -sS from the non-member {source}"
        );
    }
    for source in ["198.51.100.5", "2001:db8:1::5"] {
        assert_eq!(
            syn_scan(&scene, source.parse().unwrap()),
            state("open"),
            "nmap -sS from the member {source}"
        );
    }
    let stats = scene.work.stats();
    for family in ["ipv4", "ipv6"] {
        assert!(
            stats.get("not_member_tcp", family) >= PROTECTED.len() as u64,
            "the non-member's probes of the protected ports were dropped ({family}): {stats:#?}"
        );
    }
}

#[test]
fn an_hping3_syn_flood_from_random_sources_is_dropped_while_a_member_still_connects() {
    let test = "an_hping3_syn_flood_from_random_sources_is_dropped_while_a_member_still_connects";
    if !lab_ready(test, &["hping3"]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scene = Scene::new("hp");
    let (lab, work) = (&scene.lab, &scene.work);
    let before = work.stats();
    let port = PROTECTED[0].to_string();
    let target = SERVER_V4.to_string();
    let flood = Tool::spawn(
        &lab.client_ns,
        "hping3",
        &[
            "--flood",
            "--rand-source",
            "-S",
            "-p",
            &port,
            "-I",
            &lab.client_if,
            &target,
        ],
    );

    // Members connect, one after another, for as long as the flood runs.
    let started = Instant::now();
    let mut outcomes = Vec::new();
    while started.elapsed() < FLOOD_FOR {
        for member in ["198.51.100.2", "2001:db8:1::2"] {
            let member: IpAddr = member.parse().unwrap();
            // Long enough for the SYN's retransmission, should a full veth
            // queue (not the filter) lose the first one.
            let connected =
                tcp_connects(&lab.client_ns, member, PROTECTED[0], Duration::from_secs(3));
            outcomes.push((member, started.elapsed(), connected));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = work.stats();
    let hping = flood.interrupt(Duration::from_secs(10));
    let after = work.stats();

    let dropped = during.get("not_member_tcp", "ipv4") - before.get("not_member_tcp", "ipv4");
    let passed = during.get("member", "ipv4") - before.get("member", "ipv4");
    println!(
        "hping3 flood: {dropped} SYNs dropped while it ran, {passed} member SYNs passed; \
         {} member connections; hping3 said: {}",
        outcomes.len(),
        hping
            .stdout
            .trim()
            .lines()
            .chain(hping.stderr.trim().lines())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let failed: Vec<_> = outcomes.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failed.is_empty(),
        "members connect during the flood; failed: {failed:?}"
    );
    assert!(
        outcomes.len() >= 4,
        "member connections were tried during the flood: {outcomes:?}"
    );
    assert!(
        dropped >= 10_000,
        "the flood's random-source SYNs are dropped by the filter: only {dropped} counted"
    );
    assert!(
        after.get("not_member_tcp", "ipv4") >= during.get("not_member_tcp", "ipv4"),
        "counters only grow"
    );
    // The daemon rode it out.
    let status = work.status();
    assert_eq!(status["healthy"], true, "{status}");
}
