//! The daemon's state as Prometheus metrics, in the OpenMetrics text format.
//!
//! The daemon has one `prometheus-client` registry ([`daemon_registry`]):
//! at its root a collector that reads one [`DaemonStatus`] snapshot and one
//! reading of the kernel's counters at each scrape, so every scrape shows
//! exactly what the daemon knew at that moment without mirroring the status
//! into long-lived atomics; beside it the proxy's live request instruments,
//! and the Ingress source's in the `ingress` sub-registry. [`render`] is the
//! status part alone, for callers without a running daemon. Labels carry only names the operator chose or fixed vocabularies
//! (set, interface, source kind, reason); never a URL, a path or an error text,
//! which could hold a secret. Serving the text is the admin listener's job.
use std::fmt::{self, Write as _};

use prometheus_client::{
    collector::Collector,
    encoding::{
        text, DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder,
        LabelValueEncoder, NoLabelSet,
    },
    metrics::MetricType,
    registry::{Registry, Unit},
};

use crate::{
    filter::{Counters, Sources},
    status::{DaemonStatus, SetStatus, SourceStatus},
};

pub mod text_format;
mod top_sources;

pub use top_sources::TOP_SOURCES;

/// The content type of [`render`]'s output: OpenMetrics text 1.0.0, which is
/// what `prometheus_client::encoding::text` writes (`# EOF`, `info` types,
/// `# UNIT` lines). Prometheus asks for it and parses it natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with this, followed by `_`.
const PREFIX: &str = "xdpgate";

/// Reads the daemon's status and counters at scrape time; `None` when the
/// daemon is gone (then the scrape holds only the live instruments).
type ReadStatus = dyn Fn() -> Option<(DaemonStatus, Option<Counters>)> + Send + Sync;

/// The daemon's registry: the status collector fed by `read`, the heaviest
/// dropped sources fed by `read_sources`, the proxy's instruments beside them
/// and the Ingress source's under `xdpgate_ingress_`.
pub fn daemon_registry(
    read: impl Fn() -> Option<(DaemonStatus, Option<Counters>)> + Send + Sync + 'static,
    read_sources: impl Fn() -> Option<Sources> + Send + Sync + 'static,
    proxy: Option<&crate::proxy::metrics::ProxyMetrics>,
    ingress: Option<&crate::ingress::metrics::IngressMetrics>,
) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(StatusCollector(Box::new(read))));
    registry.register_collector(Box::new(top_sources::TopSourcesCollector(Box::new(
        read_sources,
    ))));
    if let Some(proxy) = proxy {
        proxy.register(&mut registry);
    }
    if let Some(ingress) = ingress {
        ingress.register(registry.sub_registry_with_prefix("ingress"));
    }
    registry
}

/// The text exposition of `registry`, ending in `# EOF`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // The encoder and the collectors only fail when the writer does, and
    // writing into a String does not fail.
    text::encode(&mut out, registry).expect("formatting into a String cannot fail");
    out
}

struct StatusCollector(Box<ReadStatus>);

impl fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusCollector")
    }
}

impl Collector for StatusCollector {
    fn encode(&self, out: DescriptorEncoder) -> fmt::Result {
        match (self.0)() {
            Some((status, counters)) => Snapshot { status, counters }.encode(out),
            None => Ok(()),
        }
    }
}

/// Renders the status and, when they could be read, the kernel counters.
///
/// With `counters` absent the per-reason packet and byte counters are left
/// out (not reported as zeros, which would read as a reset) and
/// `xdpgate_kernel_counters_readable` is 0.
pub fn render(status: &DaemonStatus, counters: Option<&Counters>) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Snapshot {
        status: status.clone(),
        counters: counters.cloned(),
    }));
    encode(&registry)
}

/// What one scrape reports; the registry wants a collector it can own.
#[derive(Debug)]
struct Snapshot {
    status: DaemonStatus,
    counters: Option<Counters>,
}

impl Collector for Snapshot {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        self.encode_kernel(&mut out)?;
        self.encode_policy(&mut out)?;
        self.encode_config(&mut out)?;
        self.encode_sets(&mut out)?;
        self.encode_sources(&mut out)?;
        self.encode_daemon(&mut out)
    }
}

impl Snapshot {
    fn encode_kernel(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        single_gauge(
            out,
            "kernel_counters_readable",
            "1 if the daemon could read the XDP filter's counter map for this scrape, 0 if not \
             (xdpgate_packets_total and xdpgate_bytes_total are then absent)",
            None,
            u64::from(self.counters.is_some()),
        )?;
        let Some(counters) = &self.counters else {
            return Ok(());
        };
        let labels = |reason: xdpgate_common::Reason, family: xdpgate_common::Family| {
            Labels([
                ("action", reason.action()),
                ("reason", reason.label()),
                ("family", family.label()),
            ])
        };
        counter(
            out,
            "packets",
            "Packets the XDP filter judged since it was loaded, by verdict, the reason for it \
             and address family",
            counters
                .iter()
                .map(|(reason, family, cell)| (labels(reason, family), cell.packets)),
        )?;
        counter(
            out,
            "bytes",
            "Bytes (whole frames, Ethernet header included) the XDP filter judged since it was \
             loaded, by verdict, the reason for it and address family",
            counters
                .iter()
                .map(|(reason, family, cell)| (labels(reason, family), cell.bytes)),
        )
    }

    fn encode_policy(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let policy = &self.status.policy;
        single_gauge(
            out,
            "policy_generation",
            "Generation of the policy in force in the kernel; it goes up by one on every swap",
            None,
            policy.generation,
        )?;
        single_gauge(
            out,
            "policy_applied_timestamp",
            "When the policy in force was applied, in Unix seconds; 0 if none has been yet",
            Some(&Unit::Seconds),
            policy.applied_at,
        )?;
        single_counter(
            out,
            "policy_refused",
            "Policies that failed to compile or apply since the daemon started; the previous \
             policy stays in force",
            policy.refused,
        )
    }

    fn encode_config(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let reloads = &self.status.reloads;
        counter(
            out,
            "config_reloads",
            "Configuration reloads since the daemon started: ok = applied, failed = the new \
             file was invalid and the old configuration stayed in force",
            [
                (Labels([("result", "ok")]), reloads.ok),
                (Labels([("result", "failed")]), reloads.failed),
            ],
        )?;
        single_gauge(
            out,
            "config_last_reload_timestamp",
            "When the last configuration reload was attempted, in Unix seconds; 0 if never",
            Some(&Unit::Seconds),
            reloads.last_at,
        )
    }

    fn encode_sets(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let sets = &self.status.sets;
        gauge(
            out,
            "set_entries",
            "Distinct prefixes in the address set (the union of its sources)",
            None,
            sets.iter()
                .map(|set| (Labels([("set", set.name.as_str())]), set.size as u64)),
        )?;
        gauge(
            out,
            "set_loaded",
            "1 once every source of the set has produced a list (fresh, last-known-good or \
             embedded); a set that is not loaded is not enforced",
            None,
            sets.iter()
                .map(|set| (Labels([("set", set.name.as_str())]), u64::from(set.loaded))),
        )
    }

    /// Per (set, source kind). A set with several sources of one kind (two
    /// files, say) gets one series for them: counts and entries are summed,
    /// timestamps are the oldest of them so a stale source cannot hide behind
    /// a fresh sibling, and `set_source_info` has one series per distinct
    /// `from`.
    fn encode_sources(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let groups: Vec<SourceGroup<'_>> = self
            .status
            .sets
            .iter()
            .flat_map(SourceGroup::of_set)
            .collect();
        counter(
            out,
            "set_refresh",
            "Refreshes of a set's source since the daemon started: success = a list now in \
             force or unchanged, failure = no list (I/O, HTTP, parse), refused = a list that \
             failed validation (empty, shrank too much)",
            groups.iter().flat_map(|g| {
                [
                    ("success", g.successes),
                    ("failure", g.failures),
                    ("refused", g.refusals),
                ]
                .map(|(result, n)| {
                    (
                        Labels([("set", g.set), ("source", g.kind), ("result", result)]),
                        n,
                    )
                })
            }),
        )?;
        gauge(
            out,
            "set_last_refresh_timestamp",
            "When the source was last asked for its list, successfully or not, in Unix \
             seconds; 0 if never",
            Some(&Unit::Seconds),
            groups.iter().map(|g| (g.labels(), g.last_attempt_at)),
        )?;
        gauge(
            out,
            "set_last_success_timestamp",
            "When the source last refreshed successfully (including \"not modified\"), in \
             Unix seconds; 0 if never",
            Some(&Unit::Seconds),
            groups.iter().map(|g| (g.labels(), g.last_success_at)),
        )?;
        gauge(
            out,
            "set_source_entries",
            "Prefixes the source contributes to its set now (overlaps with other sources \
             included)",
            None,
            groups.iter().map(|g| (g.labels(), g.entries)),
        )?;
        info(
            out,
            "set_source",
            "Where the entries in force of a set's source came from: api, file, config, \
             last-known-good (persisted by an earlier run) or embedded (compiled into the binary)",
            groups.iter().flat_map(|g| {
                g.from
                    .iter()
                    .map(|from| Labels([("set", g.set), ("source", g.kind), ("from", from)]))
            }),
        )
    }

    fn encode_daemon(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let status = &self.status;
        gauge(
            out,
            "interface_attached",
            "1 for each interface the XDP filter is attached to, with the attach mode \
             (driver or generic)",
            None,
            status.interfaces.iter().map(|i| {
                (
                    Labels([("interface", i.name.as_str()), ("mode", i.mode.as_str())]),
                    1,
                )
            }),
        )?;
        info(
            out,
            "build",
            "The version of the running xdpgate daemon",
            [Labels([("version", status.version.as_str())])],
        )?;
        single_gauge(
            out,
            "start_time",
            "When the daemon started, in Unix seconds",
            Some(&Unit::Seconds),
            status.started_at,
        )
    }
}

/// The sources of one kind in one set, combined (see
/// [`Snapshot::encode_sources`]).
struct SourceGroup<'a> {
    set: &'a str,
    kind: &'a str,
    successes: u64,
    failures: u64,
    refusals: u64,
    entries: u64,
    last_attempt_at: u64,
    last_success_at: u64,
    /// Distinct `from` values, in the order the sources list them.
    from: Vec<&'a str>,
}

impl<'a> SourceGroup<'a> {
    /// One group per source kind, in the order the kinds first appear.
    fn of_set(set: &'a SetStatus) -> Vec<SourceGroup<'a>> {
        let mut groups: Vec<SourceGroup<'a>> = Vec::new();
        for source in &set.sources {
            match groups.iter_mut().find(|g| g.kind == source.kind) {
                Some(group) => group.add(source),
                None => groups.push(SourceGroup::new(&set.name, source)),
            }
        }
        groups
    }

    fn new(set: &'a str, source: &'a SourceStatus) -> SourceGroup<'a> {
        SourceGroup {
            set,
            kind: &source.kind,
            successes: source.successes,
            failures: source.failures,
            refusals: source.refusals,
            entries: source.entries as u64,
            last_attempt_at: source.last_attempt_at,
            last_success_at: source.last_success_at,
            from: vec![&source.from],
        }
    }

    fn add(&mut self, source: &'a SourceStatus) {
        self.successes += source.successes;
        self.failures += source.failures;
        self.refusals += source.refusals;
        self.entries += source.entries as u64;
        self.last_attempt_at = self.last_attempt_at.min(source.last_attempt_at);
        self.last_success_at = self.last_success_at.min(source.last_success_at);
        if !self.from.contains(&source.from.as_str()) {
            self.from.push(&source.from);
        }
    }

    fn labels(&self) -> Labels<'a, 2> {
        Labels([("set", self.set), ("source", self.kind)])
    }
}

/// A fixed set of label pairs whose values are escaped as the text format
/// requires (`prometheus-client` writes label values verbatim).
struct Labels<'a, const N: usize>([(&'static str, &'a str); N]);

impl<const N: usize> EncodeLabelSet for Labels<'_, N> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        for (key, value) in self.0 {
            EncodeLabel::encode(&(key, Escaped(value)), encoder.encode_label())?;
        }
        Ok(())
    }
}

/// A label value with `\`, `"` and line feeds escaped.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A counter family, one `<name>_total` sample per label set.
fn counter<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

fn single_counter(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    out.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A gauge family, one sample per label set. With a unit, the sample names
/// end in it (`_seconds`).
fn gauge<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = out.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in samples {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn single_gauge(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    out.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// An info family: one `<name>_info{labels} 1` sample per label set.
fn info<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label_sets: impl IntoIterator<Item = L>,
) -> fmt::Result {
    let mut metric = out.encode_descriptor(name, help, None, MetricType::Info)?;
    for labels in label_sets {
        metric.encode_info(&labels)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
