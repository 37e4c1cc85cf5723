//! `xdpgate stats`: the kernel's packet counters, read twice through the
//! pins, and the rates between the two readings.
use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::json;

use super::{print_json, Exit, Locations};
use crate::{
    filter::{Counters, PinnedFilter},
    status::unix_now,
};

pub(super) async fn stats(
    locations: &Locations,
    watch: bool,
    interval: f64,
    json: bool,
) -> Result<Exit> {
    if !(interval > 0.0 && interval.is_finite()) {
        bail!("--interval must be a positive number of seconds, not {interval}");
    }
    let pinned = PinnedFilter::open(&locations.pin_dir)?;
    let period = Duration::from_secs_f64(interval);
    let mut previous = (Instant::now(), pinned.counters()?);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
        }
        let now = (Instant::now(), pinned.counters()?);
        print_counters(&now.1, &previous.1, now.0 - previous.0, json);
        if !watch {
            return Ok(Exit::Ok);
        }
        previous = now;
    }
}

fn print_counters(now: &Counters, before: &Counters, elapsed: Duration, json: bool) {
    let delta = now.since(before);
    let secs = elapsed.as_secs_f64().max(1e-3);
    if json {
        print_json(&json!({
            "at": unix_now(),
            "interval_seconds": secs,
            "passed_packets": now.passed_packets(),
            "dropped_packets": now.dropped_packets(),
            "passed_per_second": delta.passed_packets() as f64 / secs,
            "dropped_per_second": delta.dropped_packets() as f64 / secs,
            "counters": now.iter().map(|(reason, family, c)| json!({
                "action": reason.action(), "reason": reason.label(), "family": family.label(),
                "packets": c.packets, "bytes": c.bytes,
                "packets_per_second": delta.get(reason, family).packets as f64 / secs,
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    let mut out = format!(
        "passed {} ({:.0}/s)  dropped {} ({:.0}/s)\n",
        now.passed_packets(),
        delta.passed_packets() as f64 / secs,
        now.dropped_packets(),
        delta.dropped_packets() as f64 / secs,
    );
    for (reason, family, counter) in now.iter().filter(|(_, _, c)| c.packets > 0) {
        let rate = delta.get(reason, family).packets as f64 / secs;
        out.push_str(&format!(
            "  {:<4} {:<18} {:<5} {:>12} pkts {:>14} bytes {:>10.0}/s\n",
            reason.action(),
            reason.label(),
            family.label(),
            counter.packets,
            counter.bytes,
            rate
        ));
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
}
