//! The forward parse: one pass over the frame with an advancing [`Cursor`],
//! one function per header in the shape of xdp-tools' `parsing_helpers.h`
//! (`eth`, `vlans`, `ipv4`, `ipv6` with its extension walk, `transport`),
//! ending in a [`Shape`]. It reads no policy and no map: what a packet is
//! comes out of here, what to do with it is `judge`'s business.
//!
//! Cost: each header is one bounds check against the frame (and one against
//! the IP datagram for what follows the IP header), and nothing of the packet
//! is copied out but the few fields the judge reads. The source address stays
//! a reference into the packet until the LPM key or the source prefix needs
//! its bytes, so the 16 bytes of an IPv6 source are not carried through the
//! parse (and spilled to the stack) on every packet.
use core::marker::PhantomData;

use aya_ebpf::programs::XdpContext;
use xdpgate_common::{Family, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS};

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

/// A forward-only view of the frame. `pos` is the offset of the next header;
/// `limit` is where the IP datagram ends (a frame may carry Ethernet padding
/// past it, or claim more than it holds).
/// Headers it hands out borrow the packet (`'p`), not the cursor, so the
/// cursor moves on while they are read.
pub struct Cursor<'p> {
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
pub enum Shape<'p> {
    /// Not IPv4 or IPv6 after the tags (ARP, LLDP, unknown ethertypes, a
    /// frame cut inside a tag).
    NotIp,
    /// Still tagged after [`MAX_VLAN_TAGS`] tags: the kernel would strip the
    /// VID-0 ones and deliver what is inside, which was never seen here.
    DeepTags,
    /// The fixed IP header is cut short: no source address to judge.
    Unparsed(Family),
    Ip(Family, Addr<'p>, Transport),
}

/// The source address, where it lies in the packet.
#[derive(Clone, Copy)]
pub enum Addr<'p> {
    V4(&'p [u8; 4]),
    V6(&'p [u8; 16]),
}

/// How much of its transport header an IP packet shows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A whole TCP or UDP header.
    Whole,
    /// The destination port but not the rest of the header (a tiny first
    /// fragment, a header cut by the frame or the IP length).
    PortOnly,
    /// Nothing that shows the port: a bad IPv4 header length or version, an
    /// extension chain past the walk bound or cut mid-chain, a first fragment
    /// too short for the ports, a TCP fragment at offset 8 bytes.
    Hidden,
    /// A non-first fragment.
    LaterFragment,
    /// Another protocol than TCP or UDP (ICMP, ESP, a tunnel...).
    Other,
}

/// What the IP packet carries, as far as the parse could see. A plain
/// struct with every field set on every path, not an enum with payloads:
/// LLVM packs an enum into registers with the unused payload bytes left
/// undefined, and the verifier refuses a program that reads an
/// uninitialised register, masked or not.
#[derive(Clone, Copy)]
pub struct Transport {
    pub seen: Seen,
    /// The IP protocol (the last next header for IPv6).
    pub protocol: u8,
    /// The destination port, when `seen` is `Whole` or `PortOnly`.
    pub port: u16,
    /// TCP: SYN set and ACK clear. UDP, and a port-only shape: always.
    pub attempt: bool,
}

impl Transport {
    #[inline(always)]
    const fn without_port(seen: Seen, protocol: u8) -> Transport {
        Transport {
            seen,
            protocol,
            port: 0,
            attempt: false,
        }
    }

    #[inline(always)]
    pub fn udp(&self) -> bool {
        self.protocol == IPPROTO_UDP
    }
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
fn vlans<'p>(cursor: &mut Cursor<'p>, mut ethertype: u16) -> Result<Family, Shape<'p>> {
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
fn ipv4<'p>(cursor: &mut Cursor<'p>) -> Shape<'p> {
    let Some(ip) = cursor.take::<20>() else {
        return Shape::Unparsed(Family::Ipv4);
    };
    // SAFETY: bytes 12..16 of the 20 just checked, as an array reference.
    let source = Addr::V4(unsafe { &*(ip.as_ptr().add(12) as *const [u8; 4]) });
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    let total_len = be16(ip[2], ip[3]) as usize;
    let fragment_offset = be16(ip[6], ip[7]) & 0x1fff;
    let protocol = ip[9];
    let transport = if ip[0] >> 4 != 4 || header_len < 20 || total_len < header_len {
        Transport::without_port(Seen::Hidden, protocol)
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
    let seen = if protocol == IPPROTO_TCP && offset_units == 1 {
        Seen::Hidden
    } else {
        Seen::LaterFragment
    };
    Transport::without_port(seen, protocol)
}

/// IPv6: walks at most [`MAX_IPV6_EXT_HEADERS`] extension headers to the
/// transport header. IPv4-mapped sources are judged against the IPv4 sets.
#[inline(always)]
fn ipv6<'p>(cursor: &mut Cursor<'p>) -> Shape<'p> {
    let Some(ip) = cursor.take::<40>() else {
        return Shape::Unparsed(Family::Ipv6);
    };
    // SAFETY: bytes 8..24 of the 40 just checked, as an array reference.
    let src = unsafe { &*(ip.as_ptr().add(8) as *const [u8; 16]) };
    let mapped_v4 = src[..10].iter().all(|b| *b == 0) && src[10] == 0xff && src[11] == 0xff;
    let source = if mapped_v4 {
        // SAFETY: bytes 12..16 of the source, as an array reference.
        Addr::V4(unsafe { &*(src.as_ptr().add(12) as *const [u8; 4]) })
    } else {
        Addr::V6(src)
    };
    if ip[0] >> 4 != 6 {
        let hidden = Transport::without_port(Seen::Hidden, ip[6]);
        return Shape::Ip(Family::Ipv6, source, hidden);
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
                    return Transport::without_port(Seen::Hidden, next);
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
                    return Transport::without_port(Seen::Hidden, next);
                };
                let offset_units = be16(frag[2], frag[3]) >> 3;
                if offset_units != 0 {
                    return later_fragment(frag[0], offset_units);
                }
                next = frag[0];
            }
            _ => break,
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
            Transport::without_port(Seen::Hidden, next)
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
        return Transport::without_port(Seen::Other, protocol);
    }
    let whole = |port: u16, attempt: bool| Transport {
        seen: Seen::Whole,
        protocol,
        port,
        attempt,
    };
    if udp {
        if let Some(udp) = cursor.take_in_datagram::<8>() {
            return whole(be16(udp[2], udp[3]), true);
        }
    } else if let Some(tcp) = cursor.take_in_datagram::<20>() {
        let attempt = tcp[13] & (TCP_SYN | TCP_ACK) == TCP_SYN;
        return whole(be16(tcp[2], tcp[3]), attempt);
    }
    match cursor.take_in_datagram::<4>() {
        Some(ports) => Transport {
            seen: Seen::PortOnly,
            protocol,
            port: be16(ports[2], ports[3]),
            attempt: true,
        },
        None => Transport::without_port(Seen::Hidden, protocol),
    }
}

/// Parses the whole frame, forward, without reading any policy.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Shape<'_> {
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
