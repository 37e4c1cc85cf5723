//! The contract between the XDP program and userspace: map names, key and value
//! layouts, counter indices and the ABI version.
//!
//! Nothing else crosses the kernel/user boundary. Every type here is `#[repr(C)]`
//! with explicit padding so both sides agree byte for byte; with the `user`
//! feature they implement `aya::Pod`. Changing any layout or meaning here means
//! bumping [`ABI_VERSION`].
#![cfg_attr(not(test), no_std)]

/// Bumped whenever a map's layout or meaning changes. Userspace refuses to adopt
/// pinned maps written under another version. Adding a map is no such change:
/// a build that finds the maps it knows pinned adopts them and creates (and
/// pins) the one it does not find, so counters and the policy in force carry
/// on across the upgrade ([`maps::SOURCES`] came that way, under version 2).
/// Nor is retiring one: a map is given a new name when its layout changes,
/// and a build unpins the maps it does not know (the per-source LRU map
/// `XDPGATE_SOURCES` became the per-CPU table `XDPGATE_SOURCE_SETS` that way).
pub const ABI_VERSION: u32 = 2;

/// One bit per named address set. The policy compiler rejects more sets than this.
pub type SetMask = u64;
/// How many sets a policy can name: the bits of [`SetMask`].
pub const MAX_SETS: usize = SetMask::BITS as usize;

/// Number of policy slots. Userspace fills the inactive slot, then flips
/// [`Control::state`]; a packet sees one whole policy or the other.
pub const SLOTS: u32 = 2;
/// Entries per protocol port array: one per port and slot (`slot << 16 | port`).
pub const PORT_ENTRIES: u32 = SLOTS * 65_536;
/// Capacity of each LPM trie (one per family and slot). LPM tries allocate per
/// node on insert, so a large bound costs nothing until it is used.
pub const LPM_MAX_ENTRIES: u32 = 1 << 20;
/// How many IPv6 extension headers the program walks before it gives up and
/// treats the packet as evasive.
pub const MAX_IPV6_EXT_HEADERS: u32 = 8;
/// How many VLAN tags (802.1Q `0x8100` or 802.1ad `0x88a8`, any VID) the
/// program walks. Linux strips any chain of VID-0 tags before IP, so a frame
/// still tagged past this bound is evasive.
pub const MAX_VLAN_TAGS: u32 = 8;

/// IP protocols that carry another packet the host may decapsulate
/// (IPIP, IPv6-in-IP/SIT, GRE, EtherIP, L2TPv3, MPLS-in-IP). With
/// [`OPT_FILTER_TUNNELS`] only members of [`SlotOptions::tunnel_mask`] may
/// send them; the same numbers serve as IPv6 next headers.
pub const TUNNEL_PROTOCOLS: [u8; 6] = [4, 41, 47, 97, 115, 137];
/// UDP ports of well-known encapsulations (L2TP 1701, GTP-U 2152, GUE 6080,
/// Geneve 6081, MPLS-in-UDP 6635, VXLAN 4789 and 4790 (GPE), and 8472, the
/// Linux default VXLAN port flannel uses). With tunnels filtered the compiler
/// binds those of them no rule binds to the tunnel sets.
pub const TUNNEL_UDP_PORTS: [u16; 8] = [1701, 2152, 4789, 4790, 6080, 6081, 6635, 8472];

/// The one list of map names: `CONSTANT = "name in the object"`. Both sides
/// are generated from it, so they cannot drift apart: [`maps`] holds the
/// names as constants for userspace, and the XDP program passes a macro of
/// its own here to declare each map with its name
/// (`xdpgate_common::map_names!(declare_maps)`).
#[macro_export]
macro_rules! map_names {
    ($with:ident) => {
        $with! {
            CONTROL = "XDPGATE_CONTROL";
            SLOT_OPTIONS = "XDPGATE_SLOT_OPTIONS";
            TCP_PORTS = "XDPGATE_TCP_PORTS";
            UDP_PORTS = "XDPGATE_UDP_PORTS";
            V4_SLOT0 = "XDPGATE_V4_SLOT0";
            V4_SLOT1 = "XDPGATE_V4_SLOT1";
            V6_SLOT0 = "XDPGATE_V6_SLOT0";
            V6_SLOT1 = "XDPGATE_V6_SLOT1";
            COUNTERS = "XDPGATE_COUNTERS";
            SOURCES = "XDPGATE_SOURCE_SETS";
            EMPTY_16S = "XDPGATE_EMPTY_16S";
        }
    };
}

/// Map names as they appear in the object file and under the pin directory.
pub mod maps {
    macro_rules! constants {
        ($($constant:ident = $name:literal;)*) => {
            $(pub const $constant: &str = $name;)*
            /// Every map of the program.
            pub const ALL: &[&str] = &[$($name),*];
        };
    }
    map_names!(constants);
    /// Name of the XDP program function in the object.
    pub const PROGRAM: &str = "xdpgate";
}

/// [`Control::state`] bit: a complete policy has been written. Until it is set
/// the program passes every packet.
pub const STATE_ARMED: u32 = 1 << 0;
/// [`Control::state`] bit: which slot is active (clear = 0, set = 1). It sits in
/// the same byte as [`STATE_ARMED`], so however the kernel copies a map value,
/// a reader never sees the two half-updated.
pub const STATE_SLOT1: u32 = 1 << 1;

/// The single entry of the control array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// [`STATE_ARMED`] | [`STATE_SLOT1`]; the only field the program reads.
    pub state: u32,
    /// [`ABI_VERSION`] of the userspace that wrote the policy.
    pub abi_version: u32,
    /// Incremented on every policy swap, for `status` and metrics.
    pub generation: u64,
}

impl Control {
    pub const fn armed(&self) -> bool {
        self.state & STATE_ARMED != 0
    }
    pub const fn active_slot(&self) -> u32 {
        if self.state & STATE_SLOT1 != 0 {
            1
        } else {
            0
        }
    }
}

/// [`SlotOptions::flags`] bit: drop every TCP segment (not just SYNs) from
/// non-members to bound ports.
pub const OPT_STRICT: u32 = 1 << 0;
/// [`SlotOptions::flags`] bit: drop [`TUNNEL_PROTOCOLS`] from sources outside
/// [`SlotOptions::tunnel_mask`].
pub const OPT_FILTER_TUNNELS: u32 = 1 << 1;

/// Per-slot policy options, the part of a policy that is not a port or a prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotOptions {
    /// Sets whose members are dropped on every port.
    pub deny_mask: SetMask,
    /// Sets whose members may send [`TUNNEL_PROTOCOLS`] when
    /// [`OPT_FILTER_TUNNELS`] is set (zero: nobody may).
    pub tunnel_mask: SetMask,
    /// [`OPT_STRICT`] | [`OPT_FILTER_TUNNELS`].
    pub flags: u32,
    pub _pad: u32,
}

/// Words of [`maps::EMPTY_16S`] per slot and family: one bit for each of the
/// 65,536 values of an address's first 16 bits.
pub const EMPTY_16_WORDS: u32 = 65_536 / 64;
/// Entries of [`maps::EMPTY_16S`]: a bitmap per slot and family.
pub const EMPTY_16_ENTRIES: u32 = SLOTS * 2 * EMPTY_16_WORDS;

/// The word of [`maps::EMPTY_16S`] that holds the bit of `top16` (an
/// address's first 16 bits) for this slot and family (IPv6 when `v6`). A set
/// bit says no prefix of that slot's trie for that family lies within or
/// over the /16: a source there is in no set, and the program skips the
/// trie. A clear bit says nothing, so a map that is all zero (just created,
/// or never written) costs a lookup but never a wrong verdict.
pub const fn empty_16_index(slot: u32, v6: bool, top16: u16) -> u32 {
    (slot * 2 + v6 as u32) * EMPTY_16_WORDS + (top16 as u32 >> 6)
}

/// The bit of `top16` within its [`empty_16_index`] word.
pub const fn empty_16_bit(top16: u16) -> u64 {
    1 << (top16 & 63)
}

/// Key data of the IPv4 tries (the prefix length precedes it in the LPM key).
pub type V4KeyData = [u8; 4];
/// Key data of the IPv6 tries.
pub type V6KeyData = [u8; 16];

/// Address family of a counted packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 1,
    /// Frames that are not IP (ARP, LLDP, ...).
    Other = 2,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Ipv4, Family::Ipv6, Family::Other];
    pub const COUNT: u32 = 3;
    pub const fn label(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Other => "other",
        }
    }
}

/// Why a packet got its verdict. Each reason is either a pass or a drop.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Not an IP frame (ARP, LLDP, unknown ethertype).
    PassNotIp = 0,
    /// No policy written yet (the filter is not armed).
    PassUnarmed = 1,
    /// Destination port has no binding.
    PassUnboundPort = 2,
    /// Source is in one of the sets bound to the port (or, for a packet that
    /// cannot be judged, in any allow set).
    PassMember = 3,
    /// TCP segment that is not a connection attempt (and strict mode is off).
    PassNotSyn = 4,
    /// Non-first fragment: it carries no transport header.
    PassFragment = 5,
    /// The IP header itself is truncated; the kernel's own checks discard it.
    PassUnparsed = 6,
    /// Transport protocol other than TCP and UDP (ICMP, ESP, ...), or a
    /// tunnel protocol while tunnels are not filtered (or from a tunnel set:
    /// that is `member`).
    PassOtherProtocol = 7,
    /// TCP connection attempt to a bound port from a non-member.
    DropNotMemberTcp = 8,
    /// UDP datagram to a bound port from a non-member.
    DropNotMemberUdp = 9,
    /// Source is in a deny set.
    DropDeny = 10,
    /// A shape that hides what it carries: the destination port cannot be
    /// read (dropped from every source), or it can but the rest of the
    /// transport header cannot (judged as a connection attempt to that port,
    /// and the source is in no set bound to it).
    DropEvasive = 11,
    /// A tunnel protocol from a source outside the tunnel sets, with tunnels
    /// filtered.
    DropTunnel = 12,
}

impl Reason {
    pub const COUNT: u32 = 13;
    pub const ALL: [Reason; 13] = [
        Reason::PassNotIp,
        Reason::PassUnarmed,
        Reason::PassUnboundPort,
        Reason::PassMember,
        Reason::PassNotSyn,
        Reason::PassFragment,
        Reason::PassUnparsed,
        Reason::PassOtherProtocol,
        Reason::DropNotMemberTcp,
        Reason::DropNotMemberUdp,
        Reason::DropDeny,
        Reason::DropEvasive,
        Reason::DropTunnel,
    ];

    pub const fn is_drop(self) -> bool {
        (self as u32) >= Reason::DropNotMemberTcp as u32
    }

    /// `pass` or `drop`, the `action` label of the metrics.
    pub const fn action(self) -> &'static str {
        if self.is_drop() {
            "drop"
        } else {
            "pass"
        }
    }

    /// Stable snake_case name, the `reason` label of the metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Reason::PassNotIp => "not_ip",
            Reason::PassUnarmed => "unarmed",
            Reason::PassUnboundPort => "unbound_port",
            Reason::PassMember => "member",
            Reason::PassNotSyn => "not_syn",
            Reason::PassFragment => "fragment",
            Reason::PassUnparsed => "unparsed",
            Reason::PassOtherProtocol => "other_protocol",
            Reason::DropNotMemberTcp => "not_member_tcp",
            Reason::DropNotMemberUdp => "not_member_udp",
            Reason::DropDeny => "deny",
            Reason::DropEvasive => "evasive",
            Reason::DropTunnel => "tunnel",
        }
    }
}

/// Entries in the counter array: one per (reason, family).
pub const COUNTER_ENTRIES: u32 = Reason::COUNT * Family::COUNT;

/// Index of a (reason, family) pair in the counter array.
#[inline(always)]
pub const fn counter_index(reason: Reason, family: Family) -> u32 {
    reason as u32 * Family::COUNT + family as u32
}

/// One per-CPU counter cell.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Sets in each CPU's part of the [`maps::SOURCES`] table, as a power of two.
pub const SOURCE_SET_BITS: u32 = 12;
/// Sets in each CPU's part of the [`maps::SOURCES`] table (the map's entries).
pub const SOURCE_SETS: u32 = 1 << SOURCE_SET_BITS;
/// (source prefix, reason) pairs a set holds.
pub const SOURCE_WAYS: usize = 4;
/// How many (source prefix, reason) pairs each CPU tracks at once: a drop
/// whose pair is not in its set takes the slot of the pair that set saw least
/// recently. The table is preallocated: [`SOURCE_SETS`] x
/// `size_of::<SourceSet>()` (136 bytes) per possible CPU.
pub const SOURCE_ENTRIES: u32 = SOURCE_SETS * SOURCE_WAYS as u32;

/// The set of the [`maps::SOURCES`] table a pair (its [`SourceKey`] as
/// [`SourceKey::to_bits`] gives it) lives in: a multiplicative hash, so that
/// neighbouring prefixes spread over the sets.
#[inline(always)]
pub const fn source_set(key: u64) -> u32 {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SOURCE_SET_BITS)) as u32
}

/// One pair of the [`maps::SOURCES`] table and what it dropped since it took
/// its slot. A slot with no packets is empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSlot {
    /// The pair, as [`SourceKey::to_bits`].
    pub key: u64,
    pub packets: u64,
    pub bytes: u64,
    /// The set's clock when the pair last dropped a packet.
    pub used: u64,
}

/// One entry of the [`maps::SOURCES`] table (per CPU): [`SOURCE_WAYS`] pairs
/// and a clock that ticks once per drop counted in the set, which orders the
/// pairs by how recently they dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSet {
    pub clock: u64,
    pub slots: [SourceSlot; SOURCE_WAYS],
}

/// Bits of an IPv4 source the [`SourceKey`] keeps: a /24.
pub const SOURCE_PREFIX_V4: u8 = 24;
/// Bits of an IPv6 source the [`SourceKey`] keeps: a /48.
pub const SOURCE_PREFIX_V6: u8 = 48;

/// A pair of the [`maps::SOURCES`] table: who sent what the program dropped,
/// and why. Only drop verdicts write it. `prefix` holds the first three bytes
/// of an IPv4 source (IPv4-mapped IPv6 sources count as IPv4, as the program
/// judges them) or the first six of an IPv6 source, the rest zero. Eight
/// bytes, so the program compares and hashes one word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey {
    pub prefix: [u8; 6],
    /// [`Family::Ipv4`] or [`Family::Ipv6`], as a byte.
    pub family: u8,
    /// A drop [`Reason`], as a byte.
    pub reason: u8,
}

impl SourceKey {
    pub const fn family(&self) -> Option<Family> {
        match self.family {
            0 => Some(Family::Ipv4),
            1 => Some(Family::Ipv6),
            _ => None,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        Reason::ALL.get(self.reason as usize).copied()
    }

    /// The key as one word: its bytes, little-endian.
    pub const fn to_bits(&self) -> u64 {
        let p = self.prefix;
        u64::from_le_bytes([p[0], p[1], p[2], p[3], p[4], p[5], self.family, self.reason])
    }

    pub const fn from_bits(bits: u64) -> SourceKey {
        let b = bits.to_le_bytes();
        SourceKey {
            prefix: [b[0], b[1], b[2], b[3], b[4], b[5]],
            family: b[6],
            reason: b[7],
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made of integers, with explicit padding.
    unsafe impl aya::Pod for super::Control {}
    unsafe impl aya::Pod for super::SlotOptions {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceSlot {}
    unsafe impl aya::Pod for super::SourceSet {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_dense_and_distinct() {
        let mut seen = [false; COUNTER_ENTRIES as usize];
        for reason in Reason::ALL {
            for family in Family::ALL {
                let i = counter_index(reason, family) as usize;
                assert!(!seen[i], "{reason:?}/{family:?} collides");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn reason_order_matches_discriminants() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
        assert_eq!(Reason::ALL.iter().filter(|r| r.is_drop()).count(), 5);
    }

    #[test]
    fn map_names_are_distinct() {
        for (i, name) in maps::ALL.iter().enumerate() {
            assert!(!maps::ALL[..i].contains(name), "{name} twice");
        }
        assert_eq!(maps::ALL.len(), 11);
        assert_eq!(maps::ALL[0], maps::CONTROL);
    }

    #[test]
    fn empty_16_bits_cover_every_slot_family_and_16_once() {
        let mut seen = vec![0u64; EMPTY_16_ENTRIES as usize];
        for slot in 0..SLOTS {
            for v6 in [false, true] {
                for top in 0..=u16::MAX {
                    let word = &mut seen[empty_16_index(slot, v6, top) as usize];
                    assert_eq!(*word & empty_16_bit(top), 0, "{slot}/{v6}/{top:#x} twice");
                    *word |= empty_16_bit(top);
                }
            }
        }
        assert!(seen.iter().all(|word| *word == u64::MAX));
    }

    #[test]
    fn layouts_are_stable() {
        assert_eq!(core::mem::size_of::<Control>(), 16);
        assert_eq!(core::mem::size_of::<SlotOptions>(), 24);
        assert_eq!(core::mem::size_of::<Counter>(), 16);
        assert_eq!(core::mem::size_of::<SourceKey>(), 8);
        assert_eq!(core::mem::size_of::<SourceSlot>(), 32);
        assert_eq!(core::mem::size_of::<SourceSet>(), 136);
    }

    #[test]
    fn a_source_key_is_one_word_both_ways() {
        let key = SourceKey {
            prefix: [0x20, 0x01, 0x0d, 0xb8, 0x00, 0x07],
            family: Family::Ipv6 as u8,
            reason: Reason::DropEvasive as u8,
        };
        assert_eq!(SourceKey::from_bits(key.to_bits()), key);
        assert_eq!(
            key.to_bits() & 0xff,
            0x20,
            "little-endian: the first byte is lowest"
        );
    }

    #[test]
    fn neighbouring_prefixes_spread_over_the_sets() {
        // The 256 /24s of one /16 with one reason, and the 65,536 /48s of one
        // /32: a flood from one block must not pile into a few sets.
        let key = |prefix: [u8; 6], family: Family| {
            SourceKey {
                prefix,
                family: family as u8,
                reason: Reason::DropNotMemberTcp as u8,
            }
            .to_bits()
        };
        let mut sets: Vec<u32> = (0..=255u8)
            .map(|c| source_set(key([198, 51, c, 0, 0, 0], Family::Ipv4)))
            .collect();
        sets.sort_unstable();
        sets.dedup();
        assert!(sets.len() >= 200, "256 /24s in {} sets", sets.len());
        let mut load = vec![0u32; SOURCE_SETS as usize];
        for n in 0..=u16::MAX {
            let [hi, lo] = n.to_be_bytes();
            load[source_set(key([0x20, 0x01, 0x0d, 0xb8, hi, lo], Family::Ipv6)) as usize] += 1;
        }
        // 16 per set on average; a fair spread stays well under twice that.
        let fullest = load.iter().max().unwrap();
        assert!(
            *fullest <= 32,
            "the fullest set takes {fullest} of 65,536 /48s"
        );
    }
}
