//! The verdict-matrix lab the `verdict_*` tests share: the policy the
//! matrix runs (four sets, three rules, a deny set), addresses in and out of
//! each set, and cases (a frame with the verdict and the one counter it must
//! move) run through the real XDP object, failing once with every case that
//! went wrong.
use std::collections::BTreeMap;

use xdpgate::policy::{compile, Binding, CompiledPolicy, PolicySpec, PortRange, Tunnels};
use xdpgate_common::{Family, Reason};

use crate::{Flags, Harness, Packet, XDP_DROP, XDP_PASS};

pub const CLOUDFLARE_V4: &str = "198.41.128.7";
pub const CLOUDFLARE_V6: &str = "2606:4700::7";
pub const OUTSIDER_V4: &str = "203.0.114.9";
pub const OUTSIDER_V6: &str = "2001:db8:ffff::9";
pub const ADMIN_V4: &str = "203.0.113.9";
pub const NODE_V4: &str = "10.0.0.2";
pub const NODE_V6: &str = "fd00::2";
pub const DENIED_V4: &str = "198.51.100.7";
pub const DENIED_V6: &str = "2001:db8:bad::7";

pub fn spec(strict: bool) -> PolicySpec {
    let nets = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect();
    let mut sets = BTreeMap::new();
    sets.insert(
        "cloudflare".into(),
        nets(&["198.41.128.0/17", "2606:4700::/32"]),
    );
    sets.insert("admins".into(), nets(&["203.0.113.0/24"]));
    sets.insert("nodes".into(), nets(&["10.0.0.0/24", "fd00::/64"]));
    sets.insert(
        "abusers".into(),
        nets(&["198.51.100.0/24", "2001:db8:bad::/48"]),
    );
    let ports = |p: &[u16]| p.iter().map(|p| PortRange::single(*p)).collect();
    PolicySpec {
        sets,
        allow: vec![
            Binding {
                tcp: ports(&[80, 443]),
                udp: vec![],
                from: vec!["cloudflare".into()],
            },
            Binding {
                tcp: ports(&[22]),
                udp: vec![],
                from: vec!["admins".into()],
            },
            Binding {
                tcp: ports(&[6443]),
                udp: ports(&[8472]),
                from: vec!["nodes".into()],
            },
        ],
        deny: vec!["abusers".into()],
        strict,
        tunnels: Tunnels::Pass,
    }
}

pub fn policy(strict: bool) -> CompiledPolicy {
    compile(&spec(strict)).expect("matrix policy compiles")
}

pub struct Case {
    name: String,
    frame: Vec<u8>,
    action: u32,
    reason: Reason,
    family: Family,
}

pub fn case(name: &str, frame: Vec<u8>, reason: Reason, family: Family) -> Case {
    Case {
        name: name.to_string(),
        frame,
        action: if reason.is_drop() { XDP_DROP } else { XDP_PASS },
        reason,
        family,
    }
}

/// Runs every case and fails once, listing every case that went wrong.
pub fn run_cases(harness: &mut Harness, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let total = cases.len();
    for case in cases {
        let outcome = harness.run(&case.frame);
        let want = (
            case.action,
            (case.reason, case.family),
            case.frame.len() as u64,
        );
        let got = (outcome.action, outcome.counted, outcome.bytes);
        if want != got {
            failures.push(format!("  {}: want {want:?}, got {got:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases wrong (action, (reason, family), bytes):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

pub fn syn(src: &str, port: u16) -> Packet {
    Packet::tcp(src, port, Flags::Syn)
}
