//! The filter as it lives in bpffs, independent of any process: where the
//! pins go, how a new instance decides whether it can adopt them, how
//! `xdpgate detach` removes them. The read-only view of them that the CLI and
//! the admin listener use ([`PinnedFilter`]) is in `pinned.rs`.
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

#[path = "pinned.rs"]
mod pinned;
pub(super) use pinned::sum_counters;
pub use pinned::{BoundPorts, Explanation, LinkState, PinnedFilter, Transport};
