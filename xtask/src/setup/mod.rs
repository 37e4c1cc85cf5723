//! `cargo xtask setup`: puts on this machine what building and testing xdpgate
//! need, and nothing that is already there. Each step checks first: the
//! Debian packages (Debian's Rust with its standard-library source and LLVM
//! 22, plus the tools the tests call), `bpf-linker` built against LLVM 22 in a
//! cache outside the source tree and bpffs mounted at /sys/fs/bpf (`bpf`),
//! kubectl, and the PyPI packages in their venv (`python`).
//! `--check` (and `build`/`bench`, which only check) reports what is missing
//! with the command that fixes it, instead of fixing it.
//! The recipe is the one in TOOLCHAIN.md; `userspace/build.rs` finds the result.
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Result};

use crate::process;

mod bpf;
mod python;

/// A group of Debian packages and whether compiling needs it (the others are
/// only needed to run the root-only tests and benchmarks).
struct Group {
    packages: &'static [&'static str],
    to_build: bool,
}

/// Every Debian package the project needs.
const PACKAGES: &[Group] = &[
    // The eBPF toolchain: Debian's rustc 1.96 ships its std source (needed for
    // `-Z build-std=core` on bpfel-unknown-none) and links LLVM 22; it pulls in
    // llvm-22-dev and libllvm22, which bpf-linker is built against.
    Group {
        packages: &["rustc-web", "rust-web-src", "cargo-web"],
        to_build: true,
    },
    // Tools the root-only tests and benchmarks call: `ip` (namespaces, veths),
    // `nsenter`/`unshare` (the daemon inside a test namespace), `bpftool`
    // (inspecting loaded programs and maps), and the peers nobody here wrote:
    // `nmap` (SYN scans), `hping3` (spoofed SYN floods), `curl`, `h2load`
    // (nghttp2-client), `wrk`, `testssl.sh` and `slowhttptest` against the proxy.
    Group {
        packages: &[
            "iproute2",
            "util-linux",
            "bpftool",
            "nmap",
            "hping3",
            "curl",
            "nghttp2-client",
            "wrk",
            "testssl.sh",
            "slowhttptest",
            // `htpasswd`: the htpasswd files the basic_auth tests log in
            // against are made by Apache's own tool.
            "apache2-utils",
            // The cluster-wide rate limit's tests and bench start their own
            // `redis-server` on a free loopback port.
            "redis-server",
            // A Python venv for `kubernetes-validate` (the manifest checks;
            // `kubectl` is step 4).
            "python3-venv",
            // `systemd-analyze verify` on the systemd unit.
            "systemd",
            // A real Prometheus scraping the daemon (its HTTP API answers
            // every query of the Grafana dashboard), and `promtool check
            // metrics` on a scrape (tests/deploy_prometheus.rs). Started by
            // the test in its own directory, never as a service.
            "prometheus",
            // The container image (`cargo xtask image`) and running it; podman
            // with runc, as crun does not work on these machines.
            "buildah",
            "podman",
            "runc",
            // `cargo xtask bench`: the competitors (run with temporary
            // configs inside the benchmark's namespaces, never as services),
            // the SYN flood generator (trafgen), perf for profiles, and the
            // font the report's charts are drawn with.
            "nginx",
            "haproxy",
            "caddy",
            "ufw",
            "nftables",
            "netsniff-ng",
            "linux-perf",
            "fonts-dejavu-core",
        ],
        to_build: false,
    },
];

/// Where Debian installs LLVM 22; bpf-linker's build script needs it in
/// LLVM_PREFIX.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// The library bpf-linker links; installed by [`LLVM_DEV_PACKAGE`].
const LIBLLVM: &str = "/usr/lib/llvm-22/lib/libLLVM.so";
const LLVM_DEV_PACKAGE: &str = "llvm-22-dev";

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Directory under `${XDG_CACHE_HOME:-$HOME/.cache}/xdpgate`; build.rs looks there.
const BPF_LINKER_DIR: &str = "bpf-linker-0.13.0-llvm22";

const BPFFS: &str = "/sys/fs/bpf";

/// Install what is missing, or only report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Install,
    Check,
}

/// What the caller needs: missing things outside it are reported as warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Compiling: the eBPF toolchain packages, LLVM 22 and bpf-linker.
    Build,
    /// Everything, including the test tools and the bpffs mount.
    Everything,
}

/// Something missing, and the command that fixes it.
struct Problem {
    what: String,
    fix: String,
    fix_needs_root: bool,
    to_build: bool,
}

/// Checks each piece and, in [`Mode::Install`], installs what is missing when it
/// can. Fails naming every missing piece `need` covers and its fix.
pub fn ensure(mode: Mode, need: Need) -> Result<()> {
    let root = is_root();
    let install = mode == Mode::Install;
    let can_install = install && root;
    match (mode, root) {
        (Mode::Install, true) => println!("setup: running as root; installing what is missing"),
        (Mode::Install, false) => {
            println!("setup: not running as root: checking, and building only what needs no root")
        }
        (Mode::Check, _) => println!("setup: checking (installing nothing)"),
    }
    let mut run = Run {
        install,
        can_install,
        apt: Apt::default(),
        problems: Vec::new(),
    };
    apt_packages(&mut run)?;
    llvm_library(&mut run)?;
    bpf::linker(&mut run)?;
    bpf::filesystem(&mut run)?;
    kubectl(&mut run)?;
    python::packages(&mut run)?;
    finish(mode, need, run.problems)
}

/// What one `ensure` run decided and found: whether it installs, the apt
/// runner, and the problems it leaves for `finish`.
struct Run {
    install: bool,
    can_install: bool,
    apt: Apt,
    problems: Vec<Problem>,
}

/// Step 1: Debian packages.
fn apt_packages(run: &mut Run) -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        let all: Vec<&str> = PACKAGES.iter().flat_map(|g| g.packages).copied().collect();
        let state = if run.install {
            "already installed"
        } else {
            "installed"
        };
        println!(
            "setup: apt packages {state}: {}{}",
            all.join(" "),
            skipping(run.install)
        );
    } else if run.can_install {
        println!("setup: installing apt packages: {}", missing.join(" "));
        run.apt.install(&missing)?;
        stop_benchmark_services(&missing)?;
        let still = missing_packages()?;
        if !still.is_empty() {
            bail!(
                "setup: apt-get install finished but these packages are still not installed: {}",
                still.join(" ")
            );
        }
    } else {
        println!("setup: apt packages missing: {}", missing.join(" "));
        run.problems.push(Problem {
            what: format!("apt packages not installed: {}", missing.join(" ")),
            fix: Apt::install_command(&missing, true),
            fix_needs_root: true,
            to_build: missing.iter().any(|p| package_needed_to_build(p)),
        });
    }
    Ok(())
}

/// Step 1b: LLVM 22's shared library, which bpf-linker links.
fn llvm_library(run: &mut Run) -> Result<()> {
    let toolchain_packages_missing = run.problems.iter().any(|p| p.to_build);
    if Path::new(LIBLLVM).exists() {
        println!("setup: LLVM 22 library present at {LIBLLVM}");
    } else if run.can_install {
        println!("setup: {LIBLLVM} is missing; installing apt package {LLVM_DEV_PACKAGE}");
        run.apt.install(&[LLVM_DEV_PACKAGE])?;
        if !Path::new(LIBLLVM).exists() {
            bail!(
                "setup: installed {LLVM_DEV_PACKAGE} but {LIBLLVM} still does not exist; \
                 bpf-linker cannot be built without it"
            );
        }
    } else if !toolchain_packages_missing {
        // (When the toolchain packages are missing, they bring it.)
        println!("setup: missing {LIBLLVM}");
        run.problems.push(Problem {
            what: format!("{LIBLLVM} does not exist"),
            fix: Apt::install_command(&[LLVM_DEV_PACKAGE], false),
            fix_needs_root: true,
            to_build: true,
        });
    }
    Ok(())
}

/// Step 4: kubectl, whose `kustomize` renders the manifests. Any kubectl will
/// do (some machines carry a newer one from another repository, which
/// Debian's kubernetes-client would clash with); Debian's only if none.
fn kubectl(run: &mut Run) -> Result<()> {
    if let Some(kubectl) = find_on_path("kubectl") {
        println!(
            "setup: kubectl present at {}{}",
            kubectl.display(),
            skipping(run.install)
        );
    } else if run.can_install {
        println!("setup: installing apt package kubernetes-client (kubectl)");
        run.apt.install(&["kubernetes-client"])?;
    } else {
        println!("setup: kubectl is not installed");
        run.problems.push(Problem {
            what: "kubectl is not installed".into(),
            fix: Apt::install_command(&["kubernetes-client"], false),
            fix_needs_root: true,
            to_build: false,
        });
    }
    Ok(())
}

/// The packages whose Debian packages start a system service where systemd
/// runs: the competitors of `cargo xtask bench` (on the host's ports 80/443),
/// Prometheus (on 9090) and Redis (on 6379). The benchmarks and tests start
/// their own instances inside namespaces or on their own ports, so the
/// services are stopped and disabled right after they are installed.
const BENCH_SERVICES: [&str; 5] = ["nginx", "haproxy", "caddy", "prometheus", "redis-server"];

fn stop_benchmark_services(installed: &[&str]) -> Result<()> {
    let services: Vec<&str> = BENCH_SERVICES
        .iter()
        .copied()
        .filter(|s| installed.contains(s))
        .collect();
    // /run/systemd/system exists only when systemd is the running init.
    if services.is_empty() || !Path::new("/run/systemd/system").is_dir() {
        return Ok(());
    }
    println!(
        "setup: stopping and disabling the services apt started ({}): the benchmarks and tests run their own",
        services.join(" ")
    );
    process::run(
        "setup",
        Command::new("systemctl")
            .args(["disable", "--now"])
            .args(&services),
    )
}

/// Debian's Python, which python3-venv serves (not a pyenv shim).
fn skipping(install: bool) -> &'static str {
    if install {
        "; skipping"
    } else {
        ""
    }
}

/// Warns about what `need` does not cover and fails on the rest.
fn finish(mode: Mode, need: Need, problems: Vec<Problem>) -> Result<()> {
    let (fatal, minor): (Vec<_>, Vec<_>) = problems
        .into_iter()
        .partition(|p| need == Need::Everything || p.to_build);
    for p in &minor {
        println!(
            "setup: warning: {} (not needed to build; fix as root: {})",
            p.what, p.fix
        );
    }
    if fatal.is_empty() {
        println!("setup: ok");
        return Ok(());
    }
    let mut message = format!("setup: {} missing:", plural(fatal.len(), "thing"));
    for p in &fatal {
        let how = if p.fix_needs_root { "as root" } else { "run" };
        message.push_str(&format!("\n  - {}\n      {how}: {}", p.what, p.fix));
    }
    message.push('\n');
    message.push_str(match mode {
        Mode::Check => "`cargo xtask setup` (as root) installs all of it.",
        // As root everything missing was installed or failed loudly already.
        Mode::Install => {
            "not running as root, so this was not installed: run `cargo xtask setup` as root, \
             or the commands above."
        }
    });
    bail!(message)
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn package_needed_to_build(package: &str) -> bool {
    package == LLVM_DEV_PACKAGE
        || PACKAGES
            .iter()
            .any(|g| g.to_build && g.packages.contains(&package))
}

/// Runs `apt-get update` once, before the first install.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, packages: &[&str]) -> Result<()> {
        if !self.updated {
            process::run("setup", Command::new("apt-get").arg("update"))?;
            self.updated = true;
        }
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages);
        process::run("setup", &mut cmd)
    }

    /// The shell command a user runs by hand.
    fn install_command(packages: &[&str], update: bool) -> String {
        format!(
            "{}DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
            if update { "apt-get update && " } else { "" },
            packages.join(" ")
        )
    }
}

/// Which of [`PACKAGES`] dpkg does not report as installed.
fn missing_packages() -> Result<Vec<&'static str>> {
    let all: Vec<&'static str> = PACKAGES.iter().flat_map(|g| g.packages).copied().collect();
    let mut cmd = Command::new("dpkg-query");
    cmd.args(["-W", "-f=${Package} ${Status}\n"]).args(&all);
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the rest.
    match process::output_if_installed(&mut cmd)? {
        Some(out) => Ok(missing_from(&all, &out)),
        None => bail!(
            "setup: dpkg-query is not installed: `cargo xtask setup` knows only Debian. Install \
             the equivalents of these Debian packages by hand: {}",
            all.join(" ")
        ),
    }
}

/// The packages of `wanted` that `dpkg-query -W -f='${Package} ${Status}\n'`
/// output does not show as installed (status `install ok installed`, or
/// `hold ok installed`). Removed packages whose config files remain show up as
/// `deinstall ok config-files` and count as missing.
fn missing_from<'a>(wanted: &[&'a str], dpkg_output: &str) -> Vec<&'a str> {
    let installed: Vec<&str> = dpkg_output
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [name, _want, _error, "installed"] => name.split(':').next(),
                _ => None,
            }
        })
        .collect();
    wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect()
}

/// Whether this process's effective uid is 0.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid(&status))
        == Some(0)
}

/// The effective uid from /proc/self/status (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/xdpgate`.
fn cache_dir(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let base = match xdg_cache_home.filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".cache"),
    };
    Some(base.join("xdpgate"))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::bpf::bpf_mounted_at;
    use super::*;

    #[test]
    fn finds_a_bpf_mount_only_with_fstype_bpf_at_the_directory() {
        let mounts = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
none /sys/fs/bpf tmpfs rw,relatime 0 0
bpf /run/other bpf rw,relatime 0 0
";
        assert!(
            !bpf_mounted_at(mounts, "/sys/fs/bpf"),
            "tmpfs there, bpf elsewhere"
        );
        let mounted =
            format!("{mounts}bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n");
        assert!(bpf_mounted_at(&mounted, "/sys/fs/bpf"));
        assert!(!bpf_mounted_at("", "/sys/fs/bpf"));
    }

    #[test]
    fn picks_the_packages_dpkg_does_not_show_installed() {
        let wanted = [
            "rustc-web",
            "rust-web-src",
            "cargo-web",
            "iproute2",
            "bpftool",
        ];
        // What dpkg-query prints: nothing at all for a package it never heard of
        // (cargo-web), config files only for a removed one (bpftool).
        let out = "\
rustc-web install ok installed
rust-web-src hold ok installed
iproute2 install ok installed
bpftool deinstall ok config-files
";
        assert_eq!(missing_from(&wanted, out), ["cargo-web", "bpftool"]);
        assert_eq!(missing_from(&wanted, ""), wanted);
        let all = "rustc-web install ok installed\nrust-web-src install ok installed\n\
                   cargo-web install ok installed\niproute2 install ok installed\n\
                   bpftool install ok installed\n";
        assert!(missing_from(&wanted, all).is_empty());
    }

    #[test]
    fn reads_the_effective_uid() {
        let status =
            "Name:\tcargo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn cache_dir_prefers_xdg_cache_home_then_home() {
        let dir = |xdg: Option<&str>, home: Option<&str>| {
            cache_dir(xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            dir(Some("/c"), Some("/h")),
            Some(PathBuf::from("/c/xdpgate"))
        );
        assert_eq!(
            dir(Some(""), Some("/h")),
            Some(PathBuf::from("/h/.cache/xdpgate"))
        );
        assert_eq!(
            dir(None, Some("/h")),
            Some(PathBuf::from("/h/.cache/xdpgate"))
        );
        assert_eq!(dir(None, None), None);
    }

    #[test]
    fn only_the_toolchain_packages_are_needed_to_build() {
        assert!(package_needed_to_build("rust-web-src"));
        assert!(package_needed_to_build(LLVM_DEV_PACKAGE));
        assert!(!package_needed_to_build("bpftool"));
    }
}
