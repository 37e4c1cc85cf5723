//! The heaviest dropped sources in `/metrics`: the [`TOP_SOURCES`] (prefix,
//! reason) pairs of the kernel's per-source table with the most packets, read
//! at each scrape.
//!
//! Label cardinality is bounded per scrape: `rank` is 1..=[`TOP_SOURCES`],
//! `reason` and `family` are fixed vocabularies, and at most [`TOP_SOURCES`]
//! prefixes appear. Over time the prefixes churn (a series lives while its
//! prefix stays in the top list), so this is a view of who is knocking now,
//! not a history per prefix; `xdpgate top` shows more of the list.
use std::fmt;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{gauge, single_gauge, Labels};
use crate::filter::{Sources, TopOrder};

/// How many sources a scrape exports.
pub const TOP_SOURCES: usize = 10;

/// Reads the kernel's per-source table at scrape time; `None` when it cannot
/// be read (then the family is left out).
pub(super) type ReadSources = dyn Fn() -> Option<Sources> + Send + Sync;

pub(super) struct TopSourcesCollector(pub Box<ReadSources>);

impl fmt::Debug for TopSourcesCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TopSourcesCollector")
    }
}

impl Collector for TopSourcesCollector {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        match (self.0)() {
            Some(sources) => encode(&sources, &mut out),
            None => Ok(()),
        }
    }
}

pub(super) fn encode(sources: &Sources, out: &mut DescriptorEncoder) -> fmt::Result {
    single_gauge(
        out,
        "filter_sources_tracked",
        &format!(
            "(source prefix, drop reason) pairs the XDP filter's per-source table holds now, over \
             all CPUs; each CPU holds at most {}, and a new pair takes the slot of one that \
             dropped least recently",
            Sources::capacity()
        ),
        None,
        sources.tracked() as u64,
    )?;
    let rows = sources.top(None, TopOrder::Packets, None, TOP_SOURCES);
    let ranks: Vec<String> = (1..=rows.len()).map(|r| r.to_string()).collect();
    let prefixes: Vec<String> = rows.iter().map(|r| r.prefix.to_string()).collect();
    let labels = |i: usize| {
        Labels([
            ("rank", ranks[i].as_str()),
            ("prefix", prefixes[i].as_str()),
            (
                "family",
                if rows[i].prefix.addr().is_ipv4() {
                    "ipv4"
                } else {
                    "ipv6"
                },
            ),
            ("reason", rows[i].reason.label()),
        ])
    };
    gauge(
        out,
        "filter_top_source_drops",
        &format!(
            "Packets the XDP filter dropped from a source prefix (/24, /48) for a reason since the \
             pair took its slot in the per-source table, for the {TOP_SOURCES} heaviest pairs (rank 1 = most); \
             prefixes come and go"
        ),
        None,
        (0..rows.len()).map(|i| (labels(i), rows[i].packets)),
    )
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;
    use xdpgate_common::{Counter, Reason};

    use super::*;

    fn scrape(sources: Sources) -> String {
        let mut registry = Registry::with_prefix("xdpgate");
        registry.register_collector(Box::new(TopSourcesCollector(Box::new(move || {
            Some(sources.clone())
        }))));
        super::super::encode(&registry)
    }

    #[test]
    fn only_the_heaviest_sources_are_exported_ranked() {
        let mut sources = Sources::default();
        for i in 0..40u64 {
            let net = format!("198.51.{i}.0/24").parse().unwrap();
            sources.counts.insert(
                (net, Reason::DropNotMemberTcp),
                Counter {
                    packets: 100 + i,
                    bytes: 0,
                },
            );
        }
        sources.counts.insert(
            ("2001:db8:7::/48".parse().unwrap(), Reason::DropEvasive),
            Counter {
                packets: 9000,
                bytes: 0,
            },
        );
        let text = scrape(sources);
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("xdpgate_filter_top_source_drops{"))
            .collect();
        assert_eq!(series.len(), TOP_SOURCES, "{text}");
        assert!(
            series.contains(
                &"xdpgate_filter_top_source_drops{rank=\"1\",prefix=\"2001:db8:7::/48\",family=\"ipv6\",reason=\"evasive\"} 9000"
            ),
            "{text}"
        );
        assert!(
            series.contains(
                &"xdpgate_filter_top_source_drops{rank=\"2\",prefix=\"198.51.39.0/24\",family=\"ipv4\",reason=\"not_member_tcp\"} 139"
            ),
            "{text}"
        );
        assert!(!text.contains("198.51.0.0/24"), "the lightest are left out");
        assert!(text.contains("xdpgate_filter_sources_tracked 41"), "{text}");
    }

    #[test]
    fn an_unreadable_map_leaves_the_family_out() {
        let mut registry = Registry::with_prefix("xdpgate");
        registry.register_collector(Box::new(TopSourcesCollector(Box::new(|| None))));
        let text = super::super::encode(&registry);
        assert!(!text.contains("top_source"), "{text}");
    }
}
