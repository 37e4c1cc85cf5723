//! Counting a verdict: every packet under its (reason, family) in the per-CPU
//! counter array, and every drop under its source's /24 or /48 in the
//! per-source table (`xdpgate top`). Passes never touch the source table.
use xdpgate_common::{counter_index, source_set, Family, Reason, SourceSlot, SOURCE_WAYS};

use crate::{
    maps::{COUNTERS, SOURCES},
    parse::Addr,
};

/// A source prefix as one scalar: the little-endian bytes of its
/// `SourceKey` with the reason byte left zero, so it crosses into
/// [`xdpgate_count_source`] in one register.
pub type SourcePrefix = u64;
/// The frame showed no source (not IP, tagged too deep, a cut IP header), or
/// the packet passed.
pub const NO_SOURCE: SourcePrefix = u64::MAX;

/// The /24 of an IPv4 source or the /48 of an IPv6 one, with its family.
#[inline(always)]
fn source_prefix(source: Addr) -> SourcePrefix {
    match source {
        Addr::V4(a) => u64::from_le_bytes([a[0], a[1], a[2], 0, 0, 0, Family::Ipv4 as u8, 0]),
        Addr::V6(a) => {
            u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], Family::Ipv6 as u8, 0])
        }
    }
}

/// The source's prefix for a drop; nothing is computed for a pass.
#[inline(always)]
pub fn drop_prefix(reason: Reason, source: Addr) -> SourcePrefix {
    if reason.is_drop() {
        source_prefix(source)
    } else {
        NO_SOURCE
    }
}

/// The packet counted under its (reason, family), with its bytes.
#[inline(always)]
pub fn count(reason: Reason, family: Family, bytes: u64) {
    if let Some(counter) = COUNTERS.get_ptr_mut(counter_index(reason, family)) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
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
    let key = source | reason << 56;
    let Some(set) = SOURCES.get_ptr_mut(source_set(key)) else {
        return 0;
    };
    // SAFETY: per-CPU value, only this CPU writes it while we run.
    let set = unsafe { &mut *set };
    set.clock += 1;
    let now = set.clock;
    // The pair's slot if it has one; else the slot used least recently (an
    // empty one has never been used).
    let mut victim = 0;
    let mut oldest = u64::MAX;
    let mut way = 0;
    while way < SOURCE_WAYS {
        let slot = &mut set.slots[way];
        if slot.key == key && slot.packets != 0 {
            slot.packets += 1;
            slot.bytes += bytes;
            slot.used = now;
            return 0;
        }
        if slot.used < oldest {
            oldest = slot.used;
            victim = way;
        }
        way += 1;
    }
    if let Some(slot) = set.slots.get_mut(victim) {
        *slot = SourceSlot {
            key,
            packets: 1,
            bytes,
            used: now,
        };
    }
    0
}
