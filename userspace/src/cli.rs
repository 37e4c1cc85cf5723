//! The `xdpgate` command line: argument parsing and the commands themselves.
//!
//! At this stage `run` loads the filter with the embedded default policy
//! (Cloudflare's ranges on TCP 80/443), prints the kernel's counters until
//! interrupted, and removes the filter on exit unless asked to pin it. The
//! long-running daemon with a config file replaces it later. Exit codes:
//! 0 success, 1 runtime failure, 2 bad usage (clap's).
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

use crate::{
    cloudflare,
    filter::{Counters, Filter},
    policy,
};

/// Where pins live. bpffs must be mounted at /sys/fs/bpf.
pub const PIN_DIR: &str = "/sys/fs/bpf/xdpgate";

#[derive(Parser, Debug)]
#[command(
    name = "xdpgate",
    version,
    about = "XDP firewall for origins behind Cloudflare"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach the filter with the embedded default policy (Cloudflare's ranges
    /// may open connections to TCP 80 and 443; nothing else is filtered) and
    /// print the kernel's counters until Ctrl-C.
    Run(RunArgs),
    /// Remove a filter left pinned by `run --pin`.
    Detach {
        /// Pin directory.
        #[arg(long, default_value = PIN_DIR)]
        pin_dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Interface to attach to (repeatable). Default: the interface of the
    /// default route.
    #[arg(long = "interface", short = 'i')]
    pub interfaces: Vec<String>,
    /// Seconds between counter reports.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Leave the filter attached and pinned under --pin-dir on exit.
    #[arg(long)]
    pub pin: bool,
    #[arg(long, default_value = PIN_DIR)]
    pub pin_dir: PathBuf,
}

pub async fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Detach { pin_dir } => detach(&pin_dir),
    }
}

async fn run(args: RunArgs) -> Result<()> {
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        bail!(
            "--interval must be a positive number of seconds, not {}",
            args.interval
        );
    }
    let interfaces = if args.interfaces.is_empty() {
        vec![default_route_interface()?]
    } else {
        args.interfaces.clone()
    };
    if args.pin && args.pin_dir.exists() {
        bail!(
            "{} already holds a pinned filter; remove it first with `xdpgate detach`",
            args.pin_dir.display()
        );
    }

    let compiled = policy::compile(&policy::cloudflare_default())
        .context("compiling the embedded default policy")?;
    let mut filter = Filter::load(args.pin.then_some(args.pin_dir.as_path()))?;
    // Armed before it is attached: the first packet it sees is judged.
    let generation = filter.apply(&compiled)?;
    for interface in &interfaces {
        let mode = filter.attach(interface)?;
        println!("xdpgate: attached to {interface} ({} mode)", mode.label());
    }
    println!(
        "xdpgate: policy generation {generation}: TCP 80,443 only from Cloudflare \
         ({} IPv4 + {} IPv6 prefixes, snapshot {}); Ctrl-C to stop",
        cloudflare::IPV4.len(),
        cloudflare::IPV6.len(),
        cloudflare::SNAPSHOT_DATE
    );

    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.interval));
    let mut previous = (Instant::now(), filter.counters()?);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = (Instant::now(), filter.counters()?);
                print_counters(&now.1, &previous.1, now.0 - previous.0);
                previous = now;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }

    if args.pin {
        filter.pin(&args.pin_dir)?;
        println!(
            "xdpgate: left attached and pinned under {}; `xdpgate detach` removes it",
            args.pin_dir.display()
        );
    } else {
        drop(filter);
        println!("xdpgate: detached from {}", interfaces.join(", "));
    }
    Ok(())
}

fn print_counters(now: &Counters, before: &Counters, elapsed: Duration) {
    let delta = now.since(before);
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut out = String::new();
    out.push_str(&format!(
        "passed {} ({:.0}/s)  dropped {} ({:.0}/s)\n",
        now.passed_packets(),
        delta.passed_packets() as f64 / secs,
        now.dropped_packets(),
        delta.dropped_packets() as f64 / secs,
    ));
    for (reason, family, counter) in now.iter().filter(|(_, _, c)| c.packets > 0) {
        let rate = delta.get(reason, family).packets as f64 / secs;
        out.push_str(&format!(
            "  {:<4} {:<15} {:<5} {:>12} pkts {:>14} bytes {:>10.0}/s\n",
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

fn detach(pin_dir: &Path) -> Result<()> {
    if !pin_dir.exists() {
        println!("xdpgate: nothing pinned at {}", pin_dir.display());
        return Ok(());
    }
    std::fs::remove_dir_all(pin_dir)
        .with_context(|| format!("removing pins under {}", pin_dir.display()))?;
    println!(
        "xdpgate: removed {}; the filter is detached once no process holds it",
        pin_dir.display()
    );
    Ok(())
}

/// The interface that carries the IPv4 (or else IPv6) default route.
pub fn default_route_interface() -> Result<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if let Some(name) = default_route_in_ipv4_table(&v4) {
        return Ok(name);
    }
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    if let Some(name) = default_route_in_ipv6_table(&v6) {
        return Ok(name);
    }
    bail!("no default route found in /proc/net/route or /proc/net/ipv6_route; name one with --interface")
}

fn default_route_in_ipv4_table(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags ... Mask
        (fields.len() > 7 && fields[1] == "00000000" && fields[7] == "00000000")
            .then(|| fields[0].to_string())
    })
}

fn default_route_in_ipv6_table(table: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() == 10
            && fields[0] == "00000000000000000000000000000000"
            && fields[1] == "00"
            && fields[9] != "lo")
            .then(|| fields[9].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ipv4_default_route_interface() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_in_ipv4_table(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_in_ipv4_table("Iface\tDestination\n"), None);
    }

    #[test]
    fn finds_the_ipv6_default_route_interface_but_not_loopback() {
        let table = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
                     00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     ens3\n";
        assert_eq!(default_route_in_ipv6_table(table).as_deref(), Some("ens3"));
    }
}
