//! The xdpgate XDP program: drops connection attempts to protected ports from
//! sources outside the allowed address sets, before the kernel allocates
//! anything for them.
//!
//! It reads like the policy in docs/filter.md (docs/architecture.md walks a
//! packet through it), in three steps. Parse: one
//! forward pass over an advancing [`Cursor`], one function per header in the
//! shape of xdp-tools' `parsing_helpers.h` (`eth`, `vlans`, `ipv4`, `ipv6`,
//! `transport`), ending in a [`Shape`]. Then read the control word and the
//! active slot's options. Then judge, with at most one LPM lookup of the
//! source, whose value is the bitmask of every set holding it; each port maps
//! to the bitmask of the sets bound to it. A shape that hides its port is
//! dropped from everyone; a shape that shows the port but hides the rest is
//! judged as a connection attempt to that port. Every verdict is counted per
//! reason and family; a drop is also counted under its source's /24 or /48
//! in an LRU map (`xdpgate top`). Userspace owns the policy; this program
//! only reads it.
#![no_std]
#![no_main]

use core::marker::PhantomData;

use aya_ebpf::{
    bindings::xdp_action,
    bindings::BPF_NOEXIST,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, LruPerCpuHashMap, PerCpuArray},
    programs::XdpContext,
};
use xdpgate_common::{
    counter_index, Control, Counter, Family, Reason, SetMask, SlotOptions, SourceKey, V4KeyData,
    V6KeyData, COUNTER_ENTRIES, LPM_MAX_ENTRIES, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS,
    OPT_FILTER_TUNNELS, OPT_STRICT, PORT_ENTRIES, SOURCE_ENTRIES, TUNNEL_PROTOCOLS,
};

/// Declares each map under the name `xdpgate_common::map_names!` gives it.
macro_rules! declare_maps {
    ($($constant:ident = $name:literal;)*) => {
        $(declare_map!($constant, $name);)*
    };
}

macro_rules! declare_map {
    (CONTROL, $name:literal) => {
        #[map(name = $name)]
        static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
    };
    (SLOT_OPTIONS, $name:literal) => {
        #[map(name = $name)]
        static SLOT_OPTIONS: Array<SlotOptions> = Array::with_max_entries(2, 0);
    };
    (TCP_PORTS, $name:literal) => {
        #[map(name = $name)]
        static TCP_PORTS: Array<SetMask> = Array::with_max_entries(PORT_ENTRIES, 0);
    };
    (UDP_PORTS, $name:literal) => {
        #[map(name = $name)]
        static UDP_PORTS: Array<SetMask> = Array::with_max_entries(PORT_ENTRIES, 0);
    };
    (V4_SLOT0, $name:literal) => {
        #[map(name = $name)]
        static V4_SLOT0: LpmTrie<V4KeyData, SetMask> =
            LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
    };
    (V4_SLOT1, $name:literal) => {
        #[map(name = $name)]
        static V4_SLOT1: LpmTrie<V4KeyData, SetMask> =
            LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
    };
    (V6_SLOT0, $name:literal) => {
        #[map(name = $name)]
        static V6_SLOT0: LpmTrie<V6KeyData, SetMask> =
            LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
    };
    (V6_SLOT1, $name:literal) => {
        #[map(name = $name)]
        static V6_SLOT1: LpmTrie<V6KeyData, SetMask> =
            LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
    };
    (COUNTERS, $name:literal) => {
        #[map(name = $name)]
        static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);
    };
    // Per-CPU values: a drop adds to this CPU's cell without an atomic, and
    // the same prefix hit on several CPUs (RSS spreads its flows) bounces no
    // cache line. The LRU list stays common (no BPF_F_NO_COMMON_LRU): a
    // per-CPU list would split the bound per CPU, and a prefix's entry would
    // be evicted by whichever CPU happens to run short.
    (SOURCES, $name:literal) => {
        #[map(name = $name)]
        static SOURCES: LruPerCpuHashMap<SourceKey, Counter> =
            LruPerCpuHashMap::with_max_entries(SOURCE_ENTRIES, 0);
    };
}

xdpgate_common::map_names!(declare_maps);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

#[xdp]
pub fn xdpgate(ctx: XdpContext) -> u32 {
    let (reason, family, source) = judge(&ctx);
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    if let Some(counter) = COUNTERS.get_ptr_mut(counter_index(reason, family)) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
    if reason.is_drop() {
        xdpgate_count_source(source, reason as u64, bytes);
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// A source prefix as one scalar: the little-endian bytes of its
/// [`SourceKey`] with the reason byte left zero, so it crosses into
/// [`xdpgate_count_source`] in one register.
type SourcePrefix = u64;
/// The frame showed no source (not IP, tagged too deep, a cut IP header).
const NO_SOURCE: SourcePrefix = u64::MAX;

/// The /24 of an IPv4 source or the /48 of an IPv6 one, with its family.
#[inline(always)]
fn source_prefix(source: &Addr) -> SourcePrefix {
    match source {
        Addr::V4(a) => u64::from_le_bytes([a[0], a[1], a[2], 0, 0, 0, Family::Ipv4 as u8, 0]),
        Addr::V6(a) => {
            u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], Family::Ipv6 as u8, 0])
        }
    }
}

/// Who is knocking: the dropped packet counted under its source's /24 or /48
/// and the reason. Only drops come here; the pass path never touches the map.
///
/// A global function (public, not inlined, scalars in and out), and the
/// program calls it on every drop without looking at `source` first: the
/// verifier checks it once, on its own, with `source` unknown. Inlined, or
/// behind an `if` on `source` in the caller, the verifier tracked the prefix
/// precisely through every state the VLAN and extension-header walks leave
/// behind, and went from about 3,000 instructions processed to past its
/// 1M budget.
#[no_mangle]
#[inline(never)]
pub extern "C" fn xdpgate_count_source(source: SourcePrefix, reason: u64, bytes: u64) -> u32 {
    if source == NO_SOURCE {
        return 0;
    }
    let b = (source | reason << 56).to_le_bytes();
    let key = SourceKey {
        prefix: [b[0], b[1], b[2], b[3], b[4], b[5]],
        family: b[6],
        reason: b[7],
    };
    if let Some(cell) = SOURCES.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += bytes;
        }
        return 0;
    }
    // A new prefix (or one evicted since): the LRU makes room if it must.
    // Another CPU may insert the same key first; then this one packet goes
    // uncounted, which a top list can afford.
    let _ = SOURCES.insert(&key, &Counter { packets: 1, bytes }, BPF_NOEXIST as u64);
    0
}

/// A forward-only view of the frame. `pos` is the offset of the next header;
/// `limit` is where the IP datagram ends (a frame may carry Ethernet padding
/// past it, or claim more than it holds).
/// Headers it hands out borrow the packet (`'p`), not the cursor, so the
/// cursor moves on while they are read.
struct Cursor<'p> {
    start: usize,
    end: usize,
    pos: usize,
    limit: usize,
    packet: PhantomData<&'p XdpContext>,
}

impl<'p> Cursor<'p> {
    #[inline(always)]
    fn new(ctx: &'p XdpContext) -> Self {
        let (start, end) = (ctx.data(), ctx.data_end());
        Cursor {
            start,
            end,
            pos: 0,
            limit: end - start,
            packet: PhantomData,
        }
    }

    /// The next N bytes, checked against the frame as one block (the
    /// verifier sees the check right before every load from it), and the
    /// cursor moved past them. `None` past the end of the frame.
    #[inline(always)]
    fn take<const N: usize>(&mut self) -> Option<&'p [u8; N]> {
        let at = self.start + self.pos;
        if at + N > self.end {
            return None;
        }
        self.pos += N;
        // SAFETY: the N bytes at `at` are inside the packet (checked above),
        // and the packet lives as long as the context `'p` borrows.
        Some(unsafe { &*(at as *const [u8; N]) })
    }

    /// `take`, but also within the IP datagram.
    #[inline(always)]
    fn take_in_datagram<const N: usize>(&mut self) -> Option<&'p [u8; N]> {
        if self.pos + N > self.limit {
            return None;
        }
        self.take::<N>()
    }

    #[inline(always)]
    fn skip(&mut self, bytes: usize) {
        self.pos += bytes;
    }

    /// The datagram ends `len` bytes after the current position, unless the
    /// frame ends first.
    #[inline(always)]
    fn limit_to(&mut self, len: usize) {
        if self.pos + len < self.limit {
            self.limit = self.pos + len;
        }
    }
}

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    ((b0 as u16) << 8) | b1 as u16
}

/// What the parse found, before any policy is read.
enum Shape {
    /// Not IPv4 or IPv6 after the tags (ARP, LLDP, unknown ethertypes, a
    /// frame cut inside a tag).
    NotIp,
    /// Still tagged after [`MAX_VLAN_TAGS`] tags: the kernel would strip the
    /// VID-0 ones and deliver what is inside, which was never seen here.
    DeepTags,
    /// The fixed IP header is cut short: no source address to judge.
    Unparsed(Family),
    Ip(Family, Addr, Transport),
}

enum Addr {
    V4(V4KeyData),
    V6(V6KeyData),
}

/// What the IP packet carries, as far as the parse could see.
enum Transport {
    /// A whole TCP header: destination port and whether it is a connection
    /// attempt (SYN set, ACK clear).
    Tcp { port: u16, attempt: bool },
    /// A whole UDP header.
    Udp { port: u16 },
    /// The destination port but not the rest of the header (a tiny first
    /// fragment, a header cut by the frame or the IP length).
    PortOnly { udp: bool, port: u16 },
    /// Nothing that shows the port: a bad IPv4 header length or version, an
    /// extension chain past the walk bound or cut mid-chain, a first fragment
    /// too short for the ports, a TCP fragment at offset 8 bytes.
    Hidden,
    /// A non-first fragment.
    LaterFragment,
    /// Another protocol (ICMP, ESP, a tunnel...).
    Other(u8),
}

/// Ethernet: the ethertype after the source and destination addresses.
#[inline(always)]
fn eth(cursor: &mut Cursor) -> Option<u16> {
    let eth = cursor.take::<14>()?;
    Some(be16(eth[12], eth[13]))
}

/// VLAN tags (802.1Q or 802.1ad, any VID), at most [`MAX_VLAN_TAGS`].
/// `Err(shape)` when the frame is no IP frame or is tagged too deep.
#[inline(always)]
fn vlans(cursor: &mut Cursor, mut ethertype: u16) -> Result<Family, Shape> {
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = cursor.take::<4>() else {
            return Err(Shape::NotIp);
        };
        ethertype = be16(tag[2], tag[3]);
    }
    match ethertype {
        ETH_P_IP => Ok(Family::Ipv4),
        ETH_P_IPV6 => Ok(Family::Ipv6),
        ETH_P_8021Q | ETH_P_8021AD => Err(Shape::DeepTags),
        _ => Err(Shape::NotIp),
    }
}

/// IPv4: version and header length checked (the kernel drops what fails
/// them), options skipped, fragments told apart by offset.
#[inline(always)]
fn ipv4(cursor: &mut Cursor) -> Shape {
    let Some(ip) = cursor.take::<20>() else {
        return Shape::Unparsed(Family::Ipv4);
    };
    let source = Addr::V4([ip[12], ip[13], ip[14], ip[15]]);
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    let total_len = be16(ip[2], ip[3]) as usize;
    let fragment_offset = be16(ip[6], ip[7]) & 0x1fff;
    let protocol = ip[9];
    let transport = if ip[0] >> 4 != 4 || header_len < 20 || total_len < header_len {
        Transport::Hidden
    } else if fragment_offset != 0 {
        later_fragment(protocol, fragment_offset)
    } else {
        cursor.limit_to(total_len - 20);
        cursor.skip(header_len - 20);
        transport(cursor, protocol)
    };
    Shape::Ip(Family::Ipv4, source, transport)
}

/// RFC 1858: a TCP fragment at offset 8 bytes can rewrite the flags of the
/// first fragment on reassembly, and nothing legitimate sends it.
#[inline(always)]
fn later_fragment(protocol: u8, offset_units: u16) -> Transport {
    if protocol == IPPROTO_TCP && offset_units == 1 {
        Transport::Hidden
    } else {
        Transport::LaterFragment
    }
}

/// IPv6: walks at most [`MAX_IPV6_EXT_HEADERS`] extension headers to the
/// transport header. IPv4-mapped sources are judged against the IPv4 sets.
#[inline(always)]
fn ipv6(cursor: &mut Cursor) -> Shape {
    let Some(ip) = cursor.take::<40>() else {
        return Shape::Unparsed(Family::Ipv6);
    };
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let mapped_v4 = src[..10].iter().all(|b| *b == 0) && src[10] == 0xff && src[11] == 0xff;
    let source = if mapped_v4 {
        Addr::V4([src[12], src[13], src[14], src[15]])
    } else {
        Addr::V6(src)
    };
    if ip[0] >> 4 != 6 {
        return Shape::Ip(Family::Ipv6, source, Transport::Hidden);
    }
    // A zero payload length means a jumbogram; the frame bounds it then.
    let payload_len = be16(ip[4], ip[5]) as usize;
    if payload_len != 0 {
        cursor.limit_to(payload_len);
    }
    let next = ip[6];
    Shape::Ip(Family::Ipv6, source, ipv6_ext(cursor, next))
}

/// The extension-header walk, ending at the transport header.
#[inline(always)]
fn ipv6_ext(cursor: &mut Cursor, mut next: u8) -> Transport {
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                let Some(ext) = cursor.take_in_datagram::<2>() else {
                    return Transport::Hidden;
                };
                let len = if next == IPPROTO_AH {
                    (ext[1] as usize + 2) * 4
                } else {
                    (ext[1] as usize + 1) * 8
                };
                next = ext[0];
                cursor.skip(len - 2);
            }
            IPPROTO_FRAGMENT => {
                let Some(frag) = cursor.take_in_datagram::<8>() else {
                    return Transport::Hidden;
                };
                let offset_units = be16(frag[2], frag[3]) >> 3;
                if offset_units != 0 {
                    return later_fragment(frag[0], offset_units);
                }
                next = frag[0];
            }
            _ => return transport(cursor, next),
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
            Transport::Hidden
        }
        protocol => transport(cursor, protocol),
    }
}

/// TCP and UDP: the destination port, and for TCP the flags. Both are read
/// within the IP datagram, so a tiny first fragment cannot borrow the bytes
/// of whatever follows it in the frame.
#[inline(always)]
fn transport(cursor: &mut Cursor, protocol: u8) -> Transport {
    let udp = protocol == IPPROTO_UDP;
    if protocol != IPPROTO_TCP && !udp {
        return Transport::Other(protocol);
    }
    if udp {
        if let Some(udp) = cursor.take_in_datagram::<8>() {
            return Transport::Udp {
                port: be16(udp[2], udp[3]),
            };
        }
    } else if let Some(tcp) = cursor.take_in_datagram::<20>() {
        return Transport::Tcp {
            port: be16(tcp[2], tcp[3]),
            attempt: tcp[13] & (TCP_SYN | TCP_ACK) == TCP_SYN,
        };
    }
    match cursor.take_in_datagram::<4>() {
        Some(ports) => Transport::PortOnly {
            udp,
            port: be16(ports[2], ports[3]),
        },
        None => Transport::Hidden,
    }
}

/// Parses the whole frame, forward, without reading any policy.
#[inline(always)]
fn parse(ctx: &XdpContext) -> Shape {
    let mut cursor = Cursor::new(ctx);
    let Some(ethertype) = eth(&mut cursor) else {
        return Shape::NotIp;
    };
    match vlans(&mut cursor, ethertype) {
        Ok(Family::Ipv4) => ipv4(&mut cursor),
        Ok(_) => ipv6(&mut cursor),
        Err(shape) => shape,
    }
}

/// What the verdict waits on once the shape is known: nothing, or whether
/// the source is in `sets`.
enum Question {
    Answered(Reason),
    Member { sets: SetMask, otherwise: Reason },
}

#[inline(always)]
fn port_mask(ports: &Array<SetMask>, slot: u32, port: u16) -> SetMask {
    ports.get((slot << 16) | port as u32).copied().unwrap_or(0)
}

/// The policy's question about a packet of this shape, before its source is
/// looked up.
#[inline(always)]
fn question(transport: &Transport, options: &SlotOptions, slot: u32) -> Question {
    use Question::*;
    let (udp, port, attempt, otherwise) = match *transport {
        Transport::Tcp { port, attempt } => (false, port, attempt, Reason::DropNotMemberTcp),
        Transport::Udp { port } => (true, port, true, Reason::DropNotMemberUdp),
        Transport::PortOnly { udp, port } => (udp, port, true, Reason::DropEvasive),
        Transport::Hidden => return Answered(Reason::DropEvasive),
        Transport::LaterFragment => return Answered(Reason::PassFragment),
        Transport::Other(protocol) => {
            if options.flags & OPT_FILTER_TUNNELS != 0 && TUNNEL_PROTOCOLS.contains(&protocol) {
                return Member {
                    sets: options.tunnel_mask,
                    otherwise: Reason::DropTunnel,
                };
            }
            return Answered(Reason::PassOtherProtocol);
        }
    };
    let ports = if udp { &UDP_PORTS } else { &TCP_PORTS };
    let sets = port_mask(ports, slot, port);
    if sets == 0 {
        Answered(Reason::PassUnboundPort)
    } else if !attempt && options.flags & OPT_STRICT == 0 {
        Answered(Reason::PassNotSyn)
    } else {
        Member { sets, otherwise }
    }
}

/// The mask of every set holding `addr`: the one LPM lookup.
#[inline(always)]
fn sets_of(addr: &Addr, slot: u32) -> SetMask {
    match addr {
        Addr::V4(a) => {
            let key = Key::new(32, *a);
            if slot == 0 {
                v4_slot0(&key)
            } else {
                v4_slot1(&key)
            }
        }
        Addr::V6(a) => {
            let key = Key::new(128, *a);
            if slot == 0 {
                v6_slot0(&key)
            } else {
                v6_slot1(&key)
            }
        }
    }
}

// One function per trie, never inlined: each holds the only lookup of its
// map. Inlined, LLVM merges the four lookups into one call whose map is
// chosen at run time; the verifier can then not bind that call to the trie's
// own lookup and leaves a generic helper with an indirect call (a retpoline
// on this kernel) in its place.
#[inline(never)]
fn v4_slot0(key: &Key<V4KeyData>) -> SetMask {
    V4_SLOT0.get(key).copied().unwrap_or(0)
}
#[inline(never)]
fn v4_slot1(key: &Key<V4KeyData>) -> SetMask {
    V4_SLOT1.get(key).copied().unwrap_or(0)
}
#[inline(never)]
fn v6_slot0(key: &Key<V6KeyData>) -> SetMask {
    V6_SLOT0.get(key).copied().unwrap_or(0)
}
#[inline(never)]
fn v6_slot1(key: &Key<V6KeyData>) -> SetMask {
    V6_SLOT1.get(key).copied().unwrap_or(0)
}

/// The verdict's reason, the family it is counted under, and the source's
/// prefix when the frame showed one (a frame tagged too deep does not).
#[inline(always)]
fn judge(ctx: &XdpContext) -> (Reason, Family, SourcePrefix) {
    let shape = parse(ctx);
    let family = match &shape {
        Shape::NotIp => return (Reason::PassNotIp, Family::Other, NO_SOURCE),
        Shape::DeepTags => Family::Other,
        Shape::Unparsed(family) | Shape::Ip(family, _, _) => *family,
    };

    let Some(control) = CONTROL.get(0) else {
        return (Reason::PassUnarmed, family, NO_SOURCE);
    };
    if !control.armed() {
        return (Reason::PassUnarmed, family, NO_SOURCE);
    }
    let slot = control.active_slot();
    let Some(options) = SLOT_OPTIONS.get(slot) else {
        return (Reason::PassUnarmed, family, NO_SOURCE);
    };

    let (source, transport) = match shape {
        Shape::Ip(_, source, transport) => (source, transport),
        Shape::DeepTags => return (Reason::DropEvasive, family, NO_SOURCE),
        _ => return (Reason::PassUnparsed, family, NO_SOURCE),
    };
    let question = question(&transport, options, slot);
    if options.deny_mask == 0 {
        if let Question::Answered(reason) = question {
            return (reason, family, drop_prefix(reason, &source));
        }
    }
    let sets = sets_of(&source, slot);
    let reason = if sets & options.deny_mask != 0 {
        Reason::DropDeny
    } else {
        match question {
            Question::Answered(reason) => reason,
            Question::Member { sets: wanted, .. } if sets & wanted != 0 => Reason::PassMember,
            Question::Member { otherwise, .. } => otherwise,
        }
    };
    (reason, family, drop_prefix(reason, &source))
}

/// The source's prefix for a drop; nothing is computed for a pass.
#[inline(always)]
fn drop_prefix(reason: Reason, source: &Addr) -> SourcePrefix {
    if reason.is_drop() {
        source_prefix(source)
    } else {
        NO_SOURCE
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
