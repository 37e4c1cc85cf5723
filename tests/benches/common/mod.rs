//! What every benchmark binary shares: its arguments (`--quick`, `--rounds
//! N`, `--out FILE`), the machine description, medians and percentiles, and
//! the result JSON that `cargo xtask bench` turns into the report (the shape
//! is documented in xtask/src/bench/report.rs).
#![allow(dead_code)] // each bench binary uses its own part of this module

use std::{
    path::PathBuf,
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Map, Value};

pub struct Args {
    pub quick: bool,
    pub rounds: usize,
    pub out: PathBuf,
    /// `--name value` pairs this module does not know, for the bench itself.
    pub extra: Vec<(String, String)>,
}

impl Args {
    /// Parses the command line; `bench` names the default output file.
    /// Exits with a message on a bad argument.
    pub fn parse(bench: &str) -> Args {
        let mut args = Args {
            quick: false,
            rounds: 0,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../target/bench/{bench}.json")),
            extra: Vec::new(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => args.quick = true,
                // cargo bench passes --bench to every bench binary.
                "--bench" => {}
                name if name.starts_with("--") => {
                    let Some(value) = it.next() else {
                        fail(bench, &format!("{name} needs a value"));
                    };
                    match name {
                        "--rounds" => {
                            args.rounds =
                                value.parse().ok().filter(|&r| r > 0).unwrap_or_else(|| {
                                    fail(
                                        bench,
                                        &format!("--rounds {value}: not a count of 1 or more"),
                                    )
                                })
                        }
                        "--out" => args.out = value.into(),
                        _ => args.extra.push((name.to_string(), value)),
                    }
                }
                other => fail(bench, &format!("unexpected argument `{other}`")),
            }
        }
        if args.rounds == 0 {
            args.rounds = if args.quick { 1 } else { 3 };
        }
        args
    }

    /// The value of `--name` among the extra arguments, parsed.
    pub fn extra<T: std::str::FromStr>(&self, bench: &str, name: &str) -> Option<T> {
        self.extra.iter().find(|(n, _)| n == name).map(|(_, v)| {
            v.parse()
                .unwrap_or_else(|_| fail(bench, &format!("{name} {v}: not a valid value")))
        })
    }

    /// Fails on an extra argument not in `known`.
    pub fn only(&self, bench: &str, known: &[&str]) {
        if let Some((name, _)) = self
            .extra
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            fail(
                bench,
                &format!(
                    "unknown argument {name} (known: --quick --rounds --out {})",
                    known.join(" ")
                ),
            );
        }
    }
}

pub fn fail(bench: &str, message: &str) -> ! {
    eprintln!("bench {bench}: {message}");
    std::process::exit(2)
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `p`th percentile (0-100) of `values` by nearest rank; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A JSON number, or null for NaN (JSON has no NaN).
pub fn num(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// The first line a command prints, or `unknown`.
pub fn version_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The installed version of a Debian package.
pub fn package_version(package: &str) -> String {
    version_of("dpkg-query", &["-W", "-f=${Version}", package])
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1048576.0))
        .unwrap_or_else(|| "unknown".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": memory,
        "os": os,
        "kernel": version_of("uname", &["-r"]),
        "rustc": version_of("rustc", &["--version"]),
        "load average at start (1, 5, 15 min)": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

/// A benchmark's result, written as JSON by [`Report::write`].
pub struct Report {
    pub value: Map<String, Value>,
    started: Instant,
}

impl Report {
    pub fn new(bench: &str, title: &str, description: &str, args: &Args) -> Report {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let started = version_of(
            "date",
            &[
                "-u",
                "-d",
                &format!("@{since_epoch}"),
                "+%Y-%m-%dT%H:%M:%SZ",
            ],
        );
        let mut value = Map::new();
        value.insert("bench".into(), json!(bench));
        value.insert("title".into(), json!(title));
        value.insert("description".into(), json!(description));
        value.insert("quick".into(), json!(args.quick));
        value.insert("rounds".into(), json!(args.rounds));
        value.insert("started".into(), json!(started));
        value.insert("machine".into(), machine());
        for key in ["versions", "samples"] {
            value.insert(key.into(), json!({}));
        }
        for key in ["commands", "tables", "plots", "notes"] {
            value.insert(key.into(), json!([]));
        }
        Report {
            value,
            started: Instant::now(),
        }
    }

    /// For a benchmark that builds its report after measuring: the run
    /// began at `started`, not when the report was made.
    pub fn began_at(&mut self, started: Instant) {
        let back = started.elapsed();
        let since_epoch = SystemTime::now()
            .checked_sub(back)
            .unwrap_or_else(SystemTime::now)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let wall = version_of(
            "date",
            &[
                "-u",
                "-d",
                &format!("@{since_epoch}"),
                "+%Y-%m-%dT%H:%M:%SZ",
            ],
        );
        self.value.insert("started".into(), json!(wall));
        self.started = started;
    }

    fn push(&mut self, key: &str, item: Value) {
        if let Some(Value::Array(list)) = self.value.get_mut(key) {
            list.push(item);
        }
    }

    pub fn version(&mut self, tool: &str, version: String) {
        if let Some(Value::Object(map)) = self.value.get_mut("versions") {
            map.insert(tool.into(), json!(version));
        }
    }

    pub fn command(&mut self, command: String) {
        let known = self.value["commands"]
            .as_array()
            .is_some_and(|c| c.contains(&json!(command)));
        if !known {
            self.push("commands", json!(command));
        }
    }

    pub fn note(&mut self, note: &str) {
        self.push("notes", json!(note));
    }

    pub fn table(&mut self, title: &str, columns: &[&str], rows: Vec<Vec<Value>>) {
        self.push(
            "tables",
            json!({"title": title, "columns": columns, "rows": rows}),
        );
    }

    /// A bar chart: one group per category, one bar per `(series, values)`.
    pub fn plot(
        &mut self,
        file: &str,
        title: &str,
        unit: &str,
        categories: &[String],
        series: Vec<(&str, Vec<f64>)>,
    ) {
        let series: Vec<Value> = series
            .into_iter()
            .map(|(name, values)| json!({"name": name, "values": values.into_iter().map(num).collect::<Vec<_>>()}))
            .collect();
        self.push(
            "plots",
            json!({"file": file, "title": title, "unit": unit, "categories": categories, "series": series}),
        );
    }

    pub fn samples(&mut self, key: &str, samples: Value) {
        if let Some(Value::Object(map)) = self.value.get_mut("samples") {
            map.insert(key.into(), samples);
        }
    }

    pub fn write(mut self, out: &std::path::Path) {
        self.value.insert(
            "duration_s".into(),
            num(self.started.elapsed().as_secs_f64()),
        );
        if let Some(dir) = out.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let text = serde_json::to_string_pretty(&Value::Object(self.value)).expect("JSON");
        match std::fs::write(out, text + "\n") {
            Ok(()) => println!("wrote {}", out.display()),
            Err(e) => {
                eprintln!("could not write {}: {e}", out.display());
                std::process::exit(1);
            }
        }
    }
}

/// Jiffies from the `cpu` line of /proc/stat: (softirq, busy = all but idle and iowait).
pub fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (get(6), busy)
}

/// Nanoseconds per jiffy (USER_HZ).
pub fn ns_per_jiffy() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1e9 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// CPU time (user + system, in jiffies) of `pid` and its threads and
/// children still running, from /proc/<pid>/stat of each process in the tree.
pub fn tree_cpu_jiffies(root: u32) -> u64 {
    tree(root)
        .iter()
        .map(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            // after ')': state(0) ... utime(11) stime(12)
            let at = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            at(11) + at(12)
        })
        .sum()
}

/// Resident memory of `pid` and its descendants, in KiB.
pub fn tree_rss_kib(root: u32) -> u64 {
    tree(root)
        .iter()
        .map(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// `root` and every process descending from it.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        all.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    all
}
