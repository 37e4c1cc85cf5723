//! The policy compiler: named address sets, port bindings and options in,
//! the contents of the kernel maps out.
//!
//! The XDP program does one LPM lookup per packet, and an LPM trie returns only
//! the longest matching prefix. So each compiled prefix carries the union of
//! the masks of every prefix that covers it (the covering-prefix closure):
//! `10.0.0.0/8 -> {nodes}` and `10.1.0.0/16 -> {admins}` compile to
//! `10.0.0.0/8 -> {nodes}`, `10.1.0.0/16 -> {nodes, admins}`.
//!
//! This module does no I/O; [`crate::filter`] writes what it produces. Every
//! error names the set, rule or port at fault, and compiling never touches
//! the policy that is in force.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use xdpgate_common::{
    SetMask, SlotOptions, MAX_SETS, OPT_FILTER_TUNNELS, OPT_STRICT, TUNNEL_UDP_PORTS,
};

/// An inclusive range of destination ports (a single port is `n-n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }
    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;
    /// `443` or `30000-32767`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{s}` is not a port (0-65535) or a range like 30000-32767"))
        };
        match s.split_once('-') {
            Some((a, b)) => Ok(PortRange {
                first: parse(a)?,
                last: parse(b)?,
            }),
            None => Ok(PortRange::single(parse(s)?)),
        }
    }
}

/// "These ports accept connection attempts only from these sets."
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    pub tcp: Vec<PortRange>,
    pub udp: Vec<PortRange>,
    pub from: Vec<String>,
}

/// Who may send tunnels: the IP protocols in
/// [`xdpgate_common::TUNNEL_PROTOCOLS`] (IPIP, SIT, GRE...) and UDP to the
/// well-known encapsulation ports in [`TUNNEL_UDP_PORTS`] (VXLAN, Geneve...).
/// A tunnel's inner packet is never seen by the filter, so a source that may
/// send tunnels may reach any port of the host through a tunnel device that
/// accepts it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Tunnels {
    /// Not filtered (the default): the kernel discards tunnel packets unless
    /// a tunnel device takes them, and `xdpgate status` warns when one exists.
    #[default]
    Pass,
    /// Only members of these sets; an empty list drops tunnels from everyone.
    From(Vec<String>),
}

/// A whole policy as the operator wrote it, before compilation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySpec {
    /// Named sets of IPv4 and IPv6 prefixes.
    pub sets: BTreeMap<String, Vec<IpNet>>,
    /// Bindings; several bindings naming the same port are merged (a source in
    /// any of their sets may connect).
    pub allow: Vec<Binding>,
    /// Sets whose members are dropped on every port.
    pub deny: Vec<String>,
    /// Drop all TCP from non-members to bound ports, not only SYNs.
    pub strict: bool,
    /// Who may send tunnel protocols.
    pub tunnels: Tunnels,
}

/// What is wrong with a policy. Each variant names the culprit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("{place} names set `{set}`, which is not defined{}", suggestion_text(.suggestion))]
    UnknownSet {
        set: String,
        place: String,
        suggestion: Option<String>,
    },
    #[error("the policy uses {count} sets but the kernel's set mask holds at most {max}; merge some sets")]
    TooManySets { count: usize, max: usize },
    #[error("{place}: port 0 is not a destination port a connection can use")]
    PortZero { place: String },
    #[error("{place}: port range {range} runs backwards")]
    BackwardsRange { place: String, range: PortRange },
    #[error("{place} lists no tcp or udp ports")]
    NoPorts { place: String },
    #[error("{place} allows no set (`from` is empty): it would drop every connection attempt to its ports")]
    NoSets { place: String },
    #[error(
        "set `{set}` is both denied on every port and allowed by {place}; the deny always wins, \
         so the allow can never match: remove one of them"
    )]
    DeniedAndAllowed { set: String, place: String },
    #[error(
        "set `{set}` is empty but {place} binds it: that would drop every connection attempt to \
         those ports"
    )]
    EmptyBoundSet { set: String, place: String },
    #[error("the policy binds no port and denies no set: there is nothing to enforce")]
    EmptyPolicy,
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// A policy ready to be written into a map slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Bit `i` of every mask stands for `set_names[i]`.
    pub set_names: Vec<String>,
    /// Destination port -> sets allowed to open connections to it (nonzero only).
    pub tcp_ports: BTreeMap<u16, SetMask>,
    pub udp_ports: BTreeMap<u16, SetMask>,
    /// Prefix -> every set that contains it, closed over covering prefixes.
    pub v4: BTreeMap<Ipv4Net, SetMask>,
    pub v6: BTreeMap<Ipv6Net, SetMask>,
    pub options: SlotOptions,
}

impl CompiledPolicy {
    /// The names of the sets in `mask`.
    pub fn set_names_in(&self, mask: SetMask) -> Vec<&str> {
        self.set_names
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask & (1 << bit) != 0)
            .map(|(_, name)| name.as_str())
            .collect()
    }

    /// The mask for `addr`, as the kernel's longest-prefix lookup finds it.
    /// IPv4-mapped IPv6 addresses are looked up as IPv4.
    pub fn lookup(&self, addr: IpAddr) -> SetMask {
        match canonical_addr(addr) {
            IpAddr::V4(a) => longest_match(&self.v4, |net| net.contains(&a)),
            IpAddr::V6(a) => longest_match(&self.v6, |net| net.contains(&a)),
        }
    }
}

fn longest_match<N: Copy + Ord + PrefixLen>(
    map: &BTreeMap<N, SetMask>,
    contains: impl Fn(&N) -> bool,
) -> SetMask {
    map.iter()
        .filter(|(net, _)| contains(net))
        .max_by_key(|(net, _)| net.prefix())
        .map(|(_, mask)| *mask)
        .unwrap_or(0)
}

/// `::ffff:a.b.c.d` is judged as `a.b.c.d`, as the kernel program does.
pub fn canonical_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

/// An IPv4-mapped IPv6 prefix (`::ffff:10.0.0.0/104`) becomes the IPv4 prefix
/// it stands for, since the kernel judges mapped sources against IPv4 sets.
/// Host bits are cleared.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(
                Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .expect("prefix_len - 96 <= 32")
                    .trunc(),
            ),
            None => IpNet::V6(v6.trunc()),
        },
        other => other.trunc(),
    }
}

trait PrefixLen {
    fn prefix(&self) -> u8;
}
impl PrefixLen for Ipv4Net {
    fn prefix(&self) -> u8 {
        self.prefix_len()
    }
}
impl PrefixLen for Ipv6Net {
    fn prefix(&self) -> u8 {
        self.prefix_len()
    }
}

/// Compiles a policy. Errors name the culprit; nothing is written anywhere.
pub fn compile(spec: &PolicySpec) -> Result<CompiledPolicy, PolicyError> {
    let place = |i: usize| format!("allow rule {}", i + 1);
    let known = |set: &str, place: String| -> Result<(), PolicyError> {
        if spec.sets.contains_key(set) {
            Ok(())
        } else {
            Err(PolicyError::UnknownSet {
                set: set.to_string(),
                suggestion: closest_name(set, spec.sets.keys().map(String::as_str))
                    .map(str::to_string),
                place,
            })
        }
    };

    // Validate every rule before assigning bits, so errors read in file order.
    for set in &spec.deny {
        known(set, "deny".into())?;
    }
    let tunnel_sets: &[String] = match &spec.tunnels {
        Tunnels::Pass => &[],
        Tunnels::From(sets) => sets,
    };
    for set in tunnel_sets {
        known(set, "tunnels".into())?;
        if spec.deny.contains(set) {
            return Err(PolicyError::DeniedAndAllowed {
                set: set.clone(),
                place: "tunnels".into(),
            });
        }
    }
    for (i, binding) in spec.allow.iter().enumerate() {
        if binding.tcp.is_empty() && binding.udp.is_empty() {
            return Err(PolicyError::NoPorts { place: place(i) });
        }
        if binding.from.is_empty() {
            return Err(PolicyError::NoSets { place: place(i) });
        }
        for range in binding.tcp.iter().chain(&binding.udp) {
            if range.first == 0 {
                return Err(PolicyError::PortZero { place: place(i) });
            }
            if range.first > range.last {
                return Err(PolicyError::BackwardsRange {
                    place: place(i),
                    range: *range,
                });
            }
        }
        for set in &binding.from {
            known(set, place(i))?;
            if spec.deny.contains(set) {
                return Err(PolicyError::DeniedAndAllowed {
                    set: set.clone(),
                    place: place(i),
                });
            }
            if spec.sets[set].is_empty() {
                return Err(PolicyError::EmptyBoundSet {
                    set: set.clone(),
                    place: place(i),
                });
            }
        }
    }
    if spec.allow.is_empty() && spec.deny.is_empty() {
        return Err(PolicyError::EmptyPolicy);
    }

    // Only sets the policy uses get a bit, in name order, so the same policy
    // always compiles to the same maps.
    let used: BTreeSet<&str> = spec
        .allow
        .iter()
        .flat_map(|b| b.from.iter())
        .chain(&spec.deny)
        .chain(tunnel_sets)
        .map(String::as_str)
        .collect();
    if used.len() > MAX_SETS {
        return Err(PolicyError::TooManySets {
            count: used.len(),
            max: MAX_SETS,
        });
    }
    let set_names: Vec<String> = used.iter().map(|s| s.to_string()).collect();
    let bit = |set: &str| -> SetMask {
        let index = set_names.iter().position(|n| n == set).expect("used set");
        1 << index
    };

    let mut tcp_ports = BTreeMap::new();
    let mut udp_ports = BTreeMap::new();
    for binding in &spec.allow {
        let mask = binding.from.iter().fold(0, |m, s| m | bit(s));
        for (ranges, ports) in [
            (&binding.tcp, &mut tcp_ports),
            (&binding.udp, &mut udp_ports),
        ] {
            for port in ranges.iter().flat_map(|r| r.ports()) {
                *ports.entry(port).or_insert(0) |= mask;
            }
        }
    }
    let deny_mask = spec.deny.iter().fold(0, |m, s| m | bit(s));
    let tunnel_mask = tunnel_sets.iter().fold(0, |m, s| m | bit(s));
    let mut flags = if spec.strict { OPT_STRICT } else { 0 };
    if let Tunnels::From(_) = spec.tunnels {
        flags |= OPT_FILTER_TUNNELS;
        // The tunnel UDP ports are bound to the tunnel sets, beside any rule
        // that binds them too. A port mask of zero means "unbound", so when
        // no set may send tunnels the ports carry a bit that no prefix holds.
        let port_mask = if tunnel_mask != 0 {
            tunnel_mask
        } else if set_names.len() < MAX_SETS {
            1 << set_names.len()
        } else {
            return Err(PolicyError::TooManySets {
                count: set_names.len() + 1,
                max: MAX_SETS,
            });
        };
        for port in TUNNEL_UDP_PORTS {
            *udp_ports.entry(port).or_insert(0) |= port_mask;
        }
    }

    let mut v4: BTreeMap<Ipv4Net, SetMask> = BTreeMap::new();
    let mut v6: BTreeMap<Ipv6Net, SetMask> = BTreeMap::new();
    for set in &set_names {
        let mask = bit(set);
        for net in &spec.sets[set] {
            match canonical_net(*net) {
                IpNet::V4(n) => *v4.entry(n).or_insert(0) |= mask,
                IpNet::V6(n) => *v6.entry(n).or_insert(0) |= mask,
            }
        }
    }

    Ok(CompiledPolicy {
        set_names,
        tcp_ports,
        udp_ports,
        v4: close_over_covering(v4, |outer, inner| outer.contains(inner)),
        v6: close_over_covering(v6, |outer, inner| outer.contains(inner)),
        options: SlotOptions {
            deny_mask,
            tunnel_mask,
            flags,
            _pad: 0,
        },
    })
}

/// Gives each prefix the union of its own mask and the masks of every prefix
/// that covers it. In (network, prefix length) order a covering prefix comes
/// before everything it covers, so one pass with a stack of the open
/// ancestors does it in O(n log n).
fn close_over_covering<N: Copy + Ord>(
    prefixes: BTreeMap<N, SetMask>,
    covers: impl Fn(&N, &N) -> bool,
) -> BTreeMap<N, SetMask> {
    let mut ancestors: Vec<(N, SetMask)> = Vec::new();
    let mut closed = BTreeMap::new();
    for (net, mask) in prefixes {
        while let Some((top, _)) = ancestors.last() {
            if covers(top, &net) {
                break;
            }
            ancestors.pop();
        }
        let mask = mask | ancestors.last().map_or(0, |(_, m)| *m);
        ancestors.push((net, mask));
        closed.insert(net, mask);
    }
    closed
}

/// The candidate nearest to a misspelt name, when it is close enough to be a
/// typo. Used for set names here and for keys in the config reader.
pub fn closest_name<'n>(wanted: &str, names: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    names
        .map(|n| (edit_distance(wanted, n), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4) && *d < wanted.len().max(1))
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The embedded default: Cloudflare's published ranges on TCP 80 and 443.
pub fn cloudflare_default() -> PolicySpec {
    let mut sets = BTreeMap::new();
    sets.insert("cloudflare".to_string(), crate::cloudflare::snapshot());
    PolicySpec {
        sets,
        allow: vec![Binding {
            tcp: vec![PortRange::single(80), PortRange::single(443)],
            udp: vec![],
            from: vec!["cloudflare".into()],
        }],
        deny: vec![],
        strict: false,
        tunnels: Tunnels::Pass,
    }
}

/// Whether `addr` may open a connection to `port`, by the plain reading of the
/// policy: is it in any set bound to the port? This is the model the compiled
/// single-lookup verdict is checked against.
pub fn naive_allows(spec: &PolicySpec, udp: bool, port: u16, addr: IpAddr) -> bool {
    let addr = canonical_addr(addr);
    let in_set = |set: &String| {
        spec.sets[set]
            .iter()
            .any(|net| canonical_net(*net).contains(&addr))
    };
    if spec.deny.iter().any(in_set) {
        return false;
    }
    let mut bound = false;
    let mut member = false;
    for binding in &spec.allow {
        let ranges = if udp { &binding.udp } else { &binding.tcp };
        if ranges.iter().any(|r| (r.first..=r.last).contains(&port)) {
            bound = true;
            member |= binding.from.iter().any(in_set);
        }
    }
    if let Tunnels::From(sets) = &spec.tunnels {
        if udp && TUNNEL_UDP_PORTS.contains(&port) {
            bound = true;
            member |= sets.iter().any(in_set);
        }
    }
    !bound || member
}

/// Whether `addr` may send a tunnel protocol (IPIP, GRE, SIT...), by the
/// plain reading of the policy.
pub fn naive_allows_tunnel(spec: &PolicySpec, addr: IpAddr) -> bool {
    let addr = canonical_addr(addr);
    let in_set = |set: &String| {
        spec.sets[set]
            .iter()
            .any(|net| canonical_net(*net).contains(&addr))
    };
    if spec.deny.iter().any(in_set) {
        return false;
    }
    match &spec.tunnels {
        Tunnels::Pass => true,
        Tunnels::From(sets) => sets.iter().any(in_set),
    }
}

/// Whether the compiled policy allows it: what the kernel computes, done in
/// userspace (`port_mask == 0 || port_mask & addr_mask != 0`, deny first).
pub fn compiled_allows(policy: &CompiledPolicy, udp: bool, port: u16, addr: IpAddr) -> bool {
    let addr_mask = policy.lookup(addr);
    if addr_mask & policy.options.deny_mask != 0 {
        return false;
    }
    let ports = if udp {
        &policy.udp_ports
    } else {
        &policy.tcp_ports
    };
    let port_mask = ports.get(&port).copied().unwrap_or(0);
    port_mask == 0 || port_mask & addr_mask != 0
}

/// Parses an address that may be written without a prefix length (a host).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address or CIDR"))
}

#[cfg(any(test, feature = "strategies"))]
pub mod strategies;
#[cfg(test)]
mod tests;
