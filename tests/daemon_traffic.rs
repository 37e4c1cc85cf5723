//! The daemon filtering real traffic: a client namespace with 24 source
//! addresses, IPv4 and IPv6, half of them in the allowed set, makes real TCP
//! connections and sends real UDP datagrams to listeners behind the veth the
//! daemon filters. Members get through; non-members time out. The kernel
//! counters (`xdpgate stats`) and `/metrics` agree with each other and with
//! what happened, and `xdpgate check` says the same about single addresses.
//! Needs root.
use std::{net::IpAddr, time::Duration};

use xdpgate_tests::lab::{
    lab_ready, members, outsiders, tcp_outcomes, udp_outcomes, Daemon, KernelCounters, Lab,
    Metrics, TcpServer, UdpEcho, Workdir, TCP_PORT, UDP_PORT,
};

/// Long enough for a SYN and its answer on a veth many times over, short
/// enough that the non-members' timeouts do not drag.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Datagrams a source sends at most (stopping at the first echo).
const UDP_TRIES: u32 = 3;

fn config(lab: &Lab) -> String {
    format!(
        "filter:
  interfaces: [{}]
  sets:
    members: {{ cidrs: [198.51.100.0/29, \"2001:db8:1::/64\"] }}
  allow:
    - {{ tcp: [{TCP_PORT}], udp: [{UDP_PORT}], from: [members] }}
",
        lab.server_if
    )
}

fn family(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// Reads `stats --json`, then `/metrics`, then `stats --json` again, until
/// the two stats agree (nothing moved in between: a stray neighbour
/// solicitation can), and returns the stats and the metrics of that round.
fn quiet_counters(work: &Workdir, lab: &Lab) -> (KernelCounters, KernelCounters) {
    let mut last = None;
    for _ in 0..5 {
        let before = work.stats();
        let metrics = Metrics::scrape(&lab.server_ns).packets();
        let after = work.stats();
        if before == after {
            return (before, metrics);
        }
        last = Some((before, after));
    }
    panic!("the counters never held still across a /metrics scrape: {last:#?}");
}

#[test]
fn members_connect_and_non_members_time_out_and_the_counters_say_so() {
    let test = "members_connect_and_non_members_time_out_and_the_counters_say_so";
    if !lab_ready(test, &[]) {
        return;
    }
    let lab = Lab::new("tr");
    let work = Workdir::new("traffic", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let tcp = TcpServer::start(&lab.server_ns, TCP_PORT);
    let _udp = UdpEcho::start(&lab.server_ns, UDP_PORT);
    let (members, outsiders) = (members(), outsiders());
    let sources: Vec<IpAddr> = members.iter().chain(&outsiders).copied().collect();
    assert!(sources.len() >= 20);

    // Without the daemon every source gets through: the lab itself works,
    // so what is dropped later is dropped by the filter.
    let unfiltered = [outsiders[0], outsiders[outsiders.len() - 1]];
    for (source, connected) in tcp_outcomes(&lab.client_ns, &unfiltered, TCP_PORT, CONNECT_TIMEOUT)
    {
        assert!(connected, "{source} connects before the daemon runs");
    }
    for (source, _, echoed) in udp_outcomes(
        &lab.client_ns,
        &unfiltered,
        UDP_PORT,
        UDP_TRIES,
        CONNECT_TIMEOUT,
    ) {
        assert!(echoed, "{source} gets a UDP echo before the daemon runs");
    }

    let config = work.write("config.yaml", &config(&lab));
    let daemon = Daemon::start_ready(&lab, &work, &config, "daemon");
    let accepted_before = tcp.peers().len();

    // TCP from every source at once.
    let outcomes = tcp_outcomes(&lab.client_ns, &sources, TCP_PORT, CONNECT_TIMEOUT);
    let wrong: Vec<String> = outcomes
        .iter()
        .filter(|(source, connected)| *connected != members.contains(source))
        .map(|(source, connected)| {
            let what = if *connected { "connected" } else { "timed out" };
            format!("{source} {what}")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "members connect, non-members time out; wrong: {wrong:?}"
    );
    let accepted: Vec<IpAddr> = tcp.peers()[accepted_before..].to_vec();
    for member in &members {
        assert!(
            accepted.contains(member),
            "the listener accepted {member}: {accepted:?}"
        );
    }
    assert!(
        accepted.iter().all(|peer| members.contains(peer)),
        "the listener accepted only members: {accepted:?}"
    );

    // UDP from every source at once.
    let udp = udp_outcomes(
        &lab.client_ns,
        &sources,
        UDP_PORT,
        UDP_TRIES,
        CONNECT_TIMEOUT,
    );
    let wrong: Vec<String> = udp
        .iter()
        .filter(|(source, _, echoed)| *echoed != members.contains(source))
        .map(|(source, sent, echoed)| format!("{source}: {sent} sent, echoed {echoed}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "members get their UDP echo, non-members do not; wrong: {wrong:?}"
    );

    // No traffic from here on: the counters and /metrics must agree exactly.
    let (stats, metrics) = quiet_counters(&work, &lab);
    assert_eq!(
        stats, metrics,
        "`xdpgate stats --json` and /metrics report the same packet counters"
    );
    for fam in ["ipv4", "ipv6"] {
        let count = |list: &[IpAddr]| list.iter().filter(|a| family(a) == fam).count() as u64;
        let udp_sent = |member: bool| {
            udp.iter()
                .filter(|(s, _, _)| family(s) == fam && members.contains(s) == member)
                .map(|(_, sent, _)| u64::from(*sent))
                .sum::<u64>()
        };
        // Each non-member sent at least one SYN and one datagram, all dropped.
        let dropped_tcp = stats.get("not_member_tcp", fam);
        assert!(
            dropped_tcp >= count(&outsiders),
            "drop not_member_tcp {fam} = {dropped_tcp}, at least one SYN per non-member ({})",
            count(&outsiders)
        );
        let dropped_udp = stats.get("not_member_udp", fam);
        assert!(
            dropped_udp >= udp_sent(false),
            "drop not_member_udp {fam} = {dropped_udp}, every non-member datagram ({})",
            udp_sent(false)
        );
        // Each member connection is one SYN that passed, each datagram one more.
        let passed = stats.get("member", fam);
        let expected = count(&members) + udp_sent(true);
        assert!(
            passed >= expected,
            "pass member {fam} = {passed}, at least {expected} (one SYN per member connection \
             and every member datagram)"
        );
    }
    assert_eq!(
        stats.action("drop"),
        ["not_member_tcp", "not_member_udp"]
            .iter()
            .flat_map(|r| ["ipv4", "ipv6"].map(|f| stats.get(r, f)))
            .sum::<u64>(),
        "nothing but non-member TCP and UDP was dropped: {stats:#?}"
    );

    // `check` says the same about single addresses, with stable exit codes.
    let cases = [
        ("198.51.100.3", "tcp", TCP_PORT, 0, "pass"),
        ("2001:db8:1::3", "tcp", TCP_PORT, 0, "pass"),
        ("203.0.113.3", "tcp", TCP_PORT, 5, "drop"),
        ("2001:db8:2::3", "tcp", TCP_PORT, 5, "drop"),
        ("198.51.100.3", "udp", UDP_PORT, 0, "pass"),
        ("203.0.113.3", "udp", UDP_PORT, 5, "drop"),
        // An unprotected port passes from anyone.
        ("203.0.113.3", "tcp", 22, 0, "pass"),
    ];
    for (address, protocol, port, code, action) in cases {
        assert_eq!(
            work.check(address, protocol, port),
            (code, action.to_string()),
            "xdpgate check {address} --{protocol} {port}"
        );
    }
    drop(daemon);
}
