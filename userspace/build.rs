//! Builds the XDP program (`ebpf/program`) for `bpfel-unknown-none` and puts the
//! objects in OUT_DIR, where `filter::load` embeds them.
//!
//! The eBPF target needs `-Z build-std=core`, so a compiler with the standard
//! library's source: either a rustup nightly with `rust-src`, or Debian's
//! `rustc-web` + `rust-web-src` (stable, unlocked with RUSTC_BOOTSTRAP=1). It also
//! needs `bpf-linker`. This script finds whichever is present and, when nothing
//! is, fails with the exact commands that install it.
use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

const PROGRAM_CRATE: &str = "xdpgate-ebpf";
const OBJECTS: [&str; 2] = ["xdpgate", "xdpgate-baseline"];
const SETUP_HINT: &str = "\
run `cargo xtask setup` (as root), which does:
    apt-get install -y rustc-web rust-web-src cargo-web
    LLVM_PREFIX=/usr/lib/llvm-22 PATH=/usr/lib/llvm-22/bin:$PATH cargo install bpf-linker \\
        --version 0.13.0 --no-default-features --features llvm-22 \\
        --root ~/.cache/xdpgate/bpf-linker-0.13.0-llvm22
or, where rustup can download components:
    rustup toolchain install nightly --component rust-src
    cargo install bpf-linker";

/// A toolchain that can build `core` for the BPF target.
struct Toolchain {
    name: &'static str,
    /// The cargo to run, and its leading arguments.
    cargo: Vec<OsString>,
    /// Extra environment (RUSTC, RUSTC_BOOTSTRAP).
    env: Vec<(&'static str, OsString)>,
}

fn main() {
    if let Err(error) = build() {
        // cargo shows a build script's stderr when it fails; say it plainly.
        eprintln!("\nerror: cannot build the xdpgate eBPF program: {error:#}\n");
        std::process::exit(1);
    }
}

fn build() -> Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let ebpf_dir = manifest_dir.join("../ebpf");
    for path in [
        "program/src",
        "program/Cargo.toml",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=XDPGATE_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=PATH");

    let toolchain = find_toolchain()?;
    let linker_dir = find_bpf_linker()?;

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new(&toolchain.cargo[0]);
    cmd.args(&toolchain.cargo[1..])
        .current_dir(&ebpf_dir)
        .args(["build", "--package", PROGRAM_CRATE, "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo's settings (clippy's wrapper, RUSTFLAGS for the host,
    // the host RUSTC) must not leak into the BPF build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
            || key == "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    for (key, value) in &toolchain.env {
        cmd.env(key, value);
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
    );
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker_dir];
    paths.extend(env::split_paths(&path));
    cmd.env("PATH", env::join_paths(paths)?);

    let status = cmd
        .status()
        .with_context(|| format!("running {cmd:?} ({} toolchain)", toolchain.name))?;
    if !status.success() {
        bail!(
            "building {PROGRAM_CRATE} with the {} toolchain failed: {status}",
            toolchain.name
        );
    }
    for object in OBJECTS {
        let built = target_dir.join("bpfel-unknown-none/release").join(object);
        std::fs::copy(&built, out_dir.join(object))
            .with_context(|| format!("copying {}", built.display()))?;
    }
    Ok(())
}

fn has_core_source(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

fn sysroot_of(mut cmd: Command) -> Option<PathBuf> {
    let out = cmd.args(["--print", "sysroot"]).output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn find_toolchain() -> Result<Toolchain> {
    let wanted = env::var("XDPGATE_EBPF_TOOLCHAIN").ok();
    let want = |name: &str| wanted.as_deref().is_none_or(|w| w == name);

    // Upstream aya's route: rustup nightly with rust-src.
    if want("nightly") {
        let mut rustc = Command::new("rustup");
        rustc.args(["run", "nightly", "rustc"]);
        if let Some(sysroot) = sysroot_of(rustc) {
            if has_core_source(&sysroot) {
                return Ok(Toolchain {
                    name: "nightly",
                    cargo: ["rustup", "run", "nightly", "cargo"]
                        .map(OsString::from)
                        .to_vec(),
                    env: vec![],
                });
            }
        }
    }
    // Debian's rustc-web: stable, ships the library source, links LLVM 22.
    if want("debian") {
        let rustc = Path::new("/usr/bin/rustc");
        let cargo = Path::new("/usr/bin/cargo");
        if rustc.exists() && cargo.exists() {
            if let Some(sysroot) = sysroot_of(Command::new(rustc)) {
                if has_core_source(&sysroot) {
                    return Ok(Toolchain {
                        name: "debian",
                        cargo: vec![cargo.into()],
                        env: vec![("RUSTC", rustc.into()), ("RUSTC_BOOTSTRAP", "1".into())],
                    });
                }
            }
        }
    }
    bail!(
        "no toolchain can build `core` for bpfel-unknown-none{}: neither a rustup nightly with \
         rust-src nor Debian's rustc-web with rust-web-src is installed.\n{SETUP_HINT}",
        wanted
            .map(|w| format!(" (XDPGATE_EBPF_TOOLCHAIN={w})"))
            .unwrap_or_default()
    )
}

/// `bpf-linker` on PATH, or where `cargo xtask setup` caches it.
fn find_bpf_linker() -> Result<PathBuf> {
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            if dir.join("bpf-linker").is_file() {
                return Ok(dir);
            }
        }
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("xdpgate"));
    if let Some(cache) = cache {
        if let Ok(entries) = std::fs::read_dir(&cache) {
            let mut dirs: Vec<_> = entries
                .flatten()
                .map(|e| e.path().join("bin"))
                .filter(|bin| bin.join("bpf-linker").is_file())
                .collect();
            dirs.sort();
            if let Some(dir) = dirs.pop() {
                return Ok(dir);
            }
        }
    }
    bail!("bpf-linker is not on PATH nor in ~/.cache/xdpgate.\n{SETUP_HINT}")
}
