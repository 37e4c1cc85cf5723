//! The daemon side of the lab: a per-test pin and state directory, the
//! `xdpgate-under-test run` process inside the server namespace, the other
//! commands run as a user would, the admin listener, and what `ip link` says
//! is attached.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::net::{in_netns, Lab};

/// The admin listener's port inside the server namespace (each test has its
/// own namespace, so one port does for all).
pub const ADMIN_PORT: u16 = 9901;

/// A temporary directory for config, set files, the daemon's state and logs,
/// and a pin directory of this test's own under /sys/fs/bpf. On drop the
/// filter is detached and the pins removed, then the directory.
pub struct Workdir {
    dir: tempfile::TempDir,
    /// The `xdpgate` binary under test.
    pub bin: PathBuf,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Workdir {
    /// `bin` is the binary under test: a test passes
    /// `env!("CARGO_BIN_EXE_xdpgate-under-test")`, which Cargo defines only
    /// for the test crates themselves.
    pub fn new(test_tag: &str, bin: &str) -> Workdir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("xdpgate-{test_tag}-"))
            .tempdir()
            .expect("temporary directory");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).expect("state directory");
        Workdir {
            dir,
            bin: PathBuf::from(bin),
            pin_dir: PathBuf::from(format!(
                "/sys/fs/bpf/xdpgate-test-{test_tag}-{}",
                std::process::id()
            )),
            state_dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Runs `xdpgate <args> --pin-dir <pins> --state-dir <state>`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        let (pins, state) = (self.pin_dir.to_str(), self.state_dir.to_str());
        all.extend(["--pin-dir", pins.expect("utf-8 path")]);
        all.extend(["--state-dir", state.expect("utf-8 path")]);
        xdpgate(&self.bin, &all)
    }

    /// `stats --json`: the kernel's counters now.
    pub fn stats(&self) -> KernelCounters {
        let out = self.cli(&["stats", "--json", "--interval", "0.05"]);
        assert_eq!(out.code, 0, "xdpgate stats: {out:?}");
        KernelCounters::from_stats_json(&out.json())
    }

    /// `status --json`, whatever its exit code (0 healthy, 6 degraded).
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.code == 0 || out.code == 6,
            "xdpgate status --json: {out:?}"
        );
        out.json()
    }

    /// `check <address> --tcp|--udp <port> --json`: the exit code and the
    /// `action` it reports.
    pub fn check(&self, address: &str, protocol: &str, port: u16) -> (i32, String) {
        let port = port.to_string();
        let out = self.cli(&["check", address, &format!("--{protocol}"), &port, "--json"]);
        assert!(
            out.code == 0 || out.code == 5,
            "xdpgate check {address}: {out:?}"
        );
        let action = out.json()["action"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (out.code, action)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.pin_dir.exists() {
            let out = self.cli(&["detach"]);
            if out.code != 0 {
                eprintln!("cleanup: xdpgate detach: {out:?}");
            }
            if self.pin_dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&self.pin_dir) {
                    eprintln!("cleanup: removing {}: {e}", self.pin_dir.display());
                }
            }
        }
    }
}

/// What one run of the command line printed and returned.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Stdout as one JSON value (the first line, for commands that print
    /// one object per line).
    pub fn json(&self) -> Value {
        let line = self.stdout.lines().next().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs `bin` (the binary under test) in the root namespace: the pins are
/// global.
pub fn xdpgate(bin: &Path, args: &[&str]) -> CliOutput {
    let output = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run xdpgate-under-test");
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `xdpgate run` inside the server namespace. Killed with SIGKILL on drop;
/// if the test is failing, its log is printed first.
pub struct Daemon {
    child: Option<Child>,
    server_ns: String,
    admin_port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with `config` and the workdir's pin and state
    /// directories. `name` tells its log file from another instance's.
    pub fn start(lab: &Lab, work: &Workdir, config: &Path, name: &str) -> Daemon {
        Daemon::spawn(lab, work, config, name, ADMIN_PORT, &[])
    }

    /// As [`Daemon::start`], with `env` added to the daemon's environment
    /// (the in-cluster discovery variables `KUBERNETES_SERVICE_HOST/PORT`).
    pub fn start_with_env(
        lab: &Lab,
        work: &Workdir,
        config: &Path,
        name: &str,
        env: &[(String, String)],
    ) -> Daemon {
        Daemon::spawn(lab, work, config, name, ADMIN_PORT, env)
    }

    /// [`Daemon::start`] with the admin listener on 127.0.0.1:`admin_port`,
    /// for several daemons in one server namespace.
    pub fn start_with_admin(
        lab: &Lab,
        work: &Workdir,
        config: &Path,
        name: &str,
        admin_port: u16,
    ) -> Daemon {
        Daemon::spawn(lab, work, config, name, admin_port, &[])
    }

    fn spawn(
        lab: &Lab,
        work: &Workdir,
        config: &Path,
        name: &str,
        admin_port: u16,
        env: &[(String, String)],
    ) -> Daemon {
        let log = work.path(&format!("{name}.log"));
        let out = File::create(&log).expect("daemon log file");
        let err = out.try_clone().expect("daemon log file");
        // nsenter switches only the network namespace, so /sys/fs/bpf stays
        // the host's (`ip netns exec` would remount /sys).
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", lab.server_ns))
            .arg("--")
            .arg(&work.bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--pin-dir")
            .arg(&work.pin_dir)
            .arg("--state-dir")
            .arg(&work.state_dir)
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn nsenter xdpgate-under-test run");
        Daemon {
            child: Some(child),
            server_ns: lab.server_ns.clone(),
            admin_port,
            log,
        }
    }

    /// Starts the daemon and waits until /readyz says it is ready.
    pub fn start_ready(lab: &Lab, work: &Workdir, config: &Path, name: &str) -> Daemon {
        let mut daemon = Daemon::start(lab, work, config, name);
        daemon.wait_ready(Duration::from_secs(10));
        daemon
    }

    /// `/metrics` of this daemon.
    pub fn metrics(&self) -> Metrics {
        Metrics::scrape_at(&self.server_ns, self.admin_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls /readyz until it answers 200; panics with the reason (and the
    /// log) if the daemon exits or `timeout` passes first.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the daemon exited ({status}) before it was ready");
                }
            }
            match admin_get_at(&self.server_ns, self.admin_port, "/readyz") {
                Ok(reply) if reply.status == 200 => return,
                Ok(reply) => last = format!("{} {}", reply.status, reply.body.trim()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon is not ready after {timeout:?}: /readyz: {last}");
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and its exit status once it has stopped; panics if it is
    /// still running after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("a running daemon");
        // SAFETY: signalling a child this guard owns and has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the daemon") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon is still running {timeout:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log {} ----\n{}---- end of daemon log ----",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// An HTTP answer from the admin listener.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

/// A plain HTTP/1.1 GET of `path` on the admin listener, from inside the
/// server namespace.
pub fn admin_get(server_ns: &str, path: &str) -> std::io::Result<HttpReply> {
    admin_get_at(server_ns, ADMIN_PORT, path)
}

/// [`admin_get`] on an admin listener at 127.0.0.1:`port`.
pub fn admin_get_at(server_ns: &str, port: u16, path: &str) -> std::io::Result<HttpReply> {
    in_netns(server_ns, || {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_http(&raw)
    })
}

fn parse_http(raw: &[u8]) -> std::io::Result<HttpReply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("bad chunked body"))?
    } else {
        body.to_string()
    };
    Ok(HttpReply { status, body })
}

fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// `/metrics` parsed: every sample by metric name and label set.
#[derive(Debug, Default)]
pub struct Metrics {
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Metrics {
    pub fn scrape(server_ns: &str) -> Metrics {
        Metrics::scrape_at(server_ns, ADMIN_PORT)
    }

    /// `/metrics` of the admin listener at 127.0.0.1:`port`.
    pub fn scrape_at(server_ns: &str, port: u16) -> Metrics {
        let reply = admin_get_at(server_ns, port, "/metrics").expect("GET /metrics");
        assert_eq!(reply.status, 200, "GET /metrics: {}", reply.body);
        Metrics::parse(&reply.body)
    }

    pub fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, parse_labels(labels.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            samples.insert((name.to_string(), labels), value);
        }
        Metrics { samples }
    }

    /// The sample of `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    /// `xdpgate_packets_total` as [`KernelCounters`].
    pub fn packets(&self) -> KernelCounters {
        let mut cells = BTreeMap::new();
        for ((name, labels), value) in &self.samples {
            if name == "xdpgate_packets_total" {
                let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
                cells.insert(
                    (label("action"), label("reason"), label("family")),
                    *value as u64,
                );
            }
        }
        KernelCounters { cells }
    }
}

/// `a="x",b="y\"z"` into a map (the values we meet have no commas inside
/// quotes except escaped ones, which this handles).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next().map(|(_, c)| c).unwrap_or('\\')),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Packet counters by (action, reason, family), as `stats --json` or
/// `/metrics` report them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub cells: BTreeMap<(String, String, String), u64>,
}

impl KernelCounters {
    pub fn from_stats_json(stats: &Value) -> KernelCounters {
        let cells = stats["counters"]
            .as_array()
            .expect("stats --json has `counters`")
            .iter()
            .map(|c| {
                let text = |k: &str| c[k].as_str().expect("counter label").to_string();
                let packets = c["packets"].as_u64().expect("counter packets");
                ((text("action"), text("reason"), text("family")), packets)
            })
            .collect();
        KernelCounters { cells }
    }

    /// Packets of `reason` (`not_member_tcp`, `member`...) from `family`
    /// (`ipv4`, `ipv6`).
    pub fn get(&self, reason: &str, family: &str) -> u64 {
        self.cells
            .iter()
            .filter(|((_, r, f), _)| r == reason && f == family)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Packets of every cell with this action (`drop` or `pass`).
    pub fn action(&self, action: &str) -> u64 {
        self.cells
            .iter()
            .filter(|((a, _, _), _)| a == action)
            .map(|(_, v)| *v)
            .sum()
    }
}

/// The ids of the XDP programs attached to `dev` in namespace `ns`, one per
/// attachment mode, as `ip -d -j link show` reports them.
pub fn xdp_program_ids(ns: &str, dev: &str) -> Vec<u64> {
    let output = Command::new("ip")
        .args(["-n", ns, "-d", "-j", "link", "show", "dev", dev])
        .output()
        .expect("run ip link show");
    assert!(output.status.success(), "ip link show dev {dev} failed");
    let links: Value = serde_json::from_slice(&output.stdout).expect("ip -j prints JSON");
    let Some(xdp) = links.get(0).and_then(|l| l.get("xdp")) else {
        return Vec::new();
    };
    let id = |entry: &Value| {
        entry
            .get("prog")
            .and_then(|p| p.get("id"))
            .and_then(Value::as_u64)
    };
    // With -d, `attached` lists every mode's program (`prog` repeats the
    // single one); older iproute2 prints only `prog`.
    match xdp.get("attached").and_then(Value::as_array) {
        Some(attached) => attached.iter().filter_map(id).collect(),
        None => id(xdp).into_iter().collect(),
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` and the
/// last value it saw when `timeout` passes first.
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    mut condition: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let value = probe();
        if condition(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {value:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
