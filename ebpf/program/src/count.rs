//! Counting a verdict: every packet under its (reason, family) in the per-CPU
//! counter array, and every drop under its source's /24 or /48 in the
//! per-source LRU map (`xdpgate top`). Passes never touch the source map.
use aya_ebpf::bindings::BPF_NOEXIST;
use xdpgate_common::{counter_index, Counter, Family, Reason, SourceKey};

use crate::{
    maps::{COUNTERS, SOURCES},
    parse::Addr,
};

/// A source prefix as one scalar: the little-endian bytes of its
/// [`SourceKey`] with the reason byte left zero, so it crosses into
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
