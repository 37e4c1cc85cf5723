//! `cargo xtask`: the project's own commands, so that a fresh Debian machine
//! needs nothing but a clone and a rustup toolchain. `setup` installs what is
//! missing (and only that), `build`/`run`/`test`/`bench` drive cargo on top of
//! it. This crate deliberately depends on nothing of xdpgate's, so it compiles
//! before the eBPF toolchain exists.
mod bench;
mod demo;
mod image;
mod process;
mod setup;
mod tasks;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Setup, build, run, test and benchmarks for xdpgate"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Install what is missing: Debian's Rust + LLVM 22 and the test tools (apt),
    /// bpf-linker 0.13.0 built against LLVM 22 (in ~/.cache/xdpgate), and bpffs
    /// at /sys/fs/bpf. Idempotent; installing needs root.
    Setup {
        /// Only report what is missing (exit 1 if anything is); install nothing.
        #[arg(long)]
        check: bool,
    },
    /// Check the toolchain, then `cargo build -p xdpgate`.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Setup, a release build, then `xdpgate run ARGS...`: the daemon, with the
    /// embedded default config (Cloudflare's ranges on TCP 80/443) unless
    /// `-- --config FILE` names one. Ctrl-C stops it and leaves the filter in force.
    Run {
        /// Arguments for `xdpgate run`, after `--` (e.g. `-- --interface eth0` or `-- --config my.yaml`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, `cargo fmt --check`, clippy (-D warnings), then the workspace's tests
    /// (all but the eBPF crate, which only builds for the BPF target).
    Test {
        /// Skip the fmt and clippy steps.
        #[arg(long)]
        no_lint: bool,
        /// Arguments for `cargo test` after its `--` (e.g. `-- --test-threads=2`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A five-minute lab: two network namespaces, "internet" (a Cloudflare
    /// address and a stranger's) and "origin" (xdpgate, filter and TLS proxy,
    /// in front of a small backend). Sends the same HTTPS request from both,
    /// shows `xdpgate stats --watch`, `check` and the access log, checks the
    /// outcome, and removes everything. Needs root.
    Demo {
        /// Use a release build (slower to build, as deployed).
        #[arg(long)]
        release: bool,
    },
    /// A release build, then the container image from it without a registry
    /// (`buildah from scratch`, deploy/container/build-image.sh), committed to
    /// local storage as localhost/xdpgate:<version> and :latest. Needs root and
    /// `apt-get install buildah podman runc`.
    Image {
        /// Tag the image T instead (repeatable).
        #[arg(long = "tag", value_name = "T")]
        tags: Vec<String>,
    },
    /// Benchmarks against the competitors (UFW, nftables, nginx, HAProxy,
    /// Caddy), each in one invocation with alternating rounds; writes
    /// JSON, PNG charts and README.md to docs/benchmarks/ (target/bench/quick/
    /// with --quick). Needs root. See docs/benchmarks/README.md.
    Bench {
        /// flood, proxy, xdp, sets, all, or report (only re-assemble README.md
        /// and the charts from the JSON files).
        #[arg(value_parser = ["flood", "proxy", "xdp", "sets", "ratelimit", "all", "report"])]
        bench: String,
        /// A smoke run: one short round, to prove each benchmark still runs.
        #[arg(long)]
        quick: bool,
        /// Rounds of each competitor (default 3; 1 with --quick).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: Option<u32>,
        /// Where the JSON, PNGs and README.md go.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
        /// Further arguments for the bench binary, after `--` (xdp: `--repeat N`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup { check } => {
            let mode = if check {
                setup::Mode::Check
            } else {
                setup::Mode::Install
            };
            setup::ensure(mode, setup::Need::Everything)
        }
        Task::Build { release } => tasks::build(release),
        Task::Run { args } => tasks::run(&args),
        Task::Test { no_lint, args } => tasks::test(no_lint, &args),
        Task::Image { tags } => image::image(&tags),
        Task::Demo { release } => demo::demo(release),
        Task::Bench {
            bench,
            quick,
            rounds,
            out_dir,
            args,
        } => bench::run(&bench::Options {
            bench,
            quick,
            rounds,
            out_dir,
            extra: args,
        }),
    };
    if let Err(error) = result {
        eprintln!("\nxtask: error: {error:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_after_the_separator_pass_through_untouched() {
        let cli = Cli::try_parse_from([
            "xtask",
            "run",
            "--",
            "--interface",
            "eth0",
            "--config",
            "x.yaml",
        ])
        .expect("parses");
        match cli.command {
            Task::Run { args } => assert_eq!(args, ["--interface", "eth0", "--config", "x.yaml"]),
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["xtask", "test", "--no-lint", "--", "--test-threads=2"])
            .expect("parses");
        match cli.command {
            Task::Test { no_lint, args } => {
                assert!(no_lint);
                assert_eq!(args, ["--test-threads=2"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        // Without `--`, xdpgate's flags are not mistaken for xtask's.
        assert!(Cli::try_parse_from(["xtask", "run", "--interface", "eth0"]).is_err());
    }

    #[test]
    fn bench_takes_a_benchmark_its_options_and_extra_arguments() {
        let cli = Cli::try_parse_from([
            "xtask", "bench", "flood", "--quick", "--rounds", "5", "--", "--repeat", "10",
        ])
        .expect("parses");
        match cli.command {
            Task::Bench {
                bench,
                quick,
                rounds,
                out_dir,
                args,
            } => {
                assert_eq!((bench.as_str(), quick, rounds), ("flood", true, Some(5)));
                assert_eq!(out_dir, None);
                assert_eq!(args, ["--repeat", "10"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["xtask", "bench", "nginx"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "bench", "all", "--rounds", "0"]).is_err());
    }
}
