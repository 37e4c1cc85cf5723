//! The verdict: what the policy says about a parsed [`Shape`]. It reads the
//! control word once, then the active slot's options and the port's set mask
//! (array maps the verifier turns into a few inline instructions), and asks
//! the one question that needs a helper call, the LPM lookup of the source,
//! only when the answer depends on it.
use aya_ebpf::maps::{lpm_trie::Key, Array};
use xdpgate_common::{
    empty_16_bit, empty_16_index, Family, Reason, SetMask, SlotOptions, V4KeyData, V6KeyData,
    OPT_FILTER_TUNNELS, OPT_STRICT, STATE_ARMED, STATE_SLOT1, TUNNEL_PROTOCOLS,
};

use crate::{
    count::{drop_prefix, SourcePrefix, NO_SOURCE},
    maps::{
        CONTROL, EMPTY_16S, SLOT_OPTIONS, TCP_PORTS, UDP_PORTS, V4_SLOT0, V4_SLOT1, V6_SLOT0,
        V6_SLOT1,
    },
    parse::{Addr, Seen, Shape, Transport},
};

/// What the verdict waits on once the shape is known: nothing, or whether
/// the source is in `sets`.
enum Question {
    Answered(Reason),
    Member { sets: SetMask, otherwise: Reason },
}

/// The sets bound to a port: one function per array, never inlined, for the
/// reason the tries have theirs (below). With one call site choosing its
/// array at run time, the verifier cannot inline the array lookup and leaves
/// the generic helper with its indirect call: 14 ns more on every TCP or UDP
/// packet, measured.
#[inline(never)]
fn tcp_port_sets(slot: u32, port: u16) -> SetMask {
    port_mask(&TCP_PORTS, slot, port)
}
#[inline(never)]
fn udp_port_sets(slot: u32, port: u16) -> SetMask {
    port_mask(&UDP_PORTS, slot, port)
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
    let otherwise = match transport.seen {
        Seen::Whole if transport.udp() => Reason::DropNotMemberUdp,
        Seen::Whole => Reason::DropNotMemberTcp,
        Seen::PortOnly => Reason::DropEvasive,
        Seen::Hidden => return Answered(Reason::DropEvasive),
        Seen::LaterFragment => return Answered(Reason::PassFragment),
        Seen::Other => {
            if options.flags & OPT_FILTER_TUNNELS != 0
                && TUNNEL_PROTOCOLS.contains(&transport.protocol)
            {
                return Member {
                    sets: options.tunnel_mask,
                    otherwise: Reason::DropTunnel,
                };
            }
            return Answered(Reason::PassOtherProtocol);
        }
    };
    let sets = if transport.udp() {
        udp_port_sets(slot, transport.port)
    } else {
        tcp_port_sets(slot, transport.port)
    };
    if sets == 0 {
        Answered(Reason::PassUnboundPort)
    } else if !transport.attempt && options.flags & OPT_STRICT == 0 {
        Answered(Reason::PassNotSyn)
    } else {
        Member { sets, otherwise }
    }
}

/// Whether the slot's trie for the family holds no prefix within or over
/// the /16 that starts with `top16`: then the source is in no set.
#[inline(always)]
fn in_empty_16(slot: u32, v6: bool, top16: u16) -> bool {
    match EMPTY_16S.get(empty_16_index(slot, v6, top16)) {
        Some(word) => word & empty_16_bit(top16) != 0,
        None => false,
    }
}

/// The mask of every set holding `addr`: the one LPM lookup, skipped when
/// the source's /16 holds no prefix.
#[inline(always)]
fn sets_of(addr: Addr, slot: u32) -> SetMask {
    match addr {
        Addr::V4(a) => {
            if in_empty_16(slot, false, u16::from_be_bytes([a[0], a[1]])) {
                return 0;
            }
            let key = Key::new(32, *a);
            if slot == 0 {
                v4_slot0(&key)
            } else {
                v4_slot1(&key)
            }
        }
        Addr::V6(a) => {
            if in_empty_16(slot, true, u16::from_be_bytes([a[0], a[1]])) {
                return 0;
            }
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
/// prefix when it is a drop and the frame showed a source (a frame tagged
/// too deep does not).
#[inline(always)]
pub fn judge(shape: Shape) -> (Reason, Family, SourcePrefix) {
    let family = match &shape {
        Shape::NotIp => return (Reason::PassNotIp, Family::Other, NO_SOURCE),
        Shape::DeepTags => Family::Other,
        Shape::Unparsed(family) | Shape::Ip(family, _, _) => *family,
    };

    // The control word, read once: armed, and which slot.
    let state = match CONTROL.get(0) {
        Some(control) => control.state,
        None => 0,
    };
    if state & STATE_ARMED == 0 {
        return (Reason::PassUnarmed, family, NO_SOURCE);
    }
    let slot = if state & STATE_SLOT1 != 0 { 1 } else { 0 };
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
            return (reason, family, drop_prefix(reason, source));
        }
    }
    let sets = sets_of(source, slot);
    let reason = if sets & options.deny_mask != 0 {
        Reason::DropDeny
    } else {
        match question {
            Question::Answered(reason) => reason,
            Question::Member { sets: wanted, .. } if sets & wanted != 0 => Reason::PassMember,
            Question::Member { otherwise, .. } => otherwise,
        }
    };
    (reason, family, drop_prefix(reason, source))
}
