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
    maps::{lpm_trie::Key, Array, LpmTrie, MapData, PerCpuArray},
    programs::{links::FdLink, xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use ipnet::{Ipv4Net, Ipv6Net};
use xdpgate_common::{
    counter_index, maps, Control, Counter, Family, Reason, SetMask, SlotOptions, V4KeyData,
    V6KeyData, ABI_VERSION, COUNTER_ENTRIES, STATE_ARMED, STATE_SLOT1,
};

use crate::policy::CompiledPolicy;

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
    #[error("no network interface named `{0}` (see `ip link`)")]
    NoSuchInterface(String),
    #[error("attaching XDP to `{interface}`: {source}")]
    Attach {
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
}

fn map_error(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> FilterError {
    move |source| FilterError::Map { map, source }
}

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Driver,
    /// Generic XDP, in the kernel's receive path, where the driver refused native.
    Generic,
}

impl AttachMode {
    pub const fn label(self) -> &'static str {
        match self {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic",
        }
    }
}

/// What a slot of the maps is known to contain.
#[derive(Clone, Debug)]
enum SlotContents {
    Known(Box<CompiledPolicy>),
    /// A write failed half-way: clear everything before reuse.
    Unknown,
}

/// The loaded program and typed handles on its maps.
pub struct Filter {
    ebpf: Ebpf,
    control: Array<MapData, Control>,
    slot_options: Array<MapData, SlotOptions>,
    tcp_ports: Array<MapData, SetMask>,
    udp_ports: Array<MapData, SetMask>,
    v4: [LpmTrie<MapData, V4KeyData, SetMask>; 2],
    v6: [LpmTrie<MapData, V6KeyData, SetMask>; 2],
    counters: PerCpuArray<MapData, Counter>,
    slots: [SlotContents; 2],
    retired_at: Option<Instant>,
    attachments: Vec<(String, XdpLinkId)>,
}

macro_rules! take_map {
    ($ebpf:expr, $name:expr) => {{
        let map = $ebpf
            .take_map($name)
            .ok_or(FilterError::MissingMap($name))?;
        map.try_into().map_err(map_error($name))?
    }};
}

impl Filter {
    /// Loads the embedded object and its program into the kernel (the
    /// verifier runs here). Nothing is attached yet, and the filter is unarmed.
    /// With `pin_dir`, the maps are pinned there (see [`Filter::pin`]).
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, FilterError> {
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .map_err(|e| FilterError::Load(Box::new(e)))?;
        if let Some(dir) = pin_dir {
            require_bpffs(dir)?;
            std::fs::create_dir_all(dir)
                .map_err(|e| FilterError::Pin(format!("creating {}: {e}", dir.display())))?;
            for (name, map) in ebpf.maps() {
                map.pin(dir.join(name))
                    .map_err(|e| FilterError::Pin(format!("pinning map {name}: {e}")))?;
            }
        }
        let program: &mut Xdp = ebpf
            .program_mut(maps::PROGRAM)
            .ok_or_else(|| FilterError::Load("no `xdpgate` program in the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| FilterError::Load(Box::new(e)))?;
        program.load().map_err(|e| FilterError::Load(Box::new(e)))?;
        let empty = || SlotContents::Known(Box::default());
        Ok(Filter {
            control: take_map!(ebpf, maps::CONTROL),
            slot_options: take_map!(ebpf, maps::SLOT_OPTIONS),
            tcp_ports: take_map!(ebpf, maps::TCP_PORTS),
            udp_ports: take_map!(ebpf, maps::UDP_PORTS),
            v4: [
                take_map!(ebpf, maps::V4_SLOT0),
                take_map!(ebpf, maps::V4_SLOT1),
            ],
            v6: [
                take_map!(ebpf, maps::V6_SLOT0),
                take_map!(ebpf, maps::V6_SLOT1),
            ],
            counters: take_map!(ebpf, maps::COUNTERS),
            slots: [empty(), empty()],
            retired_at: None,
            attachments: Vec::new(),
            ebpf,
        })
    }

    /// The loaded XDP program, for attaching or `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(maps::PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("checked in load")
    }

    /// Attaches in driver mode, falling back to generic mode where the driver
    /// refuses. The attachment lasts as long as this `Filter` (or its pin).
    pub fn attach(&mut self, interface: &str) -> Result<AttachMode, FilterError> {
        let exists = std::ffi::CString::new(interface)
            .map(|name| unsafe { libc::if_nametoindex(name.as_ptr()) } != 0)
            .unwrap_or(false);
        if !exists {
            return Err(FilterError::NoSuchInterface(interface.to_string()));
        }
        let program = self.program();
        let (id, mode) = match program.attach(interface, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::Driver),
            Err(native) => match program.attach(interface, XdpMode::Skb) {
                Ok(id) => {
                    log::warn!(
                        "{interface}: native XDP refused ({native}); attached in generic mode, \
                         which filters later in the receive path"
                    );
                    (id, AttachMode::Generic)
                }
                Err(source) => {
                    return Err(FilterError::Attach {
                        interface: interface.to_string(),
                        source,
                    })
                }
            },
        };
        self.attachments.push((interface.to_string(), id));
        Ok(mode)
    }

    /// The control word: armed, active slot, generation.
    pub fn control(&self) -> Result<Control, FilterError> {
        self.control.get(&0, 0).map_err(map_error(maps::CONTROL))
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
        self.control
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
                &mut self.tcp_ports,
                &old.tcp_ports,
                &policy.tcp_ports,
                maps::TCP_PORTS,
            ),
            (
                &mut self.udp_ports,
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
            &mut self.v4[slot as usize],
            v4_name,
            full_clear,
            &old.v4,
            &policy.v4,
            |n: &Ipv4Net| Key::new(n.prefix_len().into(), n.network().octets()),
        )?;
        sync_trie(
            &mut self.v6[slot as usize],
            v6_name,
            full_clear,
            &old.v6,
            &policy.v6,
            |n: &Ipv6Net| Key::new(n.prefix_len().into(), n.network().octets()),
        )?;

        self.slot_options
            .set(slot, policy.options, 0)
            .map_err(map_error(maps::SLOT_OPTIONS))
    }

    /// The kernel's counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, FilterError> {
        let mut cells = vec![Counter::default(); COUNTER_ENTRIES as usize];
        for (index, cell) in cells.iter_mut().enumerate() {
            let per_cpu = self
                .counters
                .get(&(index as u32), 0)
                .map_err(map_error(maps::COUNTERS))?;
            for value in per_cpu.iter() {
                cell.packets += value.packets;
                cell.bytes += value.bytes;
            }
        }
        Ok(Counters { cells })
    }

    /// Pins the program and every attachment under `dir` (a bpffs directory;
    /// the maps were pinned there by [`Filter::load`]), so that the filter
    /// outlives this process. The attachments
    /// are handed to their pins: dropping the `Filter` afterwards leaves them
    /// in force. `xdpgate detach` removes the pins and with them the filter.
    pub fn pin(&mut self, dir: &Path) -> Result<(), FilterError> {
        let pin_error =
            |what: String| move |e: aya::pin::PinError| FilterError::Pin(format!("{what}: {e}"));
        let attachments = std::mem::take(&mut self.attachments);
        let program = self.program();
        program
            .pin(dir.join("program"))
            .map_err(pin_error("pinning the program".into()))?;
        for (interface, id) in attachments {
            let link = program
                .take_link(id)
                .map_err(|e| FilterError::Pin(format!("{interface}: {e}")))?;
            let link: FdLink = link.try_into().map_err(|e| {
                FilterError::Pin(format!(
                    "{interface}: attached without a bpf_link ({e}), cannot pin"
                ))
            })?;
            link.pin(dir.join(format!("link_{interface}")))
                .map_err(pin_error(format!("pinning the link on {interface}")))?;
        }
        Ok(())
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
