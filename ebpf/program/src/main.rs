//! The xdpgate XDP program: drops connection attempts to protected ports from
//! sources outside the allowed address sets, before the kernel allocates
//! anything for them.
//!
//! It reads like the verdicts in docs/filter.md (docs/architecture.md walks a
//! packet through it): parse forward through the frame once
//! (Ethernet, up to two VLAN tags, IPv4 with options or IPv6 with a bounded
//! extension-header walk), then judge. The source address is looked up at most
//! once, in one LPM trie whose value is the bitmask of every set holding it;
//! each port maps to the bitmask of the sets bound to it. Userspace owns the
//! policy; this program only reads it, from whichever slot is active.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use xdpgate_common::{
    counter_index, Control, Counter, Family, Reason, SetMask, SlotOptions, V4KeyData, V6KeyData,
    COUNTER_ENTRIES, LPM_MAX_ENTRIES, MAX_IPV6_EXT_HEADERS, OPT_STRICT, PORT_ENTRIES,
};

#[map(name = "XDPGATE_CONTROL")]
static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
#[map(name = "XDPGATE_SLOT_OPTIONS")]
static SLOT_OPTIONS: Array<SlotOptions> = Array::with_max_entries(2, 0);
#[map(name = "XDPGATE_TCP_PORTS")]
static TCP_PORTS: Array<SetMask> = Array::with_max_entries(PORT_ENTRIES, 0);
#[map(name = "XDPGATE_UDP_PORTS")]
static UDP_PORTS: Array<SetMask> = Array::with_max_entries(PORT_ENTRIES, 0);
#[map(name = "XDPGATE_V4_SLOT0")]
static V4_SLOT0: LpmTrie<V4KeyData, SetMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map(name = "XDPGATE_V4_SLOT1")]
static V4_SLOT1: LpmTrie<V4KeyData, SetMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map(name = "XDPGATE_V6_SLOT0")]
static V6_SLOT0: LpmTrie<V6KeyData, SetMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map(name = "XDPGATE_V6_SLOT1")]
static V6_SLOT1: LpmTrie<V6KeyData, SetMask> = LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
#[map(name = "XDPGATE_COUNTERS")]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);

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

const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

#[xdp]
pub fn xdpgate(ctx: XdpContext) -> u32 {
    let (reason, family) = judge(&ctx);
    let index = counter_index(reason, family);
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += (ctx.data_end() - ctx.data()) as u64;
        }
    }
    if reason.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// A bounds-checked view of the frame. Every read checks the whole header it
/// copies out once, so the verifier sees the check right before the access.
struct Cursor {
    start: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    fn new(ctx: &XdpContext) -> Self {
        Cursor {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// A view of the N bytes at `offset`, or `None` past the end. It is a
    /// reference, not a copy: callers load only the fields they use.
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<&[u8; N]> {
        if self.start + offset + N > self.end {
            return None;
        }
        // SAFETY: the N bytes at offset are inside the packet (checked above),
        // and the packet outlives this program run.
        Some(unsafe { &*((self.start + offset) as *const [u8; N]) })
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }
}

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    ((b0 as u16) << 8) | b1 as u16
}

/// The source address of the packet and, once looked up, the mask of the sets
/// that contain it. The lookup is lazy: traffic to unbound ports never pays it
/// unless deny sets are configured.
struct Source {
    addr: Addr,
    slot: u32,
    mask: Option<SetMask>,
}

enum Addr {
    V4(V4KeyData),
    V6(V6KeyData),
}

impl Source {
    #[inline(always)]
    fn mask(&mut self) -> SetMask {
        if let Some(mask) = self.mask {
            return mask;
        }
        let found = match &self.addr {
            Addr::V4(a) => {
                let key = Key::new(32, *a);
                let trie = if self.slot == 0 { &V4_SLOT0 } else { &V4_SLOT1 };
                trie.get(&key).copied()
            }
            Addr::V6(a) => {
                let key = Key::new(128, *a);
                let trie = if self.slot == 0 { &V6_SLOT0 } else { &V6_SLOT1 };
                trie.get(&key).copied()
            }
        };
        let mask = found.unwrap_or(0);
        self.mask = Some(mask);
        mask
    }
}

/// Where the transport header starts, and where the IP datagram ends (the
/// frame may carry Ethernet padding past it).
struct Transport {
    protocol: u8,
    offset: usize,
    end: usize,
}

/// What the network-layer parse found.
enum Network {
    /// A transport header to judge.
    Transport(Transport),
    /// A non-first fragment: no transport header to judge.
    LaterFragment,
    /// A shape that hides the transport header (docs/filter.md, evasive shapes).
    Evasive,
}

#[inline(always)]
fn judge(ctx: &XdpContext) -> (Reason, Family) {
    let cursor = Cursor::new(ctx);

    // Ethernet, then up to two VLAN tags (802.1ad outer, 802.1Q inner or either twice).
    let Some(eth) = cursor.read::<14>(0) else {
        return (Reason::PassNotIp, Family::Other);
    };
    let mut ethertype = be16(eth[12], eth[13]);
    let mut l3 = 14usize;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = cursor.read::<4>(l3) else {
            return (Reason::PassNotIp, Family::Other);
        };
        ethertype = be16(tag[2], tag[3]);
        l3 += 4;
    }
    let family = match ethertype {
        ETH_P_IP => Family::Ipv4,
        ETH_P_IPV6 => Family::Ipv6,
        _ => return (Reason::PassNotIp, Family::Other),
    };

    let Some(control) = CONTROL.get(0) else {
        return (Reason::PassUnarmed, family);
    };
    if !control.armed() {
        return (Reason::PassUnarmed, family);
    }
    let slot = control.active_slot();
    let Some(options) = SLOT_OPTIONS.get(slot) else {
        return (Reason::PassUnarmed, family);
    };

    let parsed = if family == Family::Ipv4 {
        parse_ipv4(&cursor, l3, slot)
    } else {
        parse_ipv6(&cursor, l3, slot)
    };
    let Some((mut source, network)) = parsed else {
        return (Reason::PassUnparsed, family);
    };

    if options.deny_mask != 0 && source.mask() & options.deny_mask != 0 {
        return (Reason::DropDeny, family);
    }

    let transport = match network {
        Network::Transport(t) => t,
        Network::LaterFragment => return (Reason::PassFragment, family),
        Network::Evasive => return (member_or_evasive(&mut source, options), family),
    };

    let reason = match transport.protocol {
        IPPROTO_TCP => judge_tcp(&cursor, &transport, &mut source, options, slot),
        IPPROTO_UDP => judge_udp(&cursor, &transport, &mut source, options, slot),
        _ => Reason::PassOtherProtocol,
    };
    (reason, family)
}

#[inline(always)]
fn member_or_evasive(source: &mut Source, options: &SlotOptions) -> Reason {
    if source.mask() & options.allow_mask != 0 {
        Reason::PassMember
    } else {
        Reason::DropEvasive
    }
}

#[inline(always)]
fn port_mask(ports: &Array<SetMask>, slot: u32, port: u16) -> SetMask {
    ports.get((slot << 16) | port as u32).copied().unwrap_or(0)
}

#[inline(always)]
fn judge_tcp(
    cursor: &Cursor,
    transport: &Transport,
    source: &mut Source,
    options: &SlotOptions,
    slot: u32,
) -> Reason {
    // A header that is cut short (by the frame or by the IP length, as in a
    // tiny first fragment) cannot show its flags: judge it as evasive.
    if transport.offset + TCP_HEADER_LEN > transport.end {
        return member_or_evasive(source, options);
    }
    let Some(tcp) = cursor.read::<TCP_HEADER_LEN>(transport.offset) else {
        return member_or_evasive(source, options);
    };
    let bound = port_mask(&TCP_PORTS, slot, be16(tcp[2], tcp[3]));
    if bound == 0 {
        return Reason::PassUnboundPort;
    }
    let flags = tcp[13];
    let connection_attempt = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if !connection_attempt && options.flags & OPT_STRICT == 0 {
        return Reason::PassNotSyn;
    }
    if source.mask() & bound != 0 {
        Reason::PassMember
    } else {
        Reason::DropNotMemberTcp
    }
}

#[inline(always)]
fn judge_udp(
    cursor: &Cursor,
    transport: &Transport,
    source: &mut Source,
    options: &SlotOptions,
    slot: u32,
) -> Reason {
    if transport.offset + UDP_HEADER_LEN > transport.end {
        return member_or_evasive(source, options);
    }
    let Some(udp) = cursor.read::<UDP_HEADER_LEN>(transport.offset) else {
        return member_or_evasive(source, options);
    };
    let bound = port_mask(&UDP_PORTS, slot, be16(udp[2], udp[3]));
    if bound == 0 {
        return Reason::PassUnboundPort;
    }
    if source.mask() & bound != 0 {
        Reason::PassMember
    } else {
        Reason::DropNotMemberUdp
    }
}

/// IPv4: header length from IHL (options skipped), fragments by offset. `None`
/// when not even the fixed 20-byte header is there to give a source address.
#[inline(always)]
fn parse_ipv4(cursor: &Cursor, l3: usize, slot: u32) -> Option<(Source, Network)> {
    let ip = cursor.read::<20>(l3)?;
    let source = Source {
        addr: Addr::V4([ip[12], ip[13], ip[14], ip[15]]),
        slot,
        mask: None,
    };
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    let total_len = be16(ip[2], ip[3]) as usize;
    let fragment_offset = be16(ip[6], ip[7]) & 0x1fff;
    let protocol = ip[9];

    if fragment_offset != 0 {
        // RFC 1858: a TCP fragment at offset 8 bytes can overwrite the flags of
        // the first fragment on reassembly. Nothing legitimate sends it.
        if protocol == IPPROTO_TCP && fragment_offset == 1 {
            return Some((source, Network::Evasive));
        }
        return Some((source, Network::LaterFragment));
    }
    if header_len < 20 || total_len < header_len {
        return Some((source, Network::Evasive));
    }
    let frame_end = cursor.len();
    let datagram_end = l3 + total_len;
    let end = if datagram_end < frame_end {
        datagram_end
    } else {
        frame_end
    };
    Some((
        source,
        Network::Transport(Transport {
            protocol,
            offset: l3 + header_len,
            end,
        }),
    ))
}

/// IPv6: walks at most [`MAX_IPV6_EXT_HEADERS`] extension headers to the
/// transport header. IPv4-mapped sources are judged against the IPv4 sets.
#[inline(always)]
fn parse_ipv6(cursor: &Cursor, l3: usize, slot: u32) -> Option<(Source, Network)> {
    let ip = cursor.read::<40>(l3)?;
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    let mapped_v4 = src[..10].iter().all(|b| *b == 0) && src[10] == 0xff && src[11] == 0xff;
    let addr = if mapped_v4 {
        Addr::V4([src[12], src[13], src[14], src[15]])
    } else {
        Addr::V6(src)
    };
    let source = Source {
        addr,
        slot,
        mask: None,
    };

    let payload_len = be16(ip[4], ip[5]) as usize;
    let frame_end = cursor.len();
    // A zero payload length means a jumbogram; the frame bounds it then.
    let end = if payload_len != 0 && l3 + 40 + payload_len < frame_end {
        l3 + 40 + payload_len
    } else {
        frame_end
    };

    let mut next = ip[6];
    let mut offset = l3 + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(ext) = cursor.read::<2>(offset) else {
                    return Some((source, Network::Evasive));
                };
                next = ext[0];
                offset += (ext[1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                let Some(ext) = cursor.read::<2>(offset) else {
                    return Some((source, Network::Evasive));
                };
                next = ext[0];
                offset += (ext[1] as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let Some(frag) = cursor.read::<8>(offset) else {
                    return Some((source, Network::Evasive));
                };
                if be16(frag[2], frag[3]) & 0xfff8 != 0 {
                    return Some((source, Network::LaterFragment));
                }
                next = frag[0];
                offset += 8;
            }
            _ => {
                return Some((
                    source,
                    Network::Transport(Transport {
                        protocol: next,
                        offset,
                        end,
                    }),
                ));
            }
        }
        if offset > end {
            return Some((source, Network::Evasive));
        }
    }
    // Still inside the extension chain after the walk bound.
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
            Some((source, Network::Evasive))
        }
        protocol => Some((
            source,
            Network::Transport(Transport {
                protocol,
                offset,
                end,
            }),
        )),
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
