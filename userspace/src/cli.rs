//! The `xdpgate` command line: argument parsing, exit codes and the dispatch
//! to the commands, each of which has its own module (`check`, `sets`,
//! `stats`, `status`, `top`, `detach`, `config_check`).
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
};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::{
    config,
    daemon::{self, RunOptions},
    filter::{pins::Transport, FilterError},
};

mod check;
mod config_check;
mod detach;
mod sets;
mod stats;
mod status;
mod top;

use check::check;
use config_check::config_check;
use detach::detach;
use sets::sets;
use stats::stats;
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

fn print_json(value: &serde_json::Value) {
    let _ = writeln!(std::io::stdout(), "{value}");
}

/// Set names for the kernel's bits, if the daemon's status describes the
/// generation in force.
fn set_names_for(state_dir: &Path, generation: u64) -> Vec<String> {
    match daemon_status(state_dir) {
        Some((status, _)) if status.policy.generation == generation => status.policy.set_names,
        _ => Vec::new(),
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
