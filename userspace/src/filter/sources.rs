//! Who is knocking: the kernel's drops per source prefix (a /24 for IPv4, a
//! /48 for IPv6) and reason, read from the program's per-CPU table
//! ([`maps::SOURCES`]), and ranked for `xdpgate top` and `/metrics`.
//!
//! Each CPU's part of the table holds at most [`SOURCE_ENTRIES`] (prefix,
//! reason) pairs, [`SOURCE_WAYS`](xdpgate_common::SOURCE_WAYS) to a set; a pair new to its set takes the
//! slot of the pair that set saw drop least recently. So a count is "since
//! this pair took its slot", not "since the filter was loaded", and the set
//! of prefixes churns: anything that shows them (metric labels included)
//! shows only the heaviest few, and rates come from two readings of the same
//! pair. A pair dropped on several CPUs is summed over them. It does not
//! decide anything; it only reads.
use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use aya::maps::{MapData, PerCpuArray};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use xdpgate_common::{
    maps, Counter, Family, Reason, SourceKey, SourceSet, SOURCE_ENTRIES, SOURCE_PREFIX_V4,
    SOURCE_PREFIX_V6, SOURCE_SETS,
};

use super::FilterError;

/// The map as userspace holds it.
pub(crate) type SourceMap = PerCpuArray<MapData, SourceSet>;

/// One reading of the map: every tracked (prefix, reason) pair with its
/// packets and bytes, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    pub counts: BTreeMap<(IpNet, Reason), Counter>,
}

/// The prefix a key stands for, or `None` for a key this build cannot read.
fn prefix_of(key: &SourceKey) -> Option<IpNet> {
    let p = key.prefix;
    match key.family()? {
        Family::Ipv4 => Ipv4Net::new([p[0], p[1], p[2], 0].into(), SOURCE_PREFIX_V4)
            .ok()
            .map(IpNet::V4),
        Family::Ipv6 => {
            let mut octets = [0u8; 16];
            octets[..6].copy_from_slice(&p);
            Ipv6Net::new(octets.into(), SOURCE_PREFIX_V6)
                .ok()
                .map(IpNet::V6)
        }
        Family::Other => None,
    }
}

/// The prefix the program counts `source` under (IPv4-mapped IPv6 counts as
/// IPv4, as the program judges it).
pub fn source_prefix(source: IpAddr) -> IpNet {
    let source = match source {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(source),
        v4 => v4,
    };
    let len = match source {
        IpAddr::V4(_) => SOURCE_PREFIX_V4,
        IpAddr::V6(_) => SOURCE_PREFIX_V6,
    };
    IpNet::new(source, len)
        .map(|n| n.trunc())
        .expect("prefix lengths are in range")
}

/// Reads the whole table, every CPU's part. A set the program writes while
/// it is read is read as it was at some instant of its own.
pub(crate) fn read_sources(map: Option<&SourceMap>) -> Result<Sources, FilterError> {
    let map = map.ok_or_else(|| {
        FilterError::Pin(format!(
            "no map {} is pinned: the filter in force was loaded by an xdpgate that did not \
             count drops per source this way; restart the daemon with this version",
            maps::SOURCES
        ))
    })?;
    let mut sources = Sources::default();
    for index in 0..SOURCE_SETS {
        let per_cpu = map.get(&index, 0).map_err(|source| FilterError::Map {
            map: maps::SOURCES,
            source,
        })?;
        for set in per_cpu.iter() {
            for slot in set.slots.iter().filter(|slot| slot.packets != 0) {
                let key = SourceKey::from_bits(slot.key);
                let (Some(prefix), Some(reason)) = (prefix_of(&key), key.reason()) else {
                    continue;
                };
                let cell = sources.counts.entry((prefix, reason)).or_default();
                cell.packets += slot.packets;
                cell.bytes += slot.bytes;
            }
        }
    }
    Ok(sources)
}

/// How a top list is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopOrder {
    /// Packets counted since the pair entered the map.
    Packets,
    /// Packets per second between two readings.
    Rate,
}

/// One row of a top list.
#[derive(Clone, Debug, PartialEq)]
pub struct TopSource {
    pub prefix: IpNet,
    pub reason: Reason,
    pub packets: u64,
    pub bytes: u64,
    /// Over the interval between the two readings (0 without an earlier one).
    pub packets_per_second: f64,
    pub bytes_per_second: f64,
}

impl Sources {
    /// How many (prefix, reason) pairs the table holds now, over all CPUs.
    pub fn tracked(&self) -> usize {
        self.counts.len()
    }

    /// The table's bound per CPU ([`SOURCE_WAYS`](xdpgate_common::SOURCE_WAYS) pairs in each of
    /// [`SOURCE_SETS`] sets); a pair dropped on several CPUs takes a slot on
    /// each.
    pub const fn capacity() -> u32 {
        SOURCE_ENTRIES
    }

    /// The `limit` heaviest pairs, optionally of one reason. With `earlier`
    /// (a reading taken `elapsed` before this one) each row gets its rate; a
    /// pair that was not in `earlier`, or whose count went down (evicted and
    /// counted again since), counts all it has as new. Ties go to the lower
    /// prefix, so the order is stable.
    pub fn top(
        &self,
        earlier: Option<(&Sources, Duration)>,
        order: TopOrder,
        reason: Option<Reason>,
        limit: usize,
    ) -> Vec<TopSource> {
        let secs = earlier.map_or(0.0, |(_, elapsed)| elapsed.as_secs_f64().max(1e-3));
        let mut rows: Vec<TopSource> = self
            .counts
            .iter()
            .filter(|((_, r), _)| reason.is_none_or(|want| *r == want))
            .map(|(&(prefix, reason), now)| {
                let (packets, bytes) = match earlier {
                    None => (0, 0),
                    Some((before, _)) => match before.counts.get(&(prefix, reason)) {
                        Some(b) if b.packets <= now.packets => {
                            (now.packets - b.packets, now.bytes.saturating_sub(b.bytes))
                        }
                        _ => (now.packets, now.bytes),
                    },
                };
                let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
                TopSource {
                    prefix,
                    reason,
                    packets: now.packets,
                    bytes: now.bytes,
                    packets_per_second: rate(packets),
                    bytes_per_second: rate(bytes),
                }
            })
            .collect();
        let key = |row: &TopSource| match order {
            TopOrder::Packets => row.packets as f64,
            TopOrder::Rate => row.packets_per_second,
        };
        rows.sort_by(|a, b| {
            key(b)
                .total_cmp(&key(a))
                .then(b.packets.cmp(&a.packets))
                .then((a.prefix, a.reason).cmp(&(b.prefix, b.reason)))
        });
        rows.truncate(limit);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(rows: &[(&str, Reason, u64)]) -> Sources {
        Sources {
            counts: rows
                .iter()
                .map(|(net, reason, packets)| {
                    (
                        (net.parse().unwrap(), *reason),
                        Counter {
                            packets: *packets,
                            bytes: packets * 60,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn keys_become_the_prefixes_the_program_counts_under() {
        let v4 = SourceKey {
            prefix: [203, 0, 113, 0, 0, 0],
            family: Family::Ipv4 as u8,
            reason: Reason::DropDeny as u8,
        };
        assert_eq!(prefix_of(&v4), Some("203.0.113.0/24".parse().unwrap()));
        assert_eq!(v4.reason(), Some(Reason::DropDeny));
        let v6 = SourceKey {
            prefix: [0x20, 0x01, 0x0d, 0xb8, 0x00, 0x07],
            family: Family::Ipv6 as u8,
            reason: Reason::DropEvasive as u8,
        };
        assert_eq!(prefix_of(&v6), Some("2001:db8:7::/48".parse().unwrap()));
        let other = SourceKey { family: 9, ..v4 };
        assert_eq!(prefix_of(&other), None);
        assert_eq!(
            source_prefix("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            source_prefix("::ffff:203.0.113.77".parse().unwrap()),
            "203.0.113.0/24".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            source_prefix("2001:db8:7:1::9".parse().unwrap()),
            "2001:db8:7::/48".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn top_orders_by_packets_or_by_rate_over_the_interval() {
        let before = sources(&[
            ("203.0.113.0/24", Reason::DropNotMemberTcp, 1000),
            ("198.51.100.0/24", Reason::DropNotMemberTcp, 10),
        ]);
        let now = sources(&[
            ("203.0.113.0/24", Reason::DropNotMemberTcp, 1010),
            ("198.51.100.0/24", Reason::DropNotMemberTcp, 210),
            ("2001:db8::/48", Reason::DropEvasive, 50),
        ]);
        let by_packets = now.top(None, TopOrder::Packets, None, 10);
        assert_eq!(by_packets[0].prefix.to_string(), "203.0.113.0/24");
        assert_eq!(by_packets[0].packets_per_second, 0.0);

        let by_rate = now.top(
            Some((&before, Duration::from_secs(2))),
            TopOrder::Rate,
            None,
            2,
        );
        let order: Vec<(String, f64)> = by_rate
            .iter()
            .map(|r| (r.prefix.to_string(), r.packets_per_second))
            .collect();
        assert_eq!(
            order,
            [
                ("198.51.100.0/24".to_string(), 100.0),
                ("2001:db8::/48".to_string(), 25.0)
            ],
            "a pair new since the earlier reading counts all it has"
        );

        let evasive = now.top(None, TopOrder::Packets, Some(Reason::DropEvasive), 10);
        assert_eq!(evasive.len(), 1);
        assert_eq!(evasive[0].reason, Reason::DropEvasive);
    }

    #[test]
    fn a_pair_evicted_and_counted_again_does_not_go_negative() {
        let before = sources(&[("203.0.113.0/24", Reason::DropDeny, 500)]);
        let now = sources(&[("203.0.113.0/24", Reason::DropDeny, 20)]);
        let rows = now.top(
            Some((&before, Duration::from_secs(1))),
            TopOrder::Rate,
            None,
            5,
        );
        assert_eq!(rows[0].packets_per_second, 20.0);
    }
}
