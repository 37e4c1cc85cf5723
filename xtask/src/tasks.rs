//! The developer tasks on top of setup: `build`, `run`, `test` and the
//! benchmarks. Each one says what it runs and stops at the first failure,
//! naming the step and the command.
use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::{
    process,
    setup::{self, Mode, Need},
};

/// The XDP program's crate builds only for bpfel-unknown-none (userspace's
/// build.rs builds it); on the host it cannot link, so clippy and the tests
/// leave it out of `--workspace`.
const EBPF_PACKAGE: &str = "xdpgate-ebpf";

/// `cargo build -p xdpgate`, after checking the toolchain is there.
pub fn build(release: bool) -> Result<()> {
    setup::ensure(Mode::Check, Need::Build).context("build: toolchain check failed")?;
    let mut cmd = process::cargo();
    cmd.args(["build", "-p", "xdpgate"]);
    if release {
        cmd.arg("--release");
    }
    process::run("build", &mut cmd)
}

/// Setup (installing), a release build, then `xdpgate run ARGS` in place of
/// this process, so Ctrl-C reaches it directly and its exit code is ours.
pub fn run(args: &[String]) -> Result<()> {
    setup::ensure(Mode::Install, Need::Everything).context("run: setup failed")?;
    process::run(
        "run",
        process::cargo().args(["build", "-p", "xdpgate", "--release"]),
    )?;
    let bin = process::target_dir().join("release").join("xdpgate");
    if !bin.is_file() {
        bail!(
            "run: the release build finished but {} does not exist",
            bin.display()
        );
    }
    let mut cmd = Command::new(&bin);
    cmd.arg("run").args(args);
    let shown = process::describe(&cmd);
    println!("run: exec {shown}");
    let error = cmd.exec();
    Err(error).with_context(|| format!("run: could not exec {shown}"))
}

/// One step of `test`: a command, or setup itself when `cmd` is `None`.
struct Step {
    name: &'static str,
    cmd: Option<Command>,
    /// What to do when it fails, if there is more to say than the error.
    hint: Option<&'static str>,
}

/// Setup, `cargo fmt --check`, clippy with warnings denied, the workspace's
/// tests (the root-only ones skip with a message when not root), then, as
/// root, the demo and the benchmarks' smoke run.
pub fn test(no_lint: bool, test_args: &[String]) -> Result<()> {
    let mut steps = vec![Step {
        name: "setup",
        cmd: None,
        hint: None,
    }];
    if !no_lint {
        let mut fmt = process::cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        steps.push(Step {
            name: "format check",
            cmd: Some(fmt),
            hint: Some("`cargo fmt --all` fixes it"),
        });
        let mut clippy = process::cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--exclude",
            EBPF_PACKAGE,
            "--all-targets",
        ]);
        clippy.args(["--", "-D", "warnings"]);
        steps.push(Step {
            name: "clippy",
            cmd: Some(clippy),
            hint: None,
        });
    }
    let mut tests = process::cargo();
    tests.args(["test", "--workspace", "--exclude", EBPF_PACKAGE]);
    if !test_args.is_empty() {
        tests.arg("--").args(test_args);
    }
    steps.push(Step {
        name: "tests",
        cmd: Some(tests),
        hint: None,
    });
    // The README's five-minute lab, so it cannot rot: it checks its own
    // outcome. It needs root for namespaces and XDP.
    if setup::is_root() && test_args.is_empty() {
        let mut demo = Command::new(std::env::current_exe().context("test: finding xtask")?);
        demo.arg("demo");
        steps.push(Step {
            name: "demo",
            cmd: Some(demo),
            hint: None,
        });
        // The benchmarks' smoke mode: one short round of each, so none of
        // them rots; results go to target/bench/quick, never docs/.
        let mut bench = Command::new(std::env::current_exe().context("test: finding xtask")?);
        bench.args(["bench", "all", "--quick"]);
        steps.push(Step {
            name: "benchmark smoke (bench all --quick)",
            cmd: Some(bench),
            hint: Some("`cargo xtask bench <name> --quick` reruns one benchmark"),
        });
    } else if !setup::is_root() {
        println!("test: not root, so the demo and benchmark smoke steps are left out");
    }

    let total = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        let n = i + 1;
        let name = step.name;
        println!("\ntest: step {n}/{total}: {name}");
        // The root-only tests skip themselves when not root, so only what
        // compiling needs is required here.
        let result = match step.cmd {
            None => setup::ensure(Mode::Install, Need::Build),
            Some(mut cmd) => process::run("test", &mut cmd),
        };
        if let Err(error) = result {
            let hint = step.hint.map(|h| format!("\n{h}")).unwrap_or_default();
            bail!("test: step {n}/{total} ({name}) failed: {error:#}{hint}");
        }
    }
    println!("\ntest: all {total} steps passed");
    Ok(())
}
