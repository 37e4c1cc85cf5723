//! Who is knocking: the real XDP program, run through `BPF_PROG_TEST_RUN`,
//! counts each drop under its source's /24 or /48 and the reason in its
//! per-CPU table, and nothing it passes; the table stays within its bound
//! under more prefixes than it holds, keeps the newest, and keeps the sources
//! that keep sending through a flood of one-off ones; an upgrade from the
//! build before the table unpins the retired LRU map; and `xdpgate top
//! --json`, reading the table through the pins, ranks the sources by packets
//! and by rate over its interval.
//! Needs root; the pin directory is removed on drop, also when an assertion
//! fails.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use ipnet::IpNet;
use serde_json::Value;
use xdpgate::{
    filter::{Filter, PinLayout, Sources},
    policy::{compile, Binding, CompiledPolicy, PolicySpec, PortRange},
};
use xdpgate_common::{Counter, Reason, SOURCE_ENTRIES};
use xdpgate_tests::{have_bpf_privileges, Flags, Harness, Packet, XDP_DROP, XDP_PASS};

const PORT: u16 = 443;
const UDP_PORT: u16 = 8472;

/// `members` may reach TCP 443 and UDP 8472; `abusers` are denied everywhere.
fn policy() -> CompiledPolicy {
    let nets = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect();
    let mut spec = PolicySpec::default();
    spec.sets.insert(
        "members".into(),
        nets(&["198.51.100.0/24", "2001:db8:1::/48"]),
    );
    spec.sets
        .insert("abusers".into(), nets(&["192.0.2.128/25"]));
    spec.allow.push(Binding {
        tcp: vec![PortRange::single(PORT)],
        udp: vec![PortRange::single(UDP_PORT)],
        from: vec!["members".into()],
    });
    spec.deny.push("abusers".into());
    compile(&spec).expect("the test policy compiles")
}

/// Runs `frame` through the program and returns its action.
fn send(filter: &mut Filter, frame: &[u8]) -> u32 {
    use aya::programs::{TestRun, TestRunOptions};
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    filter
        .program()
        .test_run(opts)
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

/// A frame, how many times it is sent, the action expected, and the
/// (prefix, reason) it is counted under when dropped.
type Case = (Vec<u8>, u64, u32, Option<(&'static str, Reason)>);

fn key(net: &str, reason: Reason) -> (IpNet, Reason) {
    (net.parse().unwrap(), reason)
}

#[test]
fn drops_are_counted_under_their_source_prefix_and_reason_and_passes_are_not() {
    let test = "drops_are_counted_under_their_source_prefix_and_reason_and_passes_are_not";
    if !have_bpf_privileges(test) {
        return;
    }
    let mut harness = Harness::with_policy(&policy());
    let filter = &mut harness.filter;
    let syn = |src: &str| Packet::tcp(src, PORT, Flags::Syn).build();
    // (frame, times, expected action, where it is counted if dropped)
    let cases: Vec<Case> = vec![
        // Two addresses of one /24 are one source; another /24 is another.
        (
            syn("203.0.113.5"),
            3,
            XDP_DROP,
            Some(("203.0.113.0/24", Reason::DropNotMemberTcp)),
        ),
        (
            syn("203.0.113.77"),
            2,
            XDP_DROP,
            Some(("203.0.113.0/24", Reason::DropNotMemberTcp)),
        ),
        (
            syn("203.0.114.9"),
            4,
            XDP_DROP,
            Some(("203.0.114.0/24", Reason::DropNotMemberTcp)),
        ),
        // The same /24 dropped for another reason is another row.
        (
            Packet::udp("203.0.114.9", UDP_PORT).build(),
            1,
            XDP_DROP,
            Some(("203.0.114.0/24", Reason::DropNotMemberUdp)),
        ),
        (
            syn("192.0.2.200"),
            2,
            XDP_DROP,
            Some(("192.0.2.0/24", Reason::DropDeny)),
        ),
        // IPv6 by /48; IPv4-mapped IPv6 as the IPv4 it is.
        (
            syn("2001:db8:7:1::9"),
            2,
            XDP_DROP,
            Some(("2001:db8:7::/48", Reason::DropNotMemberTcp)),
        ),
        (
            syn("2001:db8:7:ffff::1"),
            1,
            XDP_DROP,
            Some(("2001:db8:7::/48", Reason::DropNotMemberTcp)),
        ),
        (
            syn("::ffff:203.0.113.8"),
            1,
            XDP_DROP,
            Some(("203.0.113.0/24", Reason::DropNotMemberTcp)),
        ),
        // A tiny first fragment from an outsider: evasive, with a source.
        (
            Packet::tcp("203.0.115.1", PORT, Flags::Syn)
                .ipv4_fragment(0, true)
                .l4_truncated(4)
                .build(),
            1,
            XDP_DROP,
            Some(("203.0.115.0/24", Reason::DropEvasive)),
        ),
        // Deep tags hide the source: dropped, but nobody to count it under.
        (
            Packet::tcp("203.0.116.1", PORT, Flags::Syn)
                .priority_tags(9)
                .build(),
            1,
            XDP_DROP,
            None,
        ),
        // Passes of every kind touch nothing.
        (syn("198.51.100.3"), 5, XDP_PASS, None),
        (syn("2001:db8:1::3"), 2, XDP_PASS, None),
        (
            Packet::tcp("203.0.117.1", PORT, Flags::Ack).build(),
            3,
            XDP_PASS,
            None,
        ),
        (
            Packet::tcp("203.0.118.1", 22, Flags::Syn).build(),
            3,
            XDP_PASS,
            None,
        ),
    ];
    let mut expected: BTreeMap<(IpNet, Reason), Counter> = BTreeMap::new();
    for (frame, times, action, counted) in &cases {
        for _ in 0..*times {
            assert_eq!(send(filter, frame), *action, "{counted:?}");
        }
        if let Some((net, reason)) = counted {
            let cell = expected.entry(key(net, *reason)).or_default();
            cell.packets += times;
            cell.bytes += times * frame.len() as u64;
        }
    }
    let sources = filter.sources().expect("read the per-source map");
    assert_eq!(
        sources.counts, expected,
        "every drop under its prefix and reason, with its bytes; no pass anywhere"
    );
}

/// Runs the rest of the test on the CPU it is on now: `BPF_PROG_TEST_RUN`
/// runs the program on the caller's CPU, and the source table is per CPU.
fn stay_on_one_cpu() {
    // SAFETY: sched_getcpu has no preconditions; the cpu_set_t is zeroed and
    // gets one bit, and the affinity is this thread's only.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pin the test thread to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn v4_source(i: usize) -> String {
    format!("10.{}.{}.1", i / 256 % 256, i % 256)
}

fn v4_prefix(i: usize) -> (IpNet, Reason) {
    let net = format!("10.{}.{}.0/24", i / 256 % 256, i % 256);
    key(&net, Reason::DropNotMemberTcp)
}

#[test]
fn the_table_stays_within_its_bound_and_keeps_the_latest_sources() {
    let test = "the_table_stays_within_its_bound_and_keeps_the_latest_sources";
    if !have_bpf_privileges(test) {
        return;
    }
    stay_on_one_cpu();
    let mut harness = Harness::with_policy(&policy());
    let filter = &mut harness.filter;
    let distinct = SOURCE_ENTRIES as usize * 2;
    for i in 0..distinct {
        let frame = Packet::tcp(&v4_source(i), PORT, Flags::Syn).build();
        assert_eq!(send(filter, &frame), XDP_DROP);
    }
    let sources = filter.sources().expect("read the per-source table");
    assert!(
        sources.tracked() <= SOURCE_ENTRIES as usize,
        "{} pairs tracked on one CPU, bound {SOURCE_ENTRIES}",
        sources.tracked()
    );
    assert!(
        sources.tracked() > SOURCE_ENTRIES as usize * 3 / 4,
        "the table keeps most of its bound: {} tracked",
        sources.tracked()
    );
    // The newest sources are all there, each with its one packet.
    let newest = (distinct - 512..distinct)
        .filter(|&i| sources.counts.get(&v4_prefix(i)).map(|c| c.packets) != Some(1))
        .count();
    assert_eq!(newest, 0, "{newest} of the 512 newest sources are missing");
    // The oldest made room.
    let oldest = (0..4096)
        .filter(|&i| sources.counts.contains_key(&v4_prefix(i)))
        .count();
    assert!(
        oldest < 4096 / 16,
        "{oldest} of the 4,096 oldest sources are still tracked"
    );
}

/// What `xdpgate top` is for: during a flood from ever-new random sources,
/// the sources that keep sending stay counted from their first packet.
#[test]
fn sources_that_keep_dropping_stay_counted_through_a_random_source_flood() {
    let test = "sources_that_keep_dropping_stay_counted_through_a_random_source_flood";
    if !have_bpf_privileges(test) {
        return;
    }
    stay_on_one_cpu();
    let mut harness = Harness::with_policy(&policy());
    let filter = &mut harness.filter;
    let heavy = [
        Packet::tcp("203.0.113.5", PORT, Flags::Syn).build(),
        Packet::udp("2001:db8:9::1", UDP_PORT).build(),
    ];
    let flood = SOURCE_ENTRIES as usize * 3;
    let mut sent = 0;
    for i in 0..flood {
        // A source seen once, never again.
        let source = format!("10.{}.{}.9", i / 256, i % 256);
        let frame = Packet::tcp(&source, PORT, Flags::Syn).build();
        assert_eq!(send(filter, &frame), XDP_DROP);
        if i % 64 == 0 {
            for frame in &heavy {
                assert_eq!(send(filter, frame), XDP_DROP);
            }
            sent += 1;
        }
    }
    let sources = filter.sources().expect("read the per-source table");
    for (net, reason) in [
        ("203.0.113.0/24", Reason::DropNotMemberTcp),
        ("2001:db8:9::/48", Reason::DropNotMemberUdp),
    ] {
        assert_eq!(
            sources.counts.get(&key(net, reason)).map(|c| c.packets),
            Some(sent),
            "{net} kept its slot through {flood} one-off sources"
        );
    }
    let top = sources.top(None, xdpgate::filter::TopOrder::Packets, None, 2);
    assert_eq!(top.len(), 2);
    assert!(top.iter().all(|row| row.packets == sent), "{top:?}");
}

/// A pin directory with the program's maps in it (nothing attached); removed
/// on drop with whatever is under it.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = xdpgate::filter::detach_pinned(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ranked(snapshot: &Value) -> Vec<(String, String, u64)> {
    snapshot["sources"]
        .as_array()
        .expect("`sources` is a list")
        .iter()
        .map(|row| {
            (
                row["prefix"].as_str().expect("prefix").to_string(),
                row["reason"].as_str().expect("reason").to_string(),
                row["packets"].as_u64().expect("packets"),
            )
        })
        .collect()
}

#[test]
fn top_json_ranks_the_pinned_sources_by_packets_and_by_rate() {
    let test = "top_json_ranks_the_pinned_sources_by_packets_and_by_rate";
    if !have_bpf_privileges(test) {
        return;
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/xdpgate-test-top-{}",
        std::process::id()
    )));
    let mut filter = Filter::open_pinned(&PinLayout::new(&pins.0)).expect("open pins");
    filter.apply(&policy()).expect("apply");
    let heavy = Packet::tcp("203.0.113.5", PORT, Flags::Syn).build();
    let light = Packet::udp("2001:db8:9::1", UDP_PORT).build();
    for _ in 0..30 {
        assert_eq!(send(&mut filter, &heavy), XDP_DROP);
    }
    for _ in 0..10 {
        assert_eq!(send(&mut filter, &light), XDP_DROP);
    }

    // One snapshot by packets, limited to one row.
    let once = Command::new(env!("CARGO_BIN_EXE_xdpgate-under-test"))
        .args(["top", "--json", "--iterations", "1", "--interval", "0.2"])
        .args(["--sort", "packets", "--limit", "1", "--pin-dir"])
        .arg(&pins.0)
        .output()
        .expect("run xdpgate top");
    assert!(
        once.status.success(),
        "xdpgate top: {}",
        String::from_utf8_lossy(&once.stderr)
    );
    let text = String::from_utf8(once.stdout).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one snapshot: {text}");
    let snapshot: Value = serde_json::from_str(lines[0]).expect("a JSON object per line");
    assert_eq!(
        ranked(&snapshot),
        [(
            "203.0.113.0/24".to_string(),
            "not_member_tcp".to_string(),
            30
        )]
    );
    assert_eq!(snapshot["tracked"], 2);
    assert_eq!(snapshot["capacity"], SOURCE_ENTRIES);
    assert_eq!(snapshot["sources"][0]["rank"], 1);
    assert_eq!(snapshot["sources"][0]["family"], "ipv4");
    assert_eq!(snapshot["sources"][0]["bytes"], 30 * heavy.len() as u64);

    // By rate: the light source becomes the heaviest while it is the one
    // sending, though it has fewer packets in all.
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_xdpgate-under-test"))
            .args(["top", "--json", "--iterations", "2", "--interval", "1"])
            .args(["--sort", "rate", "--pin-dir"])
            .arg(&pins.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn xdpgate top"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().expect("stdout")).lines();
    let first: Value =
        serde_json::from_str(&lines.next().expect("a first refresh").expect("read")).unwrap();
    // Nothing was sent in the first interval: no rate, so packets break the tie.
    assert_eq!(
        ranked(&first),
        [
            (
                "203.0.113.0/24".to_string(),
                "not_member_tcp".to_string(),
                30
            ),
            (
                "2001:db8:9::/48".to_string(),
                "not_member_udp".to_string(),
                10
            )
        ]
    );
    assert_eq!(first["sources"][0]["packets_per_second"], 0.0);
    for _ in 0..20 {
        assert_eq!(send(&mut filter, &light), XDP_DROP);
    }
    let second: Value =
        serde_json::from_str(&lines.next().expect("a second refresh").expect("read")).unwrap();
    assert_eq!(
        ranked(&second),
        [
            (
                "2001:db8:9::/48".to_string(),
                "not_member_udp".to_string(),
                30
            ),
            (
                "203.0.113.0/24".to_string(),
                "not_member_tcp".to_string(),
                30
            )
        ],
        "{second}"
    );
    let rate = second["sources"][0]["packets_per_second"].as_f64().unwrap();
    let interval = second["interval_seconds"].as_f64().unwrap();
    assert!(
        (rate * interval - 20.0).abs() < 0.01,
        "20 packets over the interval: {rate}/s over {interval}s"
    );
    assert!(
        child.0.wait().expect("wait").success(),
        "top stops by itself after --iterations"
    );
    // The program's own view agrees with what top printed.
    let sources: Sources = filter.sources().unwrap();
    assert_eq!(sources.tracked(), 2);
}

#[test]
fn pins_from_before_the_source_map_are_adopted_and_the_map_is_added() {
    let test = "pins_from_before_the_source_map_are_adopted_and_the_map_is_added";
    if !have_bpf_privileges(test) {
        return;
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/xdpgate-test-upgrade-{}",
        std::process::id()
    )));
    let layout = PinLayout::new(&pins.0);
    let drops = |filter: &Filter| {
        filter
            .counters()
            .unwrap()
            .get(Reason::DropNotMemberTcp, xdpgate_common::Family::Ipv4)
            .packets
    };
    let syn = Packet::tcp("203.0.113.5", PORT, Flags::Syn).build();
    {
        let mut old = Filter::open_pinned(&layout).expect("open pins");
        old.apply(&policy()).expect("apply");
        assert_eq!(send(&mut old, &syn), XDP_DROP);
        assert_eq!(drops(&old), 1);
    }
    // What a daemon from before the map leaves: every map but this one.
    std::fs::remove_file(layout.map_path(xdpgate_common::maps::SOURCES))
        .expect("unpin the source map");
    let pinned = xdpgate::filter::PinnedFilter::open(&pins.0).expect("older pins open");
    assert_eq!(
        pinned
            .counters()
            .unwrap()
            .get(Reason::DropNotMemberTcp, xdpgate_common::Family::Ipv4)
            .packets,
        1,
        "the rest of the view still works"
    );
    let missing = pinned.sources().expect_err("no source map pinned");
    assert!(
        missing.to_string().contains(xdpgate_common::maps::SOURCES),
        "the error names the map: {missing}"
    );
    // And the per-source LRU map the build before the table pinned, which
    // this build does not use.
    let retired = layout.maps_dir().join("XDPGATE_SOURCES");
    let created = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&retired)
        .args(["type", "lru_percpu_hash", "key", "8", "value", "16"])
        .args(["entries", "16384", "name", "XDPGATE_SOURCES"])
        .output()
        .expect("run bpftool");
    assert!(
        created.status.success(),
        "bpftool map create: {}",
        String::from_utf8_lossy(&created.stderr)
    );

    let mut upgraded = Filter::open_pinned(&layout).expect("reopen pins");
    assert_eq!(
        upgraded.adoption(),
        &xdpgate::filter::Adoption::Reused,
        "adding a map is no reason to replace the others"
    );
    assert_eq!(drops(&upgraded), 1, "counters carry on");
    assert!(layout.map_path(xdpgate_common::maps::SOURCES).exists());
    assert!(!retired.exists(), "the retired map is unpinned");
    assert_eq!(send(&mut upgraded, &syn), XDP_DROP);
    let sources = upgraded.sources().expect("the new map is there");
    assert_eq!(
        sources
            .counts
            .get(&key("203.0.113.0/24", Reason::DropNotMemberTcp))
            .map(|c| c.packets),
        Some(1)
    );
}
