//! The XDP filter from userspace: loads the embedded eBPF object, attaches it,
//! writes compiled policies into the inactive map slot and flips, and reads
//! the kernel's counters back as typed values.
//!
//! It does not decide policy ([`crate::policy`] does) and does not watch
//! files or networks (the daemon does). What is in force changes in exactly
//! one place, [`Filter::apply`], and only by a whole-slot swap.
use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, Xdp},
    Ebpf, EbpfLoader,
};
use ipnet::{Ipv4Net, Ipv6Net};
use xdpgate_common::{
    counter_index, maps, Control, Counter, Family, Reason, SetMask, SlotOptions, V4KeyData,
    V6KeyData, ABI_VERSION, COUNTER_ENTRIES, STATE_ARMED, STATE_SLOT1,
};

use crate::policy::CompiledPolicy;

pub mod attach;
pub mod bpfsys;
mod empty_16s;
pub mod pins;
pub mod route;
pub mod sources;

pub use attach::{AttachHow, AttachMode, AttachOutcome, XdpModeChoice};
pub use route::default_route_interface;
pub use sources::{Sources, TopOrder, TopSource};

pub use pins::{detach_pinned, PinLayout, PinnedFilter};

/// The XDP program, built for bpfel-unknown-none by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpgate"));
/// Baseline programs for the benchmarks (`baseline_pass`, `baseline_minimal`).
pub static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpgate-baseline"));

/// How long the slot that was just retired is left alone before it is
/// rewritten. A packet that read the old active slot finishes in microseconds
/// (XDP runs with preemption off); this is ample margin.
const RETIRED_SLOT_QUIET: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("loading the XDP program into the kernel: {0}")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the eBPF object has no map `{0}` (built from another version of xdpgate?)")]
    MissingMap(&'static str),
    #[error("map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinning: {0}")]
    Pin(String),
    #[error("nothing is pinned under {} (is the daemon running with this pin directory?)", .0.display())]
    NotPinned(std::path::PathBuf),
    #[error("no network interface named `{0}` (see `ip link`)")]
    NoSuchInterface(String),
    #[error("attaching XDP to `{interface}`: {source}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "attaching XDP to `{interface}` in {mode} mode, as filter.xdp_mode asks (no fallback; \
         `auto` falls back to generic): {source}"
    )]
    AttachInMode {
        interface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

fn map_error(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> FilterError {
    move |source| FilterError::Map { map, source }
}

/// What a slot of the maps is known to contain.
#[derive(Clone, Debug)]
enum SlotContents {
    Known(Box<CompiledPolicy>),
    /// A write failed half-way: clear everything before reuse.
    Unknown,
}

/// Typed handles on every map of the program, however they were obtained
/// (from a load, or from pins).
pub(crate) struct KernelMaps {
    pub control: Array<MapData, Control>,
    pub slot_options: Array<MapData, SlotOptions>,
    pub tcp_ports: Array<MapData, SetMask>,
    pub udp_ports: Array<MapData, SetMask>,
    pub v4: [LpmTrie<MapData, V4KeyData, SetMask>; 2],
    pub v6: [LpmTrie<MapData, V6KeyData, SetMask>; 2],
    pub counters: PerCpuArray<MapData, Counter>,
    /// Absent only under pins a daemon from before the map existed left.
    pub sources: Option<sources::SourceMap>,
    /// Absent in an object from before the map existed (`--compare`), or
    /// under pins such a build left (read-only views of them).
    pub empty_16s: Option<Array<MapData, u64>>,
}

impl KernelMaps {
    /// `take(name)` hands over the map of that name.
    pub(crate) fn from_source(
        mut take: impl FnMut(&'static str) -> Result<Map, FilterError>,
    ) -> Result<Self, FilterError> {
        fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
            name: &'static str,
            map: Map,
        ) -> Result<T, FilterError> {
            T::try_from(map).map_err(map_error(name))
        }
        let mut get = |name: &'static str| take(name);
        Ok(KernelMaps {
            control: typed(maps::CONTROL, get(maps::CONTROL)?)?,
            slot_options: typed(maps::SLOT_OPTIONS, get(maps::SLOT_OPTIONS)?)?,
            tcp_ports: typed(maps::TCP_PORTS, get(maps::TCP_PORTS)?)?,
            udp_ports: typed(maps::UDP_PORTS, get(maps::UDP_PORTS)?)?,
            v4: [
                typed(maps::V4_SLOT0, get(maps::V4_SLOT0)?)?,
                typed(maps::V4_SLOT1, get(maps::V4_SLOT1)?)?,
            ],
            v6: [
                typed(maps::V6_SLOT0, get(maps::V6_SLOT0)?)?,
                typed(maps::V6_SLOT1, get(maps::V6_SLOT1)?)?,
            ],
            counters: typed(maps::COUNTERS, get(maps::COUNTERS)?)?,
            sources: get(maps::SOURCES)
                .ok()
                .map(|map| typed(maps::SOURCES, map))
                .transpose()?,
            empty_16s: get(maps::EMPTY_16S)
                .ok()
                .map(|map| typed(maps::EMPTY_16S, map))
                .transpose()?,
        })
    }
}

/// The loaded program and typed handles on its maps.
pub struct Filter {
    ebpf: Ebpf,
    maps: KernelMaps,
    slots: [SlotContents; 2],
    /// The empty-/16 bitmaps this process wrote into each slot; `None`
    /// until it has written one whole (the map may hold anything before).
    written_16s: [Option<Vec<u64>>; 2],
    retired_at: Option<Instant>,
    attachments: Vec<(String, XdpLinkId)>,
    pins: Option<pins::PinLayout>,
    adoption: Adoption,
}

/// What the daemon found of a previous instance's maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// Maps of its own, never pinned (tests, benchmarks).
    Private,
    /// Nothing was pinned: fresh maps, now pinned.
    Fresh,
    /// The pinned maps match this build and are used: counters and the policy
    /// in force carry on.
    Reused,
    /// Something was pinned that this build cannot use (named in `reason`);
    /// it was unpinned and fresh maps were pinned in its place.
    Replaced { reason: String },
}

impl Filter {
    /// Loads the embedded object and its program into the kernel (the
    /// verifier runs here) with maps of its own. Nothing is attached yet, and
    /// the filter is unarmed. This is what tests and benchmarks use; the
    /// daemon uses [`Filter::open_pinned`].
    pub fn load() -> Result<Self, FilterError> {
        Self::load_object(OBJECT)
    }

    /// As [`Filter::load`], from another build of the program (`cargo xtask
    /// bench xdp --compare` measures two builds in one run). An object from
    /// before the per-source table loads; [`Filter::sources`] then says so.
    pub fn load_object(object: &[u8]) -> Result<Self, FilterError> {
        let ebpf = EbpfLoader::new()
            .load(object)
            .map_err(|e| FilterError::Load(Box::new(e)))?;
        Self::from_ebpf(ebpf, None, Adoption::Private)
    }

    /// Loads the program with its maps pinned under `pins` (see
    /// [`pins::PinLayout`]). Maps a previous instance pinned there are reused
    /// when they match this build, so the counters and the policy in force
    /// carry on; maps that do not match (another ABI version, another shape)
    /// are unpinned and replaced by fresh ones, which is reported in
    /// [`Filter::adoption`]. Either way the program that is attached now keeps
    /// filtering on whatever maps it holds until [`Filter::attach_pinned`]
    /// swaps this one in, after a policy has been applied.
    pub fn open_pinned(pins: &pins::PinLayout) -> Result<Self, FilterError> {
        require_bpffs(pins.root())?;
        pins.create_dirs()?;
        // A throwaway load gives the exact shape this build expects of every
        // map, to compare with what is pinned.
        let reference = EbpfLoader::new()
            .load(OBJECT)
            .map_err(|e| FilterError::Load(Box::new(e)))?;
        let mut expected = Vec::new();
        for (name, map) in reference.maps() {
            let info = match map {
                Map::Array(data) | Map::PerCpuArray(data) | Map::LpmTrie(data) => data.info(),
                other => {
                    return Err(FilterError::Pin(format!(
                        "map {name} is of a kind this build does not pin: {other:?}"
                    )))
                }
            }
            .map_err(|e| FilterError::Pin(format!("reading map {name}: {e}")))?;
            expected.push(pins::MapShape::of(name, &info)?);
        }
        drop(reference);
        let adoption = pins.check_pinned_maps(&expected)?;
        for name in pins.remove_retired_maps(&expected)? {
            log::info!(
                "unpinned {name} from {}: this build does not use that map",
                pins.maps_dir().display()
            );
        }
        if let Adoption::Replaced { reason } = &adoption {
            log::warn!(
                "the maps pinned under {} do not match this build ({reason}); \
                 the filter in force keeps running on them until the new program is swapped in \
                 with fresh maps; counters restart from zero",
                pins.maps_dir().display()
            );
            pins.remove_maps()?;
        }
        let paths: Vec<(String, std::path::PathBuf)> = expected
            .iter()
            .map(|shape| (shape.name.clone(), pins.map_path(&shape.name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        let ebpf = loader
            .load(OBJECT)
            .map_err(|e| FilterError::Load(Box::new(e)))?;
        let mut filter = Self::from_ebpf(ebpf, Some(pins.clone()), adoption)?;
        if filter.adoption == Adoption::Reused {
            // The active slot holds the previous instance's policy; neither
            // slot's exact contents are known, so the next write clears first.
            filter.slots = [SlotContents::Unknown, SlotContents::Unknown];
        }
        pins.pin_program(filter.program())?;
        Ok(filter)
    }

    fn from_ebpf(
        mut ebpf: Ebpf,
        pins: Option<pins::PinLayout>,
        adoption: Adoption,
    ) -> Result<Self, FilterError> {
        let program: &mut Xdp = ebpf
            .program_mut(maps::PROGRAM)
            .ok_or_else(|| FilterError::Load("no `xdpgate` program in the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| FilterError::Load(Box::new(e)))?;
        program.load().map_err(|e| FilterError::Load(Box::new(e)))?;
        let empty = || SlotContents::Known(Box::default());
        let maps = KernelMaps::from_source(|name| {
            ebpf.take_map(name).ok_or(FilterError::MissingMap(name))
        })?;
        Ok(Filter {
            maps,
            slots: [empty(), empty()],
            written_16s: [None, None],
            retired_at: None,
            attachments: Vec::new(),
            pins,
            adoption,
            ebpf,
        })
    }

    /// What [`Filter::open_pinned`] found under the pin directory.
    pub fn adoption(&self) -> &Adoption {
        &self.adoption
    }

    /// The loaded XDP program, for attaching or `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(maps::PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("checked in load")
    }

    /// The control word: armed, active slot, generation.
    pub fn control(&self) -> Result<Control, FilterError> {
        self.maps
            .control
            .get(&0, 0)
            .map_err(map_error(maps::CONTROL))
    }

    /// Writes `policy` into the inactive slot, then makes it active in one
    /// write (which also arms the filter). Packets see the old policy or the
    /// new one, never a mix. On error the active policy is untouched.
    /// Returns the new generation.
    pub fn apply(&mut self, policy: &CompiledPolicy) -> Result<u64, FilterError> {
        let control = self.control()?;
        let target = if control.armed() {
            1 - control.active_slot()
        } else {
            control.active_slot()
        };
        if let Some(retired_at) = self.retired_at {
            let quiet_until = retired_at + RETIRED_SLOT_QUIET;
            if let Some(wait) = quiet_until.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }

        let previous = std::mem::replace(&mut self.slots[target as usize], SlotContents::Unknown);
        self.write_slot(target, &previous, policy)?;
        self.slots[target as usize] = SlotContents::Known(Box::new(policy.clone()));

        let generation = control.generation + 1;
        let state = STATE_ARMED | if target == 1 { STATE_SLOT1 } else { 0 };
        let next = Control {
            state,
            abi_version: ABI_VERSION,
            generation,
        };
        self.maps
            .control
            .set(0, next, 0)
            .map_err(map_error(maps::CONTROL))?;
        if control.armed() {
            self.retired_at = Some(Instant::now());
        }
        Ok(generation)
    }

    /// Makes the slot's maps hold exactly `policy`, touching only entries that
    /// differ from what the slot held before.
    fn write_slot(
        &mut self,
        slot: u32,
        previous: &SlotContents,
        policy: &CompiledPolicy,
    ) -> Result<(), FilterError> {
        let empty = CompiledPolicy::default();
        let (old, full_clear) = match previous {
            SlotContents::Known(p) => (p.as_ref(), false),
            SlotContents::Unknown => (&empty, true),
        };
        let base = slot << 16;
        for (ports, old_ports, new_ports, name) in [
            (
                &mut self.maps.tcp_ports,
                &old.tcp_ports,
                &policy.tcp_ports,
                maps::TCP_PORTS,
            ),
            (
                &mut self.maps.udp_ports,
                &old.udp_ports,
                &policy.udp_ports,
                maps::UDP_PORTS,
            ),
        ] {
            if full_clear {
                for port in 0..=u16::MAX {
                    if !new_ports.contains_key(&port) {
                        ports
                            .set(base | port as u32, 0, 0)
                            .map_err(map_error(name))?;
                    }
                }
            } else {
                for port in old_ports.keys().filter(|p| !new_ports.contains_key(p)) {
                    ports
                        .set(base | *port as u32, 0, 0)
                        .map_err(map_error(name))?;
                }
            }
            for (port, mask) in new_ports {
                if old_ports.get(port) != Some(mask) || full_clear {
                    ports
                        .set(base | *port as u32, *mask, 0)
                        .map_err(map_error(name))?;
                }
            }
        }

        let v4_name = if slot == 0 {
            maps::V4_SLOT0
        } else {
            maps::V4_SLOT1
        };
        let v6_name = if slot == 0 {
            maps::V6_SLOT0
        } else {
            maps::V6_SLOT1
        };
        sync_trie(
            &mut self.maps.v4[slot as usize],
            v4_name,
            full_clear,
            &old.v4,
            &policy.v4,
            |n: &Ipv4Net| Key::new(n.prefix_len().into(), n.network().octets()),
        )?;
        sync_trie(
            &mut self.maps.v6[slot as usize],
            v6_name,
            full_clear,
            &old.v6,
            &policy.v6,
            |n: &Ipv6Net| Key::new(n.prefix_len().into(), n.network().octets()),
        )?;

        self.write_empty_16s(slot, policy)?;
        self.maps
            .slot_options
            .set(slot, policy.options, 0)
            .map_err(map_error(maps::SLOT_OPTIONS))
    }

    /// Makes the slot's empty-/16 bitmaps match `policy`'s tries, writing
    /// only the words that differ from what this process wrote there last.
    fn write_empty_16s(&mut self, slot: u32, policy: &CompiledPolicy) -> Result<(), FilterError> {
        let Some(map) = self.maps.empty_16s.as_mut() else {
            return Ok(());
        };
        let new = empty_16s::bitmaps(policy);
        let old = self.written_16s[slot as usize].take();
        let base = slot * new.len() as u32;
        for (i, word) in new.iter().enumerate() {
            if old.as_ref().is_none_or(|old| old[i] != *word) {
                map.set(base + i as u32, word, 0)
                    .map_err(map_error(maps::EMPTY_16S))?;
            }
        }
        self.written_16s[slot as usize] = Some(new);
        Ok(())
    }

    /// The kernel's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, FilterError> {
        pins::sum_counters(&self.maps.counters)
    }

    /// Drops per source prefix and reason, summed over CPUs.
    pub fn sources(&self) -> Result<Sources, FilterError> {
        sources::read_sources(self.maps.sources.as_ref())
    }
}

/// Pins only work on a bpf filesystem; say so plainly instead of letting the
/// pin fail with a bare errno.
fn require_bpffs(dir: &Path) -> Result<(), FilterError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let parent = dir.parent().unwrap_or(dir);
    let path = std::ffi::CString::new(parent.as_os_str().as_encoded_bytes())
        .map_err(|_| FilterError::Pin(format!("{} is not a usable path", dir.display())))?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: path is NUL-terminated and stat is a valid out-pointer.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    if rc != 0 || stat.f_type as i64 != BPF_FS_MAGIC {
        return Err(FilterError::Pin(format!(
            "{} is not on a bpf filesystem; mount it with `mount -t bpf bpf /sys/fs/bpf` \
             (or run `cargo xtask setup`)",
            parent.display()
        )));
    }
    Ok(())
}

/// Makes a trie hold exactly `new`: removes what only `old` has, writes what
/// changed. With `full_clear` every key in the map is removed first.
fn sync_trie<N: Ord, K: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, SetMask>,
    name: &'static str,
    full_clear: bool,
    old: &BTreeMap<N, SetMask>,
    new: &BTreeMap<N, SetMask>,
    key_of: impl Fn(&N) -> Key<K>,
) -> Result<(), FilterError> {
    if full_clear {
        let keys: Vec<Key<K>> = trie
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_error(name))?;
        for key in keys {
            trie.remove(&key).map_err(map_error(name))?;
        }
    } else {
        for net in old.keys().filter(|n| !new.contains_key(n)) {
            trie.remove(&key_of(net)).map_err(map_error(name))?;
        }
    }
    for (net, mask) in new {
        if full_clear || old.get(net) != Some(mask) {
            trie.insert(&key_of(net), *mask, 0)
                .map_err(map_error(name))?;
        }
    }
    Ok(())
}

/// The kernel's per-reason, per-family counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    cells: Vec<Counter>,
}

impl Counters {
    fn from_cells(cells: Vec<Counter>) -> Counters {
        Counters { cells }
    }

    /// Counters with the given value for every (reason, family) cell.
    pub fn from_fn(mut value: impl FnMut(Reason, Family) -> Counter) -> Counters {
        let mut cells = vec![Counter::default(); COUNTER_ENTRIES as usize];
        for reason in Reason::ALL {
            for family in Family::ALL {
                cells[counter_index(reason, family) as usize] = value(reason, family);
            }
        }
        Counters { cells }
    }

    pub fn get(&self, reason: Reason, family: Family) -> Counter {
        self.cells
            .get(counter_index(reason, family) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Every (reason, family) pair with its counter, including zeros.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, Family, Counter)> + '_ {
        Reason::ALL.into_iter().flat_map(move |reason| {
            Family::ALL
                .into_iter()
                .map(move |family| (reason, family, self.get(reason, family)))
        })
    }

    pub fn dropped_packets(&self) -> u64 {
        self.iter()
            .filter(|(r, _, _)| r.is_drop())
            .map(|(_, _, c)| c.packets)
            .sum()
    }

    pub fn passed_packets(&self) -> u64 {
        self.iter()
            .filter(|(r, _, _)| !r.is_drop())
            .map(|(_, _, c)| c.packets)
            .sum()
    }

    /// What changed between `earlier` and `self`, cell by cell.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let cells = self
            .iter()
            .map(|(r, f, c)| {
                let e = earlier.get(r, f);
                Counter {
                    packets: c.packets.saturating_sub(e.packets),
                    bytes: c.bytes.saturating_sub(e.bytes),
                }
            })
            .collect();
        Counters { cells }
    }
}
