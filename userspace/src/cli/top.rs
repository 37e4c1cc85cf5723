//! `xdpgate top`: the heaviest dropped sources, live, as `top` shows
//! processes. Each refresh reads the kernel's per-source table through the pins
//! and ranks the (prefix, reason) pairs by packets or by packets per second
//! since the previous refresh. It reads only; it never changes the filter.
use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use xdpgate_common::Reason;

use super::{Exit, Locations};
use crate::{
    filter::{PinnedFilter, Sources, TopOrder, TopSource},
    status::unix_now,
};

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub locations: Locations,
    /// Seconds between refreshes; rates are measured over it.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// How many sources to show.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Order by packets per second over the interval, or by packets counted
    /// since the source entered the kernel's map.
    #[arg(long, value_enum, default_value_t = SortBy::Rate)]
    pub sort: SortBy,
    /// Only drops for this reason (not_member_tcp, not_member_udp, deny,
    /// evasive, tunnel).
    #[arg(long, value_parser = parse_drop_reason)]
    pub reason: Option<Reason>,
    /// Stop after this many refreshes (default: until interrupted).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Print one JSON object per refresh, one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    Rate,
    Packets,
}

fn parse_drop_reason(text: &str) -> Result<Reason, String> {
    let drops = || Reason::ALL.into_iter().filter(|r| r.is_drop());
    drops().find(|r| r.label() == text).ok_or_else(|| {
        let labels: Vec<&str> = drops().map(|r| r.label()).collect();
        format!(
            "`{text}` is not a drop reason; one of: {}",
            labels.join(", ")
        )
    })
}

pub async fn top(args: &TopArgs) -> Result<Exit> {
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        bail!(
            "--interval must be a positive number of seconds, not {}",
            args.interval
        );
    }
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let pinned = PinnedFilter::open(&args.locations.pin_dir)?;
    let period = Duration::from_secs_f64(args.interval);
    let order = match args.sort {
        SortBy::Rate => TopOrder::Rate,
        SortBy::Packets => TopOrder::Packets,
    };
    let clear = !args.json && std::io::stdout().is_terminal();
    let mut previous = (Instant::now(), pinned.sources()?);
    let mut refreshes = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
        }
        let now = (Instant::now(), pinned.sources()?);
        let elapsed = now.0 - previous.0;
        let rows = now
            .1
            .top(Some((&previous.1, elapsed)), order, args.reason, args.limit);
        let text = if args.json {
            format!("{}\n", snapshot_json(&now.1, &rows, elapsed, args))
        } else {
            table(&now.1, &rows, elapsed, args, clear)
        };
        let mut out = std::io::stdout().lock();
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            // The reader went away (`| head`): that is the end, not an error.
            return Ok(Exit::Ok);
        }
        refreshes += 1;
        if args.iterations.is_some_and(|n| refreshes >= n) {
            return Ok(Exit::Ok);
        }
        previous = now;
    }
}

fn snapshot_json(
    sources: &Sources,
    rows: &[TopSource],
    elapsed: Duration,
    args: &TopArgs,
) -> serde_json::Value {
    json!({
        "at": unix_now(),
        "interval_seconds": elapsed.as_secs_f64(),
        "sort": match args.sort { SortBy::Rate => "rate", SortBy::Packets => "packets" },
        "reason": args.reason.map(|r| r.label()),
        "tracked": sources.tracked(),
        "capacity": Sources::capacity(),
        "sources": rows.iter().enumerate().map(|(i, row)| json!({
            "rank": i + 1,
            "prefix": row.prefix.to_string(),
            "family": if row.prefix.addr().is_ipv4() { "ipv4" } else { "ipv6" },
            "reason": row.reason.label(),
            "packets": row.packets,
            "bytes": row.bytes,
            "packets_per_second": row.packets_per_second,
            "bytes_per_second": row.bytes_per_second,
        })).collect::<Vec<_>>(),
    })
}

fn table(
    sources: &Sources,
    rows: &[TopSource],
    elapsed: Duration,
    args: &TopArgs,
    clear: bool,
) -> String {
    let mut out = String::new();
    if clear {
        // Home and clear, as `top` repaints.
        out.push_str("\x1b[H\x1b[2J");
    }
    out.push_str(&format!(
        "xdpgate top: {} of {} tracked (prefix, reason) pairs (bound {} per CPU), by {} over {:.1}s{}\n",
        rows.len(),
        sources.tracked(),
        Sources::capacity(),
        match args.sort {
            SortBy::Rate => "packets/s",
            SortBy::Packets => "packets",
        },
        elapsed.as_secs_f64(),
        args.reason
            .map(|r| format!(", reason {}", r.label()))
            .unwrap_or_default(),
    ));
    out.push_str(&format!(
        "{:>4}  {:<24} {:<15} {:>12} {:>12} {:>14}\n",
        "#", "PREFIX", "REASON", "PKTS/S", "PKTS", "BYTES"
    ));
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&format!(
            "{:>4}  {:<24} {:<15} {:>12.1} {:>12} {:>14}\n",
            i + 1,
            row.prefix.to_string(),
            row.reason.label(),
            row.packets_per_second,
            row.packets,
            row.bytes
        ));
    }
    if rows.is_empty() {
        out.push_str("      (no drops counted)\n");
    }
    if !clear {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(argv: &[&str]) -> Result<TopArgs, String> {
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Top(args)) => Ok(args),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn top_takes_its_options_and_refuses_a_pass_reason() {
        let args = parse(&[
            "xdpgate",
            "top",
            "--interval",
            "0.5",
            "--limit",
            "3",
            "--sort",
            "packets",
            "--reason",
            "deny",
            "--json",
            "--iterations",
            "1",
        ])
        .unwrap();
        assert_eq!(args.limit, 3);
        assert_eq!(args.sort, SortBy::Packets);
        assert_eq!(args.reason, Some(Reason::DropDeny));
        assert_eq!(args.iterations, Some(1));
        let defaults = parse(&["xdpgate", "top"]).unwrap();
        assert_eq!((defaults.sort, defaults.limit), (SortBy::Rate, 20));
        let pass = parse(&["xdpgate", "top", "--reason", "member"]).unwrap_err();
        assert!(pass.contains("not a drop reason"), "{pass}");
        assert!(pass.contains("not_member_tcp"), "{pass}");
    }
}
