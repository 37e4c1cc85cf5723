//! Shared pieces of the root-only integration tests: the privilege check that
//! decides whether a test runs or says exactly what is missing, a packet
//! builder on top of `etherparse`, and a harness that runs the real XDP
//! object through `BPF_PROG_TEST_RUN` and reports which counter moved.
use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use etherparse::{
    EtherType, Ethernet2Header, IpAuthHeader, IpFragOffset, IpNumber, Ipv4Header, Ipv6FlowLabel,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, SingleVlanHeader, TcpHeader, UdpHeader,
    VlanId, VlanPcp,
};
use xdpgate::{filter::Filter, policy::CompiledPolicy};
use xdpgate_common::{Family, Reason};

pub mod dashboard;
pub mod lab;
pub mod manifests;
pub mod request_path;
pub mod verdict;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// True when this process may load BPF programs. Otherwise prints why the
/// test is skipped, naming what is missing.
pub fn have_bpf_privileges(test: &str) -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if (has(CAP_BPF) || has(CAP_SYS_ADMIN)) && has(CAP_NET_ADMIN) {
        return true;
    }
    println!(
        "SKIP {test}: needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN to load XDP programs; \
         this process has CapEff={effective:#x}. Run the tests as root."
    );
    false
}

/// TCP flag combinations the matrix sends.
#[derive(Clone, Copy, Debug)]
pub enum Flags {
    Syn,
    SynAck,
    Ack,
    Rst,
    Fin,
    SynEceCwr,
}

/// The transport part of a test packet.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        port: u16,
        flags: Flags,
    },
    Udp {
        port: u16,
    },
    /// Another protocol number with raw bytes (ICMP echo and the like).
    Other {
        protocol: u8,
        bytes: Vec<u8>,
    },
}

/// An IPv6 extension header in a chain.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    Auth,
    /// Fragment header: offset in 8-byte units, more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
}

/// A test frame, described by its shape and built with `etherparse`.
#[derive(Clone, Debug)]
pub struct Packet {
    /// VLAN tags as (tag protocol identifier, VLAN id), outermost first.
    pub vlans: Vec<(u16, u16)>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 options (a multiple of 4 bytes, up to 40).
    pub ipv4_options: Vec<u8>,
    /// IPv4 fragment offset (8-byte units) and more-fragments flag.
    pub ipv4_fragment: Option<(u16, bool)>,
    pub ipv6_exts: Vec<Ext>,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// Bytes of the transport header actually carried (None = all of it).
    pub l4_truncate: Option<usize>,
}

impl Packet {
    pub fn tcp(src: &str, port: u16, flags: Flags) -> Self {
        Self::new(src, L4::Tcp { port, flags })
    }
    pub fn udp(src: &str, port: u16) -> Self {
        Self::new(src, L4::Udp { port })
    }
    pub fn new(src: &str, l4: L4) -> Self {
        let src: IpAddr = src.parse().expect("test source address");
        let dst: IpAddr = match src {
            IpAddr::V4(_) => "192.0.2.1".parse().unwrap(),
            IpAddr::V6(_) => "2001:db8::1".parse().unwrap(),
        };
        Packet {
            vlans: vec![],
            src,
            dst,
            ipv4_options: vec![],
            ipv4_fragment: None,
            ipv6_exts: vec![],
            l4,
            payload: vec![],
            l4_truncate: None,
        }
    }
    /// VLAN tags with these protocol identifiers, outermost first, with
    /// VLAN ids 100, 101...
    pub fn vlans(mut self, tpids: &[u16]) -> Self {
        self.vlans = tpids
            .iter()
            .enumerate()
            .map(|(i, tpid)| (*tpid, 100 + i as u16))
            .collect();
        self
    }
    /// VLAN tags given as (protocol identifier, VLAN id), outermost first.
    pub fn tags(mut self, tags: &[(u16, u16)]) -> Self {
        self.vlans = tags.to_vec();
        self
    }
    /// `count` priority tags (802.1Q, VLAN id 0), the kind Linux strips
    /// before IP however many there are.
    pub fn priority_tags(self, count: usize) -> Self {
        self.tags(&vec![(0x8100, 0); count])
    }
    pub fn ipv4_options(mut self, words: usize) -> Self {
        // NOP options (type 1), one byte each, padded to whole words.
        self.ipv4_options = vec![1; words * 4];
        self
    }
    pub fn ipv4_fragment(mut self, offset_units: u16, more: bool) -> Self {
        self.ipv4_fragment = Some((offset_units, more));
        self
    }
    pub fn exts(mut self, exts: &[Ext]) -> Self {
        self.ipv6_exts = exts.to_vec();
        self
    }
    pub fn payload(mut self, len: usize) -> Self {
        self.payload = vec![0xab; len];
        self
    }
    /// Carries only the first `len` bytes of the transport header (and no
    /// payload), with IP lengths that say so: a tiny fragment.
    pub fn l4_truncated(mut self, len: usize) -> Self {
        self.l4_truncate = Some(len);
        self
    }

    fn l4_bytes(&self) -> (IpNumber, Vec<u8>) {
        let (protocol, mut bytes) = match &self.l4 {
            L4::Tcp { port, flags } => {
                let mut tcp = TcpHeader::new(40_000, *port, 1, 64_240);
                match flags {
                    Flags::Syn => tcp.syn = true,
                    Flags::SynAck => {
                        tcp.syn = true;
                        tcp.ack = true
                    }
                    Flags::Ack => tcp.ack = true,
                    Flags::Rst => tcp.rst = true,
                    Flags::Fin => {
                        tcp.fin = true;
                        tcp.ack = true
                    }
                    Flags::SynEceCwr => {
                        tcp.syn = true;
                        tcp.ece = true;
                        tcp.cwr = true
                    }
                }
                (IpNumber::TCP, tcp.to_bytes().to_vec())
            }
            L4::Udp { port } => {
                let udp = UdpHeader {
                    source_port: 40_000,
                    destination_port: *port,
                    length: (8 + self.payload.len()) as u16,
                    checksum: 0,
                };
                (IpNumber::UDP, udp.to_bytes().to_vec())
            }
            L4::Other { protocol, bytes } => (IpNumber(*protocol), bytes.clone()),
        };
        match self.l4_truncate {
            Some(len) => bytes.truncate(len),
            None => bytes.extend_from_slice(&self.payload),
        }
        (protocol, bytes)
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let (protocol, l4) = self.l4_bytes();
        let (ip_type, l3) = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut ip = Ipv4Header::new(0, 64, protocol, src.octets(), dst.octets())
                    .expect("ipv4 header");
                ip.options = self
                    .ipv4_options
                    .as_slice()
                    .try_into()
                    .expect("ipv4 options");
                if let Some((offset, more)) = self.ipv4_fragment {
                    ip.fragment_offset = IpFragOffset::try_new(offset).expect("fragment offset");
                    ip.more_fragments = more;
                }
                ip.set_payload_len(l4.len()).expect("ipv4 payload length");
                ip.header_checksum = ip.calc_header_checksum();
                let mut bytes = ip.to_bytes().to_vec();
                bytes.extend_from_slice(&l4);
                (EtherType::IPV4, bytes)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut exts = Vec::new();
                // Each extension header names the one after it.
                let mut next = protocol;
                for ext in self.ipv6_exts.iter().rev() {
                    let (number, bytes) = ext_bytes(*ext, next);
                    let mut chained = bytes;
                    chained.extend_from_slice(&exts);
                    exts = chained;
                    next = number;
                }
                let ip = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: (exts.len() + l4.len()) as u16,
                    next_header: next,
                    hop_limit: 64,
                    source: src.octets(),
                    destination: dst.octets(),
                };
                let mut bytes = ip.to_bytes().to_vec();
                bytes.extend_from_slice(&exts);
                bytes.extend_from_slice(&l4);
                (EtherType::IPV6, bytes)
            }
            _ => panic!("source and destination families differ"),
        };
        let mut frame = Vec::new();
        let first_type = self
            .vlans
            .first()
            .map(|(t, _)| EtherType(*t))
            .unwrap_or(ip_type);
        let eth = Ethernet2Header {
            source: [0x02, 0, 0, 0, 0, 1],
            destination: [0x02, 0, 0, 0, 0, 2],
            ether_type: first_type,
        };
        frame.extend_from_slice(&eth.to_bytes());
        for (i, (_, vid)) in self.vlans.iter().enumerate() {
            let inner = self
                .vlans
                .get(i + 1)
                .map(|(t, _)| EtherType(*t))
                .unwrap_or(ip_type);
            let tag = SingleVlanHeader {
                pcp: VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(*vid).expect("vlan id"),
                ether_type: inner,
            };
            frame.extend_from_slice(&tag.to_bytes());
        }
        frame.extend_from_slice(&l3);
        frame
    }
}

fn ext_bytes(ext: Ext, next: IpNumber) -> (IpNumber, Vec<u8>) {
    match ext {
        Ext::HopByHop | Ext::Routing | Ext::DestOpts => {
            let number = match ext {
                Ext::HopByHop => IpNumber::IPV6_HEADER_HOP_BY_HOP,
                Ext::Routing => IpNumber::IPV6_ROUTE_HEADER,
                _ => IpNumber::IPV6_DESTINATION_OPTIONS,
            };
            // 6 bytes of PadN-style padding: the smallest (8-byte) header.
            let header = Ipv6RawExtHeader::new_raw(next, &[1, 4, 0, 0, 0, 0]).expect("ext header");
            (number, header.to_bytes().to_vec())
        }
        Ext::Auth => {
            let header = IpAuthHeader::new(next, 0x100, 1, &[0; 4]).expect("auth header");
            (IpNumber::AUTHENTICATION_HEADER, header.to_bytes().to_vec())
        }
        Ext::Fragment { offset, more } => {
            let offset = IpFragOffset::try_new(offset).expect("fragment offset");
            let header = Ipv6FragmentHeader::new(next, offset, more, 0x1234);
            (
                IpNumber::IPV6_FRAGMENTATION_HEADER,
                header.to_bytes().to_vec(),
            )
        }
    }
}

/// The bytes of a minimal IPv4 header (protocol TCP, 192.0.2.66 to
/// 192.0.2.1), to carry inside a tunnel.
pub fn inner_ipv4_header() -> Vec<u8> {
    let ip = Ipv4Header::new(20, 64, IpNumber::TCP, [192, 0, 2, 66], [192, 0, 2, 1])
        .expect("inner ipv4 header");
    ip.to_bytes().to_vec()
}

/// A packet of IP protocol (or IPv6 next header) `protocol` from `src`,
/// carrying a minimal inner IPv4 header: IPIP, SIT, GRE and the like as the
/// filter sees them.
pub fn tunnel(src: &str, protocol: u8) -> Packet {
    Packet::new(
        src,
        L4::Other {
            protocol,
            bytes: inner_ipv4_header(),
        },
    )
}

/// An ARP request frame.
pub fn arp_frame() -> Vec<u8> {
    let eth = Ethernet2Header {
        source: [0x02, 0, 0, 0, 0, 1],
        destination: [0xff; 6],
        ether_type: EtherType::ARP,
    };
    let mut frame = eth.to_bytes().to_vec();
    let arp = etherparse::ArpPacket::new(
        etherparse::ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        etherparse::ArpOperation::REQUEST,
        &[0x02, 0, 0, 0, 0, 1],
        &[192, 0, 2, 7],
        &[0; 6],
        &[192, 0, 2, 1],
    )
    .expect("arp packet");
    frame.extend_from_slice(&arp.to_bytes());
    frame
}

/// A frame with an arbitrary ethertype and a small payload.
pub fn ethertype_frame(ether_type: u16) -> Vec<u8> {
    let eth = Ethernet2Header {
        source: [0x02, 0, 0, 0, 0, 1],
        destination: [0x02, 0, 0, 0, 0, 2],
        ether_type: EtherType(ether_type),
    };
    let mut frame = eth.to_bytes().to_vec();
    frame.extend_from_slice(&[0u8; 46]);
    frame
}

/// The real XDP program, loaded but not attached, run through
/// `BPF_PROG_TEST_RUN`.
pub struct Harness {
    pub filter: Filter,
}

/// What one run of a frame did.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    /// The one counter cell that moved, with the bytes it added.
    pub counted: (Reason, Family),
    pub bytes: u64,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            filter: Filter::load().expect("the kernel accepts the XDP program"),
        }
    }

    pub fn with_policy(policy: &CompiledPolicy) -> Self {
        let mut harness = Self::new();
        harness.filter.apply(policy).expect("policy applies");
        harness
    }

    /// Runs `frame` once and returns the action and the single counter that
    /// moved. Panics if no counter or more than one moved, or if it moved by
    /// anything but one packet of this frame's length.
    pub fn run(&mut self, frame: &[u8]) -> Outcome {
        let before = self.filter.counters().expect("read counters");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        let result = self
            .filter
            .program()
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN");
        let after = self.filter.counters().expect("read counters");
        let moved: Vec<_> = after
            .since(&before)
            .iter()
            .filter(|(_, _, c)| c.packets != 0)
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "exactly one counter cell moves per packet: {moved:?}"
        );
        let (reason, family, counter) = moved[0];
        assert_eq!(
            counter.packets, 1,
            "{reason:?}/{family:?} moved by one packet"
        );
        Outcome {
            action: result.return_value,
            counted: (reason, family),
            bytes: counter.bytes,
        }
    }

    /// Mean kernel-measured nanoseconds per run of `frame` over `repeat` runs.
    pub fn time(&mut self, frame: &[u8], repeat: u32) -> f64 {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let result = self
            .filter
            .program()
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN");
        result.duration.as_nanos() as f64
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
