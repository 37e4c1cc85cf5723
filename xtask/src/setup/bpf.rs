//! Steps 2 and 3 of `ensure`: bpf-linker built against LLVM 22 in the
//! cache, and bpffs mounted where the pins live.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::{
    cache_dir, find_on_path, skipping, Problem, Run, BPFFS, BPF_LINKER_DIR, BPF_LINKER_VERSION,
    LIBLLVM, LLVM_PREFIX,
};
use crate::process;

/// Step 2: bpf-linker, built against LLVM 22, cached outside the source tree.
pub(super) fn linker(run: &mut Run) -> Result<()> {
    let bin = bpf_linker_bin()?;
    let install_root = bin
        .parent()
        .and_then(Path::parent)
        .context("bpf-linker path has no install root")?
        .to_path_buf();
    if let Some(version) = bpf_linker_version(&bin) {
        let state = if run.install {
            "already at"
        } else {
            "present at"
        };
        println!(
            "setup: bpf-linker {state} {} ({version}){}",
            bin.display(),
            skipping(run.install)
        );
    } else if run.install && Path::new(LIBLLVM).exists() {
        println!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 into {} \
             (3-4 minutes on 2 cores)",
            install_root.display()
        );
        let mut cmd = bpf_linker_command(&install_root, bin.exists())?;
        process::run("setup", &mut cmd)?;
        match bpf_linker_version(&bin) {
            Some(version) => println!("setup: built {} ({version})", bin.display()),
            None => bail!(
                "setup: `cargo install` finished but `{} --version` does not run",
                bin.display()
            ),
        }
    } else {
        let why = if bin.exists() {
            "does not run"
        } else {
            "does not exist"
        };
        println!("setup: bpf-linker at {} {why}", bin.display());
        let cmd = bpf_linker_command(&install_root, bin.exists())?;
        run.problems.push(Problem {
            what: format!("bpf-linker {} {why}", bin.display()),
            fix: process::describe(&cmd),
            fix_needs_root: false,
            to_build: true,
        });
    }
    if let Some(other) = find_on_path("bpf-linker").filter(|p| *p != bin) {
        println!(
            "setup: note: {} is on PATH; the eBPF build uses it instead of the cached one",
            other.display()
        );
    }
    Ok(())
}

/// Step 3: bpffs at /sys/fs/bpf, where pinned maps and links live.
pub(super) fn filesystem(run: &mut Run) -> Result<()> {
    if bpffs_mounted()? {
        let state = if run.install {
            "already mounted"
        } else {
            "mounted"
        };
        println!("setup: bpffs {state} at {BPFFS}{}", skipping(run.install));
    } else if run.can_install {
        println!("setup: mounting bpffs at {BPFFS}");
        fs::create_dir_all(BPFFS).with_context(|| format!("setup: creating {BPFFS}"))?;
        process::run(
            "setup",
            Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]),
        )?;
        if !bpffs_mounted()? {
            bail!("setup: `mount -t bpf bpf {BPFFS}` succeeded but /proc/mounts shows no bpf mount there");
        }
    } else {
        println!("setup: bpffs is not mounted at {BPFFS}");
        run.problems.push(Problem {
            what: format!("bpffs is not mounted at {BPFFS}"),
            fix: format!("mkdir -p {BPFFS} && mount -t bpf bpf {BPFFS}"),
            fix_needs_root: true,
            to_build: false,
        });
    }
    Ok(())
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("setup: reading /proc/mounts")?;
    Ok(bpf_mounted_at(&mounts, BPFFS))
}

/// Whether /proc/mounts text has a mount of fstype `bpf` at `dir`.
pub(super) fn bpf_mounted_at(mounts: &str, dir: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next();
        fields.next() == Some(dir) && fields.next() == Some("bpf")
    })
}

fn bpf_linker_bin() -> Result<PathBuf> {
    let cache = cache_dir(env::var_os("XDG_CACHE_HOME"), env::var_os("HOME"))
        .context("setup: neither XDG_CACHE_HOME nor HOME is set, so there is no cache directory")?;
    Ok(cache.join(BPF_LINKER_DIR).join("bin").join("bpf-linker"))
}

/// `bpf-linker --version`'s first line, when the binary exists and runs.
fn bpf_linker_version(bin: &Path) -> Option<String> {
    if !bin.is_file() {
        return None;
    }
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status.success().then(|| {
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().unwrap_or("").trim().to_string()
    })
}

/// The `cargo install` that builds bpf-linker against Debian's LLVM 22. With
/// `force`, a broken binary already there is replaced.
fn bpf_linker_command(install_root: &Path, force: bool) -> Result<Command> {
    let mut cmd = process::cargo();
    cmd.env("LLVM_PREFIX", LLVM_PREFIX)
        .env(
            "PATH",
            process::path_with(&Path::new(LLVM_PREFIX).join("bin"))?,
        )
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22", "--root"])
        .arg(install_root);
    if force {
        cmd.arg("--force");
    }
    Ok(cmd)
}
