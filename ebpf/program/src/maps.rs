//! The program's maps, each declared under the name `xdpgate_common::map_names!`
//! gives it, so userspace and the program cannot disagree on a name. Userspace
//! owns what is in them; the program reads the policy maps and writes only the
//! counters.
use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, PerCpuArray},
};
use xdpgate_common::{
    Control, Counter, SetMask, SlotOptions, SourceSet, V4KeyData, V6KeyData, COUNTER_ENTRIES,
    EMPTY_16_ENTRIES, LPM_MAX_ENTRIES, PORT_ENTRIES, SOURCE_SETS,
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
        pub static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
    };
    (SLOT_OPTIONS, $name:literal) => {
        #[map(name = $name)]
        pub static SLOT_OPTIONS: Array<SlotOptions> = Array::with_max_entries(2, 0);
    };
    (TCP_PORTS, $name:literal) => {
        #[map(name = $name)]
        pub static TCP_PORTS: Array<SetMask> = Array::with_max_entries(PORT_ENTRIES, 0);
    };
    (UDP_PORTS, $name:literal) => {
        #[map(name = $name)]
        pub static UDP_PORTS: Array<SetMask> = Array::with_max_entries(PORT_ENTRIES, 0);
    };
    (V4_SLOT0, $name:literal) => {
        #[map(name = $name)]
        pub static V4_SLOT0: LpmTrie<V4KeyData, SetMask> =
            LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
    };
    (V4_SLOT1, $name:literal) => {
        #[map(name = $name)]
        pub static V4_SLOT1: LpmTrie<V4KeyData, SetMask> =
            LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
    };
    (V6_SLOT0, $name:literal) => {
        #[map(name = $name)]
        pub static V6_SLOT0: LpmTrie<V6KeyData, SetMask> =
            LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
    };
    (V6_SLOT1, $name:literal) => {
        #[map(name = $name)]
        pub static V6_SLOT1: LpmTrie<V6KeyData, SetMask> =
            LpmTrie::with_max_entries(LPM_MAX_ENTRIES, 0);
    };
    (COUNTERS, $name:literal) => {
        #[map(name = $name)]
        pub static COUNTERS: PerCpuArray<Counter> =
            PerCpuArray::with_max_entries(COUNTER_ENTRIES, 0);
    };
    // Which /16s hold no prefix, per slot and family: the trie lookup costs
    // more than the rest of a drop together, and a flood from random sources
    // mostly comes from /16s an allow list never touches.
    (EMPTY_16S, $name:literal) => {
        #[map(name = $name)]
        pub static EMPTY_16S: Array<u64> = Array::with_max_entries(EMPTY_16_ENTRIES, 0);
    };
    // Per CPU, so a drop writes its own CPU's set without an atomic or a
    // lock, and the same prefix hit on several CPUs (RSS spreads its flows)
    // bounces no cache line; userspace sums a pair over the CPUs. An array,
    // so the verifier inlines the lookup, and a new pair costs what a known
    // one does: the kernel's LRU hash took 300-400 ns to insert a pair into
    // a full map, which a flood of random sources paid on every packet.
    (SOURCES, $name:literal) => {
        #[map(name = $name)]
        pub static SOURCES: PerCpuArray<SourceSet> = PerCpuArray::with_max_entries(SOURCE_SETS, 0);
    };
}

xdpgate_common::map_names!(declare_maps);
