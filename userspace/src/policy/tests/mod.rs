//! Unit and property tests of the policy compiler. Nothing here needs
//! privileges: the compiled maps are checked through [`compiled_allows`] and
//! [`CompiledPolicy::lookup`], which compute what the kernel computes.
//!
//! Split by what they check: the covering-prefix closure (`closure`), the
//! errors and the culprit each names (`errors`), bits, ports and options
//! (`bindings`), tunnels (`tunnels`), and the property tests against a
//! naive model (`properties`). This module holds the builders they share.
use super::{
    strategies::{probes_for, source, valid_spec, UNBOUND_PORT},
    *,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap_or_else(|e| panic!("test prefix {s}: {e}"))
}

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap_or_else(|e| panic!("test prefix {s}: {e}"))
}

fn v6(s: &str) -> Ipv6Net {
    s.parse().unwrap_or_else(|e| panic!("test prefix {s}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("test address {s}: {e}"))
}

fn ports(list: &[u16]) -> Vec<PortRange> {
    list.iter().map(|p| PortRange::single(*p)).collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn tcp(list: &[u16], from: &[&str]) -> Binding {
    Binding {
        tcp: ports(list),
        udp: vec![],
        from: names(from),
    }
}

fn udp(list: &[u16], from: &[&str]) -> Binding {
    Binding {
        tcp: vec![],
        udp: ports(list),
        from: names(from),
    }
}

fn spec(sets: &[(&str, &[&str])], allow: Vec<Binding>, deny: &[&str]) -> PolicySpec {
    PolicySpec {
        sets: sets
            .iter()
            .map(|(name, nets)| (name.to_string(), nets.iter().map(|s| net(s)).collect()))
            .collect(),
        allow,
        deny: names(deny),
        strict: false,
        tunnels: Tunnels::Pass,
    }
}

/// The bit of `set` in `policy`; panics if the set got none.
fn bit(policy: &CompiledPolicy, set: &str) -> SetMask {
    let index = policy
        .set_names
        .iter()
        .position(|n| n == set)
        .unwrap_or_else(|| panic!("set `{set}` has no bit in {:?}", policy.set_names));
    1 << index
}

fn compiled(spec: &PolicySpec) -> CompiledPolicy {
    compile(spec).unwrap_or_else(|e| panic!("policy should compile: {e}"))
}

fn compile_err(spec: &PolicySpec) -> PolicyError {
    match compile(spec) {
        Ok(policy) => panic!("policy should not compile, but did: {policy:?}"),
        Err(e) => e,
    }
}

mod bindings;
mod closure;
mod errors;
mod properties;
mod tunnels;
