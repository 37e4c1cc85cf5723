//! The `xdpgate` command line: argument parsing and the commands themselves.
//!
//! `run` is the daemon ([`crate::daemon`]). Every other command reads the
//! kernel's state through the pins (`--pin-dir`) and the daemon's last status
//! (`--state-dir`), so it works whether or not the daemon is running, and
//! never changes what is enforced, except `detach`, which removes it.
//!
//! Exit codes are stable; scripts may rely on them:
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success; `check`: the packet would pass; `status`: healthy |
//! | 1 | an error (message on stderr) |
//! | 2 | bad usage (clap) |
//! | 3 | no filter is pinned at the pin directory |
//! | 4 | the config file is invalid |
//! | 5 | `check`: the packet would be dropped |
//! | 6 | `status`: degraded (daemon not running, not armed, an interface or set missing) |
use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use xdpgate_common::{Reason, SetMask};

use crate::{
    config,
    daemon::{self, RunOptions},
    filter::{self, pins::Transport, Counters, FilterError, PinnedFilter},
    status::unix_now,
};

mod status;
mod top;

use status::daemon_status;

/// Where pins live by default. bpffs must be mounted at /sys/fs/bpf.
pub const PIN_DIR: &str = "/sys/fs/bpf/xdpgate";
/// Where the daemon keeps last-known-good lists and its status by default.
pub const STATE_DIR: &str = "/var/lib/xdpgate";

/// Exit codes; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    NotPinned = 3,
    BadConfig = 4,
    Dropped = 5,
    Degraded = 6,
}

impl Exit {
    /// The exit code for an error: specific where the error is one scripts
    /// care about.
    pub fn for_error(error: &anyhow::Error) -> Exit {
        if error
            .chain()
            .any(|e| e.downcast_ref::<config::ConfigError>().is_some())
        {
            Exit::BadConfig
        } else if error.chain().any(|e| {
            matches!(
                e.downcast_ref::<FilterError>(),
                Some(FilterError::NotPinned(_))
            )
        }) {
            Exit::NotPinned
        } else {
            Exit::Failure
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "xdpgate",
    version,
    about = "XDP firewall and ingress for origin servers behind Cloudflare",
    long_about = "XDP firewall and ingress for origin servers behind Cloudflare.\n\n\
        Exit codes: 0 ok (check: would pass; status: healthy), 1 error, 2 usage, \
        3 nothing pinned, 4 invalid config, 5 check: would be dropped, 6 status: degraded."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Locations {
    /// The filter's pin directory (bpffs).
    #[arg(long, default_value = PIN_DIR, global = true)]
    pub pin_dir: PathBuf,
    /// The daemon's state directory (status.json, last-known-good lists).
    #[arg(long, default_value = STATE_DIR, global = true)]
    pub state_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: load or adopt the filter, keep the sets current,
    /// serve /metrics, /healthz and /readyz. Without --config it runs the
    /// embedded default (TCP 80 and 443 only from Cloudflare's ranges, on the
    /// interface of the default route). SIGHUP or an edit of the config file
    /// reloads it; SIGTERM and SIGINT stop the daemon and leave the filter in
    /// force.
    Run(RunArgs),
    /// Show where the filter is attached, whether it is armed, the policy
    /// generation and every set's size, source, age and last refresh.
    Status {
        #[command(flatten)]
        locations: Locations,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the kernel's packet counters and per-second rates.
    Stats {
        #[command(flatten)]
        locations: Locations,
        /// Keep printing every --interval seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds over which rates are measured.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print JSON (one object per line with --watch).
        #[arg(long)]
        json: bool,
    },
    /// Show the heaviest dropped sources live, as `top` does: drops per
    /// source prefix (/24, /48) and reason, refreshed every --interval.
    Top(top::TopArgs),
    /// Say what the live kernel policy does with a connection attempt from
    /// ADDRESS, and why. Exit code 0 if it would pass, 5 if dropped.
    Check {
        /// The source address.
        address: IpAddr,
        /// A TCP SYN to this destination port.
        #[arg(long, conflicts_with = "udp")]
        tcp: Option<u16>,
        /// A UDP datagram to this destination port.
        #[arg(long)]
        udp: Option<u16>,
        #[command(flatten)]
        locations: Locations,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the sets as the kernel holds them in the active policy.
    Sets {
        /// Only this set.
        name: Option<String>,
        #[command(flatten)]
        locations: Locations,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take the filter off every interface now and remove its pins.
    Detach {
        #[command(flatten)]
        locations: Locations,
    },
    /// Config file tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file exactly as `run` would; exit code 4 if invalid.
    Check {
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The config file. Without it, the embedded default runs.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Interface to attach to (repeatable); overrides the config.
    #[arg(long = "interface", short = 'i')]
    pub interfaces: Vec<String>,
    /// Overrides filter.pin_dir.
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Overrides state_dir.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Overrides admin.listen.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Overrides the address of admin.listen and keeps its port: the
    /// DaemonSet passes the pod IP (`--admin-ip $(POD_IP)`), so one
    /// ConfigMap serves every node. IPv4 or IPv6, without brackets.
    #[arg(long, conflicts_with = "admin_listen")]
    pub admin_ip: Option<std::net::IpAddr>,
    /// Threads serving the proxy and the daemon's tasks (tokio workers).
    /// Benchmarks set it to compare with other proxies' worker counts.
    #[arg(long, default_value_t = DEFAULT_WORKER_THREADS, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: u16,
}

/// Async worker threads when `run --worker-threads` is not given, and for
/// every other command.
pub const DEFAULT_WORKER_THREADS: u16 = 2;

/// The whole `xdpgate` process: parse the arguments, run the command, turn
/// the outcome into an exit code. The binary's `main` is this.
pub fn process_main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // The daemon sets up logging from its config; the other commands
        // only log warnings.
        crate::logging::init("warn", crate::logging::LogFormat::Text);
    }
    let workers = match &cli.command {
        Command::Run(args) => args.worker_threads,
        _ => DEFAULT_WORKER_THREADS,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(workers))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("xdpgate: error: starting the async runtime: {e}");
            return ExitCode::from(Exit::Failure as u8);
        }
    };
    match runtime.block_on(main(cli)) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            eprintln!("xdpgate: error: {e:#}");
            ExitCode::from(Exit::for_error(&e) as u8)
        }
    }
}

pub async fn main(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Run(args) => {
            daemon::run(RunOptions {
                config: args.config,
                interfaces: args.interfaces,
                pin_dir: args.pin_dir,
                state_dir: args.state_dir,
                admin_listen: args.admin_listen,
                admin_ip: args.admin_ip,
            })
            .await?;
            Ok(Exit::Ok)
        }
        Command::Status { locations, json } => status::status(&locations, json),
        Command::Stats {
            locations,
            watch,
            interval,
            json,
        } => stats(&locations, watch, interval, json).await,
        Command::Top(args) => top::top(&args).await,
        Command::Check {
            address,
            tcp,
            udp,
            locations,
            json,
        } => {
            let transport = tcp.map(Transport::Tcp).or(udp.map(Transport::Udp));
            check(&locations, address, transport, json)
        }
        Command::Sets {
            name,
            locations,
            json,
        } => sets(&locations, name.as_deref(), json),
        Command::Detach { locations } => detach(&locations),
        Command::Config(ConfigCommand::Check { file, json }) => config_check(&file, json),
    }
}

fn mask_names(mask: SetMask, names: &[String]) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            names
                .get(bit)
                .cloned()
                .unwrap_or_else(|| format!("set#{bit}"))
        })
        .collect()
}

fn print_json(value: &serde_json::Value) {
    let _ = writeln!(std::io::stdout(), "{value}");
}

async fn stats(locations: &Locations, watch: bool, interval: f64, json: bool) -> Result<Exit> {
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

/// Set names for the kernel's bits, if the daemon's status describes the
/// generation in force.
fn set_names_for(state_dir: &Path, generation: u64) -> Vec<String> {
    match daemon_status(state_dir) {
        Some((status, _)) if status.policy.generation == generation => status.policy.set_names,
        _ => Vec::new(),
    }
}

fn check(
    locations: &Locations,
    address: IpAddr,
    transport: Option<Transport>,
    json: bool,
) -> Result<Exit> {
    let pinned = PinnedFilter::open(&locations.pin_dir)?;
    let explanation = pinned.explain(address, transport)?;
    let names = set_names_for(&locations.state_dir, explanation.generation);
    let member_of = explanation
        .matched
        .map(|(_, mask)| mask_names(mask, &names))
        .unwrap_or_default();
    let denied_by = mask_names(explanation.denied_by, &names);
    let verdict = explanation.port.map(|(_, _, reason)| reason);
    let dropped = verdict
        .map(Reason::is_drop)
        .unwrap_or(explanation.denied_by != 0 && explanation.armed);
    let transport_text = |t: Transport| match t {
        Transport::Tcp(p) => format!("a TCP SYN to port {p}"),
        Transport::Udp(p) => format!("a UDP datagram to port {p}"),
    };
    let why = match explanation.port {
        None if !explanation.armed => "the filter is not armed: it passes everything".to_string(),
        None if !denied_by.is_empty() => format!("it is in denied set(s) {}", denied_by.join(", ")),
        None => "no port given (--tcp or --udp); membership shown above".to_string(),
        Some((t, bound, reason)) => {
            let bound_names = mask_names(bound, &names);
            match reason {
                Reason::PassUnarmed => "the filter is not armed: it passes everything".to_string(),
                Reason::DropDeny => format!("it is in denied set(s) {}", denied_by.join(", ")),
                Reason::PassUnboundPort => {
                    format!("{} is not protected: no rule binds it", transport_text(t))
                }
                Reason::PassMember => format!(
                    "{} is allowed from {}, and the source is a member",
                    transport_text(t),
                    bound_names.join(", ")
                ),
                _ => format!(
                    "{} is allowed only from {}, and the source is in none of them",
                    transport_text(t),
                    bound_names.join(", ")
                ),
            }
        }
    };
    if json {
        print_json(&json!({
            "source": explanation.source.to_string(),
            "armed": explanation.armed,
            "generation": explanation.generation,
            "matched_prefix": explanation.matched.map(|(net, _)| net.to_string()),
            "member_of": member_of,
            "denied_by": denied_by,
            "transport": explanation.port.map(|(t, _, _)| match t {
                Transport::Tcp(p) => json!({"protocol": "tcp", "port": p}),
                Transport::Udp(p) => json!({"protocol": "udp", "port": p}),
            }),
            "action": if dropped { "drop" } else { "pass" },
            "reason": verdict.map(Reason::label),
            "why": why,
        }));
    } else {
        let mut out = format!(
            "{}: {}\n",
            explanation.source,
            match explanation.matched {
                Some((net, _)) => format!("in {} via {net}", member_of.join(", ")),
                None => "in no set".to_string(),
            }
        );
        out.push_str(&format!(
            "verdict: {}{} ({why})\n",
            if dropped { "DROP" } else { "PASS" },
            verdict
                .map(|r| format!(" [{}]", r.label()))
                .unwrap_or_default()
        ));
        let _ = std::io::stdout().write_all(out.as_bytes());
    }
    Ok(if dropped { Exit::Dropped } else { Exit::Ok })
}

fn sets(locations: &Locations, only: Option<&str>, json: bool) -> Result<Exit> {
    let pinned = PinnedFilter::open(&locations.pin_dir)?;
    let control = pinned.control()?;
    let slot = control.active_slot();
    let names = set_names_for(&locations.state_dir, control.generation);
    if names.is_empty() {
        tracing::warn!(
            "no daemon status for generation {}; sets are shown by bit number",
            control.generation
        );
    }
    let prefixes = pinned.prefixes(slot)?;
    let (tcp, udp) = pinned.bound_ports(slot)?;
    let bits = prefixes.iter().fold(0, |acc, (_, m)| acc | m)
        | tcp.values().fold(0, |acc, m| acc | m)
        | udp.values().fold(0, |acc, m| acc | m);
    let mut listed = Vec::new();
    for bit in (0..64).filter(|b| bits & (1u64 << b) != 0) {
        let name = names
            .get(bit)
            .cloned()
            .unwrap_or_else(|| format!("set#{bit}"));
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let members: Vec<String> = prefixes
            .iter()
            .filter(|(_, m)| m & (1u64 << bit) != 0)
            .map(|(net, _)| net.to_string())
            .collect();
        let ports = |map: &std::collections::BTreeMap<u16, SetMask>| {
            map.iter()
                .filter(|(_, m)| *m & (1u64 << bit) != 0)
                .map(|(p, _)| *p)
                .collect::<Vec<u16>>()
        };
        listed.push((name, members, ports(&tcp), ports(&udp)));
    }
    if let Some(only) = only {
        if listed.is_empty() {
            bail!("the kernel's active policy has no set named `{only}`");
        }
    }
    if json {
        print_json(&json!({
            "generation": control.generation,
            "sets": listed.iter().map(|(name, members, tcp, udp)| json!({
                "name": name, "prefixes": members, "tcp_ports": tcp, "udp_ports": udp,
            })).collect::<Vec<_>>(),
        }));
    } else {
        let mut out = format!("policy generation {}\n", control.generation);
        for (name, members, tcp, udp) in &listed {
            out.push_str(&format!(
                "{name}: {} prefixes; tcp {}; udp {}\n",
                members.len(),
                ports_text(tcp),
                ports_text(udp)
            ));
            for member in members {
                out.push_str(&format!("  {member}\n"));
            }
        }
        let _ = std::io::stdout().write_all(out.as_bytes());
    }
    Ok(Exit::Ok)
}

/// `80,443,30000-32767`: consecutive ports folded into ranges.
fn ports_text(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "-".to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut start = ports[0];
    let mut end = ports[0];
    for &port in &ports[1..] {
        if port == end.wrapping_add(1) {
            end = port;
            continue;
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        start = port;
        end = port;
    }
    parts.push(if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    });
    parts.join(",")
}

fn detach(locations: &Locations) -> Result<Exit> {
    if let Some((status, true)) = daemon_status(&locations.state_dir) {
        eprintln!(
            "xdpgate: warning: the daemon (pid {}) is still running; stop it too, or its next \
             restart will attach the filter again",
            status.pid
        );
    }
    let detached = filter::detach_pinned(&locations.pin_dir)?;
    if !detached.removed_dir {
        println!("xdpgate: nothing pinned at {}", locations.pin_dir.display());
        return Ok(Exit::NotPinned);
    }
    if detached.interfaces.is_empty() {
        println!(
            "xdpgate: removed the pins under {}",
            locations.pin_dir.display()
        );
    } else {
        println!(
            "xdpgate: detached from {} and removed the pins under {}",
            detached.interfaces.join(", "),
            locations.pin_dir.display()
        );
    }
    Ok(Exit::Ok)
}

fn config_check(file: &Path, json: bool) -> Result<Exit> {
    match config::load(file) {
        Ok(config) => {
            let interfaces = if config.filter.interfaces.is_empty() {
                "the default-route interface".to_string()
            } else {
                config.filter.interfaces.join(", ")
            };
            if json {
                print_json(&json!({"file": file.display().to_string(), "valid": true}));
            } else {
                let proxy = config
                    .proxy
                    .as_ref()
                    .map(|p| {
                        format!(
                            "; proxy: {} entrypoints, {} routes, {} services",
                            p.entrypoints.len(),
                            p.routes.len(),
                            p.services.len()
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{}: ok ({} sets, {} allow rules, {} denied sets, on {interfaces}{proxy})",
                    file.display(),
                    config.filter.sets.len(),
                    config.filter.allow.len(),
                    config.filter.deny.len(),
                );
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            if json {
                print_json(&json!({
                    "file": file.display().to_string(), "valid": false, "error": e.to_string(),
                    "line": e.line, "key": e.key,
                }));
            } else {
                eprintln!("xdpgate: {e}");
            }
            Ok(Exit::BadConfig)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_takes_the_admin_address_alone_but_not_beside_a_whole_listen_address() {
        let ip = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Run(args)) => Ok(args.admin_ip),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(
            ip(&["xdpgate", "run", "--admin-ip", "10.0.0.2"]),
            Ok(Some("10.0.0.2".parse().unwrap()))
        );
        assert_eq!(
            ip(&["xdpgate", "run", "--admin-ip", "2001:db8::2"]),
            Ok(Some("2001:db8::2".parse().unwrap()))
        );
        let both = ip(&[
            "xdpgate",
            "run",
            "--admin-ip",
            "10.0.0.2",
            "--admin-listen",
            "10.0.0.2:1",
        ])
        .unwrap_err();
        assert!(both.contains("--admin-listen"), "{both}");
        let unexpanded = ip(&["xdpgate", "run", "--admin-ip", "$(POD_IP)"]).unwrap_err();
        assert!(unexpanded.contains("$(POD_IP)"), "{unexpanded}");
    }

    #[test]
    fn run_takes_a_worker_thread_count_and_refuses_zero() {
        let workers = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Run(args)) => Ok(args.worker_threads),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(workers(&["xdpgate", "run"]), Ok(DEFAULT_WORKER_THREADS));
        assert_eq!(workers(&["xdpgate", "run", "--worker-threads", "1"]), Ok(1));
        let zero = workers(&["xdpgate", "run", "--worker-threads", "0"]).unwrap_err();
        assert!(zero.contains("--worker-threads"), "{zero}");
    }
}
