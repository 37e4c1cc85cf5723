//! A pinned filter read through its pins ([`PinnedFilter`]): the kernel's
//! state as the CLI shows it and the admin listener exports it, with or
//! without a daemon; `xdpgate check` explains a verdict from it.
use super::*;

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
    pub fn sources(&self) -> Result<crate::filter::Sources, FilterError> {
        crate::filter::sources::read_sources(self.maps.sources.as_ref())
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
pub(in crate::filter) fn sum_counters(
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
