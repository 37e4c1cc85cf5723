//! `cargo xtask bench <flood|proxy|xdp|sets|ratelimit|all> [--quick] [--rounds N]`:
//! each benchmark is a bench binary of the tests crate (`tests/benches/`),
//! run by `cargo bench` (so the release build of everything it needs comes
//! first) with `--out <dir>/<bench>.json`; then the report is re-assembled
//! from every JSON in the directory. Full runs write `docs/benchmarks/`, the
//! committed report; `--quick` (the smoke run `cargo xtask test` does) writes
//! `target/bench/quick/` unless `--out-dir` says otherwise, so a smoke run
//! never replaces measured figures.
pub mod report;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, Result};

use crate::{
    process,
    setup::{self, Mode, Need},
};

/// What to run and where the results go.
#[derive(Debug, Clone)]
pub struct Options {
    /// One of [`report::BENCHES`], `all`, or `report` (no benchmark, only
    /// the README and charts again).
    pub bench: String,
    pub quick: bool,
    pub rounds: Option<u32>,
    pub out_dir: Option<PathBuf>,
    /// Passed to the bench binary (or to each, with `all`) after its own flags.
    pub extra: Vec<String>,
}

pub fn run(options: &Options) -> Result<()> {
    // Everything, not only the build: the benchmarks call nginx, trafgen, ufw...
    setup::ensure(Mode::Check, Need::Everything).context("bench: setup check failed")?;
    let out_dir = options.out_dir.clone().unwrap_or_else(|| {
        if options.quick {
            process::target_dir().join("bench").join("quick")
        } else {
            process::workspace_root().join("docs").join("benchmarks")
        }
    });
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("bench: creating {}", out_dir.display()))?;
    let benches: Vec<&str> = if options.bench == "all" {
        report::BENCHES.to_vec()
    } else if options.bench == "report" {
        // Only re-assemble README.md and the charts from the JSON there.
        Vec::new()
    } else {
        vec![options.bench.as_str()]
    };
    let started = Instant::now();
    for bench in &benches {
        let mut cmd = process::cargo();
        cmd.args([
            "bench",
            "-p",
            "xdpgate-tests",
            "--bench",
            bench,
            "--",
            "--out",
        ])
        .arg(out_dir.join(format!("{bench}.json")));
        if options.quick {
            cmd.arg("--quick");
        }
        if let Some(rounds) = options.rounds {
            cmd.args(["--rounds", &rounds.to_string()]);
        }
        cmd.args(&options.extra);
        let began = Instant::now();
        process::run(&format!("bench {bench}"), &mut cmd)?;
        println!("bench {bench}: done in {:.0?}", began.elapsed());
    }
    let readme = report::assemble(&out_dir)?;
    if benches.is_empty() {
        println!("bench: report re-assembled at {}", readme.display());
        return Ok(());
    }
    println!(
        "bench: {} in {:.0?}; report at {}",
        benches.join(", "),
        started.elapsed(),
        readme.display()
    );
    Ok(())
}
