//! The filter as it lives in bpffs, independent of any process: where the
//! pins go, how a new instance decides whether it can adopt them, how
//! `xdpgate detach` removes them, and a read-only view ([`PinnedFilter`]) that
//! the CLI and the admin listener use to read the kernel's state.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/xdpgate`):
//!
//! ```text
//! maps/<MAP>                 every map of the program, by its name in the object
//! program                    the program most recently loaded
//! links/driver/<interface>   an XDP link in native mode
//! links/generic/<interface>  an XDP link in generic mode
//! ```
//!
//! The links are what keep the filter on the interfaces when no process
//! holds it. The maps are what a restarted daemon adopts, so counters carry
//! on and the policy in force stays in force until the new one is applied.
use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::maps::{lpm_trie::Key, Array, Map, MapData, MapInfo, PerCpuArray};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use xdpgate_common::{
    maps, Control, Counter, Reason, SetMask, SlotOptions, ABI_VERSION, COUNTER_ENTRIES,
};

use super::{bpfsys, Adoption, AttachMode, Counters, FilterError, KernelMaps};

/// Where one filter's pins live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLayout {
    root: PathBuf,
}

const MODES: [AttachMode; 2] = [AttachMode::Driver, AttachMode::Generic];

fn pin_error(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> FilterError {
    move |e| FilterError::Pin(format!("{what}: {e}"))
}

/// A pinned XDP link found under `links/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedLinkEntry {
    pub interface: String,
    pub mode: AttachMode,
    pub path: PathBuf,
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn program_path(&self) -> PathBuf {
        self.root.join("program")
    }

    fn links_dir(&self, mode: AttachMode) -> PathBuf {
        self.root.join("links").join(mode.label())
    }

    pub fn link_path(&self, interface: &str, mode: AttachMode) -> PathBuf {
        self.links_dir(mode).join(interface)
    }

    pub fn create_dirs(&self) -> Result<(), FilterError> {
        for dir in [
            self.maps_dir(),
            self.links_dir(AttachMode::Driver),
            self.links_dir(AttachMode::Generic),
        ] {
            fs::create_dir_all(&dir).map_err(pin_error(format!("creating {}", dir.display())))?;
        }
        Ok(())
    }

    /// Whether the pinned maps, if any, can be used by a program of this
    /// build: each must have the type, key, value and size this build
    /// expects, and the control word must speak this ABI version.
    pub(super) fn check_pinned_maps(&self, expected: &[MapShape]) -> Result<Adoption, FilterError> {
        let mut found_any = false;
        for shape in expected {
            let path = self.map_path(&shape.name);
            if !path.exists() {
                continue;
            }
            found_any = true;
            let data = match MapData::from_pin(&path) {
                Ok(data) => data,
                Err(e) => {
                    return Ok(Adoption::Replaced {
                        reason: format!("map {} cannot be opened: {e}", shape.name),
                    })
                }
            };
            let pinned = MapShape::of(
                &shape.name,
                &data.info().map_err(|e| {
                    FilterError::Pin(format!("reading pinned map {}: {e}", shape.name))
                })?,
            )?;
            if let Some(difference) = shape.difference(&pinned) {
                return Ok(Adoption::Replaced { reason: difference });
            }
            if shape.name == maps::CONTROL {
                let control: Array<MapData, Control> = Array::try_from(
                    Map::from_map_data(data).map_err(|e| FilterError::Pin(e.to_string()))?,
                )
                .map_err(|e| FilterError::Pin(e.to_string()))?;
                let word = control.get(&0, 0).map_err(|e| {
                    FilterError::Pin(format!("reading the pinned control word: {e}"))
                })?;
                if word.abi_version != 0 && word.abi_version != ABI_VERSION {
                    return Ok(Adoption::Replaced {
                        reason: format!(
                            "the pinned maps speak ABI version {}, this build speaks {ABI_VERSION}",
                            word.abi_version
                        ),
                    });
                }
            }
        }
        Ok(if found_any {
            Adoption::Reused
        } else {
            Adoption::Fresh
        })
    }

    /// Unpins the maps this build does not know (a retired map of an earlier
    /// build, such as the per-source LRU map that became a per-CPU table), and
    /// names them. A program that is attached keeps the maps it holds.
    pub(super) fn remove_retired_maps(
        &self,
        expected: &[MapShape],
    ) -> Result<Vec<String>, FilterError> {
        let dir = self.maps_dir();
        let mut retired = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(retired),
            Err(e) => return Err(pin_error(format!("reading {}", dir.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(pin_error(format!("reading {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if expected.iter().any(|shape| shape.name == name) {
                continue;
            }
            fs::remove_file(entry.path())
                .map_err(pin_error(format!("unpinning {}", entry.path().display())))?;
            retired.push(name);
        }
        Ok(retired)
    }

    /// Unpins every map. A program that is attached keeps the maps it holds.
    pub(super) fn remove_maps(&self) -> Result<(), FilterError> {
        let dir = self.maps_dir();
        for entry in fs::read_dir(&dir).map_err(pin_error(format!("reading {}", dir.display())))? {
            let entry = entry.map_err(pin_error(format!("reading {}", dir.display())))?;
            fs::remove_file(entry.path())
                .map_err(pin_error(format!("unpinning {}", entry.path().display())))?;
        }
        Ok(())
    }

    pub(super) fn pin_program(&self, program: &mut aya::programs::Xdp) -> Result<(), FilterError> {
        let path = self.program_path();
        if path.exists() {
            fs::remove_file(&path).map_err(pin_error(format!("unpinning {}", path.display())))?;
        }
        program.pin(&path).map_err(|e| {
            FilterError::Pin(format!("pinning the program at {}: {e}", path.display()))
        })
    }

    /// Every link pinned under `links/`.
    pub fn pinned_links(&self) -> Vec<PinnedLinkEntry> {
        let mut links = Vec::new();
        for mode in MODES {
            let Ok(entries) = fs::read_dir(self.links_dir(mode)) else {
                continue;
            };
            for entry in entries.flatten() {
                links.push(PinnedLinkEntry {
                    interface: entry.file_name().to_string_lossy().into_owned(),
                    mode,
                    path: entry.path(),
                });
            }
        }
        links.sort_by(|a, b| a.interface.cmp(&b.interface));
        links
    }

    /// The pinned link that still filters `interface` (index `ifindex`), if
    /// any. A pin whose link lost its interface (deleted and re-created, say)
    /// is removed: the kernel already took that program off.
    pub(super) fn live_link(
        &self,
        interface: &str,
        ifindex: u32,
    ) -> Result<Option<(AttachMode, PathBuf)>, FilterError> {
        for entry in self
            .pinned_links()
            .into_iter()
            .filter(|l| l.interface == interface)
        {
            let fd = bpfsys::obj_get(&entry.path)
                .map_err(pin_error(format!("opening {}", entry.path.display())))?;
            let info = bpfsys::link_info(&fd)
                .map_err(pin_error(format!("reading {}", entry.path.display())))?;
            if info.xdp_ifindex == Some(ifindex) {
                return Ok(Some((entry.mode, entry.path)));
            }
            log::warn!(
                "{}: the pinned link no longer filters {interface} (interface index {:?}, now {ifindex}); removing the stale pin",
                entry.path.display(),
                info.xdp_ifindex
            );
            fs::remove_file(&entry.path)
                .map_err(pin_error(format!("removing {}", entry.path.display())))?;
        }
        Ok(None)
    }

    /// Takes the filter off every pinned interface not in `keep` (it was
    /// removed from the config) and unpins it. Returns the interfaces released.
    pub fn release_unlisted(&self, keep: &[String]) -> Result<Vec<String>, FilterError> {
        let mut released = Vec::new();
        for entry in self.pinned_links() {
            if keep.contains(&entry.interface) {
                continue;
            }
            detach_link(&entry.path)?;
            released.push(entry.interface);
        }
        Ok(released)
    }
}

fn detach_link(path: &Path) -> Result<(), FilterError> {
    let fd = bpfsys::obj_get(path).map_err(pin_error(format!("opening {}", path.display())))?;
    bpfsys::link_detach(&fd).map_err(pin_error(format!("detaching {}", path.display())))?;
    fs::remove_file(path).map_err(pin_error(format!("unpinning {}", path.display())))
}

/// What `xdpgate detach` did.
#[derive(Debug, Default)]
pub struct Detached {
    pub interfaces: Vec<String>,
    pub removed_dir: bool,
}

/// Takes the filter off every interface it is pinned on, now, even while a
/// daemon still runs (`BPF_LINK_DETACH`), and removes every pin under `root`.
pub fn detach_pinned(root: &Path) -> Result<Detached, FilterError> {
    let layout = PinLayout::new(root);
    let mut detached = Detached::default();
    if !root.exists() {
        return Ok(detached);
    }
    for entry in layout.pinned_links() {
        detach_link(&entry.path)?;
        detached.interfaces.push(entry.interface);
    }
    fs::remove_dir_all(root).map_err(pin_error(format!("removing {}", root.display())))?;
    detached.removed_dir = true;
    Ok(detached)
}

/// The shape of a map, to tell whether a pinned map fits this build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MapShape {
    pub name: String,
    map_type: String,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

impl MapShape {
    pub(super) fn of(name: &str, info: &MapInfo) -> Result<Self, FilterError> {
        let map_type = info
            .map_type()
            .map(|t| format!("{t:?}"))
            .map_err(|e| FilterError::Pin(format!("map {name}: {e}")))?;
        Ok(MapShape {
            name: name.to_string(),
            map_type,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        })
    }

    fn difference(&self, pinned: &MapShape) -> Option<String> {
        let field = |what: &str, want: String, have: String| {
            (want != have).then(|| {
                format!(
                    "map {} has {what} {have} pinned, this build needs {want}",
                    self.name
                )
            })
        };
        field("type", self.map_type.clone(), pinned.map_type.clone())
            .or_else(|| {
                field(
                    "key size",
                    self.key_size.to_string(),
                    pinned.key_size.to_string(),
                )
            })
            .or_else(|| {
                field(
                    "value size",
                    self.value_size.to_string(),
                    pinned.value_size.to_string(),
                )
            })
            .or_else(|| {
                field(
                    "max entries",
                    self.max_entries.to_string(),
                    pinned.max_entries.to_string(),
                )
            })
    }
}

/// The kernel's state of a pinned filter, read through its pins: what the
/// CLI shows and the admin listener exports, with or without a daemon.
pub struct PinnedFilter {
    layout: PinLayout,
    maps: KernelMaps,
}

/// A pinned link and whether it still filters its interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub interface: String,
    pub mode: AttachMode,
    /// The link is still attached to an interface (the kernel detaches a
    /// link whose interface is removed).
    pub live: bool,
    pub program_id: u32,
}

/// Bound ports of a slot: destination port -> sets allowed, TCP then UDP.
pub type BoundPorts = (BTreeMap<u16, SetMask>, BTreeMap<u16, SetMask>);

/// The transport a `check` asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp(u16),
    Udp(u16),
}

/// What the live policy does with a connection attempt from one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub armed: bool,
    pub generation: u64,
    /// The address as the kernel judges it (IPv4-mapped IPv6 becomes IPv4).
    pub source: IpAddr,
    /// The longest prefix in the active slot that covers the source, and the
    /// sets (as a mask) it belongs to.
    pub matched: Option<(IpNet, SetMask)>,
    /// Sets denied on every port that the source is in.
    pub denied_by: SetMask,
    /// For a given transport: the sets bound to that port (0 = unbound) and
    /// the verdict for a connection attempt (TCP SYN or UDP datagram).
    pub port: Option<(Transport, SetMask, Reason)>,
}

impl PinnedFilter {
    pub fn open(root: &Path) -> Result<Self, FilterError> {
        let layout = PinLayout::new(root);
        if !layout.maps_dir().exists() {
            return Err(FilterError::NotPinned(root.to_path_buf()));
        }
        let maps = KernelMaps::from_source(|name| {
            let path = layout.map_path(name);
            let data = MapData::from_pin(&path).map_err(|e| {
                FilterError::Pin(format!(
                    "{}: {e} (is xdpgate running, or has it run, with this pin directory?)",
                    path.display()
                ))
            })?;
            Map::from_map_data(data)
                .map_err(|e| FilterError::Pin(format!("{}: {e}", path.display())))
        })?;
        Ok(PinnedFilter { maps, layout })
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    pub fn control(&self) -> Result<Control, FilterError> {
        self.maps
            .control
            .get(&0, 0)
            .map_err(|source| FilterError::Map {
                map: maps::CONTROL,
                source,
            })
    }

    pub fn counters(&self) -> Result<Counters, FilterError> {
        sum_counters(&self.maps.counters)
    }

    /// Drops per source prefix and reason (`xdpgate top`).
    pub fn sources(&self) -> Result<super::Sources, FilterError> {
        super::sources::read_sources(self.maps.sources.as_ref())
    }

    /// Every pinned link, and whether it still filters its interface here.
    pub fn links(&self) -> Vec<LinkState> {
        self.layout
            .pinned_links()
            .into_iter()
            .map(|entry| {
                let info = bpfsys::obj_get(&entry.path)
                    .and_then(|fd| bpfsys::link_info(&fd))
                    .ok();
                LinkState {
                    live: info.is_some_and(|i| i.xdp_ifindex.is_some_and(|index| index != 0)),
                    program_id: info.map(|i| i.program_id).unwrap_or(0),
                    interface: entry.interface,
                    mode: entry.mode,
                }
            })
            .collect()
    }

    pub fn options(&self, slot: u32) -> Result<SlotOptions, FilterError> {
        self.maps
            .slot_options
            .get(&slot, 0)
            .map_err(|source| FilterError::Map {
                map: maps::SLOT_OPTIONS,
                source,
            })
    }

    /// The bound ports of a slot: port -> sets allowed, for TCP and UDP.
    pub fn bound_ports(&self, slot: u32) -> Result<BoundPorts, FilterError> {
        let read = |array: &Array<MapData, SetMask>, name: &'static str| {
            let mut bound = BTreeMap::new();
            for port in 0..=u16::MAX {
                let mask = array
                    .get(&((slot << 16) | port as u32), 0)
                    .map_err(|source| FilterError::Map { map: name, source })?;
                if mask != 0 {
                    bound.insert(port, mask);
                }
            }
            Ok::<_, FilterError>(bound)
        };
        Ok((
            read(&self.maps.tcp_ports, maps::TCP_PORTS)?,
            read(&self.maps.udp_ports, maps::UDP_PORTS)?,
        ))
    }

    /// Every prefix of a slot with its set mask, IPv4 first, in address order.
    pub fn prefixes(&self, slot: u32) -> Result<Vec<(IpNet, SetMask)>, FilterError> {
        let slot = slot as usize & 1;
        let mut out = Vec::new();
        for item in self.maps.v4[slot].iter() {
            let (key, mask) = item.map_err(|source| FilterError::Map {
                map: maps::V4_SLOT0,
                source,
            })?;
            if let Ok(net) = Ipv4Net::new(key.data().into(), key.prefix_len() as u8) {
                out.push((IpNet::V4(net), mask));
            }
        }
        for item in self.maps.v6[slot].iter() {
            let (key, mask) = item.map_err(|source| FilterError::Map {
                map: maps::V6_SLOT0,
                source,
            })?;
            if let Ok(net) = Ipv6Net::new(key.data().into(), key.prefix_len() as u8) {
                out.push((IpNet::V6(net), mask));
            }
        }
        out.sort();
        Ok(out)
    }

    /// What the live policy does with a connection attempt from `source`,
    /// following the kernel program's order: unarmed, deny sets, unbound
    /// port, membership. The set mask comes from the kernel's own
    /// longest-prefix lookup; the prefix shown is the longest one in the
    /// slot that covers the address.
    pub fn explain(
        &self,
        source: IpAddr,
        transport: Option<Transport>,
    ) -> Result<Explanation, FilterError> {
        let source = match source {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let control = self.control()?;
        let slot = control.active_slot();
        let mask = self.lookup(slot, source)?;
        let matched = if mask == 0 {
            None
        } else {
            self.prefixes(slot)?
                .into_iter()
                .filter(|(net, _)| net.contains(&source))
                .max_by_key(|(net, _)| net.prefix_len())
        };
        let options = self.options(slot)?;
        let denied_by = mask & options.deny_mask;
        let port = match transport {
            None => None,
            Some(t) => {
                let (array, port, name) = match t {
                    Transport::Tcp(p) => (&self.maps.tcp_ports, p, maps::TCP_PORTS),
                    Transport::Udp(p) => (&self.maps.udp_ports, p, maps::UDP_PORTS),
                };
                let bound = array
                    .get(&((slot << 16) | port as u32), 0)
                    .map_err(|source| FilterError::Map { map: name, source })?;
                let reason = if !control.armed() {
                    Reason::PassUnarmed
                } else if denied_by != 0 {
                    Reason::DropDeny
                } else if bound == 0 {
                    Reason::PassUnboundPort
                } else if mask & bound != 0 {
                    Reason::PassMember
                } else if matches!(t, Transport::Tcp(_)) {
                    Reason::DropNotMemberTcp
                } else {
                    Reason::DropNotMemberUdp
                };
                Some((t, bound, reason))
            }
        };
        Ok(Explanation {
            armed: control.armed(),
            generation: control.generation,
            source,
            matched,
            denied_by,
            port,
        })
    }

    fn lookup(&self, slot: u32, source: IpAddr) -> Result<SetMask, FilterError> {
        let slot_index = slot as usize & 1;
        let found = match source {
            IpAddr::V4(a) => self.maps.v4[slot_index].get(&Key::new(32, a.octets()), 0),
            IpAddr::V6(a) => self.maps.v6[slot_index].get(&Key::new(128, a.octets()), 0),
        };
        match found {
            Ok(mask) => Ok(mask),
            Err(aya::maps::MapError::KeyNotFound) => Ok(0),
            Err(source) => Err(FilterError::Map {
                map: maps::V4_SLOT0,
                source,
            }),
        }
    }
}

/// Counters are read the same way from a loaded filter and from pins.
pub(super) fn sum_counters(
    counters: &PerCpuArray<MapData, Counter>,
) -> Result<Counters, FilterError> {
    let mut cells = vec![Counter::default(); COUNTER_ENTRIES as usize];
    for (index, cell) in cells.iter_mut().enumerate() {
        let per_cpu = counters
            .get(&(index as u32), 0)
            .map_err(|source| FilterError::Map {
                map: maps::COUNTERS,
                source,
            })?;
        for value in per_cpu.iter() {
            cell.packets += value.packets;
            cell.bytes += value.bytes;
        }
    }
    Ok(Counters::from_cells(cells))
}
