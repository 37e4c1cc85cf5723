//! The program's maps, each declared under the name `xdpgate_common::map_names!`
//! gives it, so userspace and the program cannot disagree on a name. Userspace
//! owns what is in them; the program reads the policy maps and writes only the
//! counters.
use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruPerCpuHashMap, PerCpuArray},
};
use xdpgate_common::{
    Control, Counter, SetMask, SlotOptions, SourceKey, V4KeyData, V6KeyData, COUNTER_ENTRIES,
    LPM_MAX_ENTRIES, PORT_ENTRIES, SOURCE_ENTRIES,
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
    // Per-CPU values: a drop adds to this CPU's cell without an atomic, and
    // the same prefix hit on several CPUs (RSS spreads its flows) bounces no
    // cache line. The LRU list stays common (no BPF_F_NO_COMMON_LRU): a
    // per-CPU list would split the bound per CPU, and a prefix's entry would
    // be evicted by whichever CPU happens to run short. (A per-CPU list makes
    // no hit cheaper either: it only takes the common list's lock off the
    // insert path, see docs/filter.md.)
    (SOURCES, $name:literal) => {
        #[map(name = $name)]
        pub static SOURCES: LruPerCpuHashMap<SourceKey, Counter> =
            LruPerCpuHashMap::with_max_entries(SOURCE_ENTRIES, 0);
    };
}

xdpgate_common::map_names!(declare_maps);
