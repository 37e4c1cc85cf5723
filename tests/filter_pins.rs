//! The filter's life in bpffs, without a daemon: a second instance adopts the
//! pins (same maps, counters carry on, the new program swapped into the same
//! link), a pinned ABI mismatch is replaced deliberately without taking the
//! filter off the interface, the read-only view explains verdicts, and
//! `detach` removes everything. The namespace, veth and pin directory are
//! removed on drop, also when an assertion fails. Needs root.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
};

use aya::maps::{Array, Map, MapData};
use aya::programs::{TestRun, TestRunOptions};
use ipnet::IpNet;
use xdpgate::{
    filter::{
        pins::Transport, Adoption, AttachHow, Filter, PinLayout, PinnedFilter, XdpModeChoice,
    },
    policy::{compile, Binding, PolicySpec, PortRange},
};
use xdpgate_common::{maps, Control, Family, Reason};
use xdpgate_tests::{have_bpf_privileges, Flags, Packet};

/// A namespace with a veth pair in it, and a pin directory; all removed on drop.
struct Lab {
    netns: String,
    interface: String,
    pins: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let id = std::process::id() % 100_000;
        let lab = Lab {
            netns: format!("xg-{tag}-{id}"),
            interface: format!("xg{tag}{id}"),
            pins: PathBuf::from(format!("/sys/fs/bpf/xdpgate-test-{tag}-{id}")),
        };
        run("ip", &["netns", "add", &lab.netns]);
        let peer = format!("{}p", lab.interface);
        run(
            "ip",
            &[
                "-n",
                &lab.netns,
                "link",
                "add",
                &lab.interface,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
        );
        run(
            "ip",
            &["-n", &lab.netns, "link", "set", &lab.interface, "up"],
        );
        run("ip", &["-n", &lab.netns, "link", "set", &peer, "up"]);
        lab
    }

    fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = &self.netns;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let handle = File::open(format!("/var/run/netns/{ns}")).expect("open netns");
                    // SAFETY: a valid namespace fd; only this thread changes namespace.
                    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("namespace thread")
        })
    }

    /// The XDP program ids `ip -d link show` reports on the interface.
    fn xdp_program_ids(&self) -> Vec<u32> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.netns,
                "-d",
                "link",
                "show",
                "dev",
                &self.interface,
            ])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(3)
            .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
            .filter_map(|w| w[2].parse().ok())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = xdpgate::filter::detach_pinned(&self.pins);
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?} failed");
}

fn members_on(port: u16, cidrs: &[&str]) -> PolicySpec {
    let mut spec = PolicySpec::default();
    spec.sets.insert(
        "members".into(),
        cidrs.iter().map(|c| c.parse::<IpNet>().unwrap()).collect(),
    );
    spec.allow.push(Binding {
        tcp: vec![PortRange::single(port)],
        udp: vec![],
        from: vec!["members".into()],
    });
    spec
}

/// One SYN from `source` to `port` through the loaded program.
fn send_syn(filter: &mut Filter, source: &str, port: u16) -> u32 {
    let frame = Packet::tcp(source, port, Flags::Syn).build();
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    filter
        .program()
        .test_run(opts)
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[test]
fn a_restarted_filter_adopts_its_pins_and_a_mismatched_abi_is_replaced_in_place() {
    let test = "a_restarted_filter_adopts_its_pins_and_a_mismatched_abi_is_replaced_in_place";
    if !have_bpf_privileges(test) {
        return;
    }
    let lab = Lab::new("pin");
    let layout = PinLayout::new(&lab.pins);
    let policy = compile(&members_on(8443, &["198.51.100.0/29"])).unwrap();

    // First instance: fresh maps, a new link.
    lab.in_netns(|| {
        let mut filter = Filter::open_pinned(&layout).expect("open pins");
        assert_eq!(filter.adoption(), &Adoption::Fresh);
        assert_eq!(filter.apply(&policy).expect("apply"), 1);
        let how = filter
            .attach_pinned(&lab.interface, XdpModeChoice::Auto)
            .expect("attach")
            .how;
        assert_eq!(how, AttachHow::Attached);
        assert_eq!(send_syn(&mut filter, "203.0.113.9", 8443), XDP_DROP);
        // The process "exits": the filter stays.
    });
    let pinned = PinnedFilter::open(&lab.pins).expect("pins readable without a process");
    let links = pinned.links();
    assert_eq!(links.len(), 1, "one pinned link: {links:?}");
    assert!(links[0].live, "the link outlives the process that made it");
    let old_program = links[0].program_id;
    assert_eq!(lab.xdp_program_ids(), vec![old_program]);
    let drops_before = pinned
        .counters()
        .unwrap()
        .get(Reason::DropNotMemberTcp, Family::Ipv4)
        .packets;
    assert_eq!(drops_before, 1);

    // Second instance: same maps, so the counters and generation carry on;
    // the new program goes into the same link.
    lab.in_netns(|| {
        let mut filter = Filter::open_pinned(&layout).expect("reopen pins");
        assert_eq!(filter.adoption(), &Adoption::Reused);
        assert_eq!(
            filter
                .counters()
                .unwrap()
                .get(Reason::DropNotMemberTcp, Family::Ipv4)
                .packets,
            1,
            "counters carry on"
        );
        assert_eq!(
            filter.apply(&policy).expect("apply"),
            2,
            "generation carries on"
        );
        let how = filter
            .attach_pinned(&lab.interface, XdpModeChoice::Auto)
            .expect("adopt")
            .how;
        assert_eq!(how, AttachHow::Adopted);
    });
    let links = pinned.links();
    assert_eq!(links.len(), 1);
    let new_program = links[0].program_id;
    assert_ne!(new_program, old_program, "the new program was swapped in");
    assert_eq!(
        lab.xdp_program_ids(),
        vec![new_program],
        "exactly one XDP program on the interface"
    );

    // The read-only view explains the live policy.
    let member = pinned
        .explain(
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 3)),
            Some(Transport::Tcp(8443)),
        )
        .unwrap();
    assert_eq!(member.port.unwrap().2, Reason::PassMember);
    assert_eq!(member.matched.unwrap().0.to_string(), "198.51.100.0/29");
    let outsider = pinned
        .explain(
            "::ffff:203.0.113.9".parse().unwrap(),
            Some(Transport::Tcp(8443)),
        )
        .unwrap();
    assert_eq!(
        outsider.source.to_string(),
        "203.0.113.9",
        "v4-mapped is judged as v4"
    );
    assert_eq!(outsider.port.unwrap().2, Reason::DropNotMemberTcp);
    let unbound = pinned
        .explain("203.0.113.9".parse().unwrap(), Some(Transport::Tcp(22)))
        .unwrap();
    assert_eq!(unbound.port.unwrap().2, Reason::PassUnboundPort);

    // A build with another ABI pinned these maps: simulate it in the control
    // word. The next instance must neither crash nor detach: it replaces the
    // maps, applies its policy, and swaps into the same link.
    {
        let data = MapData::from_pin(layout.map_path(maps::CONTROL)).unwrap();
        let mut control: Array<MapData, Control> =
            Array::try_from(Map::from_map_data(data).unwrap()).unwrap();
        let mut word = control.get(&0, 0).unwrap();
        word.abi_version = 99;
        control.set(0, word, 0).unwrap();
    }
    drop(pinned);
    lab.in_netns(|| {
        let mut filter = Filter::open_pinned(&layout).expect("open with a mismatched ABI");
        match filter.adoption() {
            Adoption::Replaced { reason } => {
                assert!(
                    reason.contains("ABI version 99"),
                    "reason names the ABI: {reason}"
                )
            }
            other => panic!("expected the maps to be replaced, got {other:?}"),
        }
        assert!(
            !filter.control().unwrap().armed(),
            "fresh maps start unarmed"
        );
        filter.apply(&policy).expect("apply");
        let how = filter
            .attach_pinned(&lab.interface, XdpModeChoice::Auto)
            .expect("swap into the link")
            .how;
        assert_eq!(how, AttachHow::Adopted, "the link was kept: no window");
        assert_eq!(send_syn(&mut filter, "203.0.113.9", 8443), XDP_DROP);
        assert_eq!(send_syn(&mut filter, "198.51.100.2", 8443), XDP_PASS);
    });
    let pinned = PinnedFilter::open(&lab.pins).unwrap();
    assert_eq!(
        pinned.control().unwrap().abi_version,
        xdpgate_common::ABI_VERSION
    );
    assert_eq!(
        pinned
            .counters()
            .unwrap()
            .get(Reason::DropNotMemberTcp, Family::Ipv4)
            .packets,
        1,
        "fresh maps count from zero"
    );
    assert_eq!(lab.xdp_program_ids().len(), 1, "still one XDP program");

    // detach takes it off the interface and removes every pin.
    let detached = xdpgate::filter::detach_pinned(&lab.pins).expect("detach");
    assert_eq!(detached.interfaces, vec![lab.interface.clone()]);
    assert!(
        lab.xdp_program_ids().is_empty(),
        "no XDP program after detach"
    );
    assert!(!lab.pins.exists(), "pins removed");
}
