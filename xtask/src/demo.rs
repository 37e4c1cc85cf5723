//! `cargo xtask demo`: a five-minute lab on one machine. Two network
//! namespaces, "internet" and "origin", joined by a veth pair; the host's own
//! interfaces are not touched. "internet" holds a Cloudflare address and a
//! stranger's; "origin" holds xdpgate (filter and TLS proxy) in front of a
//! small backend. The demo sends the same HTTPS request from both sources and
//! shows what happened: the stranger's SYNs die in the kernel, the Cloudflare
//! source's request is routed and answered. It checks those outcomes (exit
//! status 1 if either is wrong) and removes everything it made, also on
//! failure.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    process,
    setup::{self, Mode, Need},
};

const INTERNET: &str = "xg-demo-internet";
const ORIGIN: &str = "xg-demo-origin";
const ORIGIN_IF: &str = "xgdemo-origin";
const INTERNET_IF: &str = "xgdemo-inet";
const ORIGIN_ADDR: &str = "192.0.2.1";
/// An address in Cloudflare's 104.16.0.0/13; it exists only inside the demo.
const CLOUDFLARE_ADDR: &str = "104.16.0.10";
/// A documentation address standing for anyone else on the internet.
const STRANGER_ADDR: &str = "203.0.113.10";
const PIN_DIR: &str = "/sys/fs/bpf/xdpgate-demo";

/// Everything the demo made, removed on drop.
struct Lab {
    dir: PathBuf,
    children: Vec<Child>,
    binary: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            // SIGTERM first: the daemon drains and leaves the filter, which
            // `detach` removes below.
            terminate(child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(&self.binary)
            .args(["detach", "--pin-dir", PIN_DIR])
            .stdout(Stdio::null())
            .status();
        for ns in [INTERNET, ORIGIN] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        println!(
            "demo: removed the namespaces, the pins and {}",
            self.dir.display()
        );
    }
}

/// SIGTERM to a child, through `kill(2)` (xtask has no libc dependency).
fn terminate(pid: u32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: signalling a child this process started and has not reaped.
    unsafe { kill(pid as i32, 15) };
}

fn ip(args: &str) -> Result<()> {
    process::run("demo", Command::new("ip").args(args.split_whitespace()))
}

fn in_ns(ns: &str) -> Command {
    // nsenter switches only the network namespace, so /sys/fs/bpf stays the host's.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{ns}")).arg("--");
    cmd
}

fn config(dir: &Path) -> String {
    format!(
        "state_dir: {state}
log: {{ level: warn }}
filter:
  interfaces: [{ORIGIN_IF}]
  pin_dir: {PIN_DIR}
  sets:
    cloudflare: {{ cloudflare: {{}} }}
  allow:
    - {{ tcp: [80, 443], from: [cloudflare] }}
proxy:
  trusted: [cloudflare]
  entrypoints:
    web:       {{ listen: \"[::]:80\", redirect: websecure }}
    websecure: {{ listen: \"[::]:443\", tls: {{}} }}
  routes:
    - {{ name: site, path: /, service: \"127.0.0.1:8000\" }}
  access_log: {{ path: {log} }}
",
        state = dir.join("state").display(),
        log = dir.join("access.log").display(),
    )
}

pub fn demo(release: bool) -> Result<()> {
    setup::ensure(Mode::Install, Need::Everything).context("demo: setup failed")?;
    let mut build = process::cargo();
    build.args(["build", "-p", "xdpgate"]);
    if release {
        build.arg("--release");
    }
    process::run("demo", &mut build)?;
    let binary = process::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("xdpgate");

    for ns in [INTERNET, ORIGIN] {
        // A demo interrupted earlier may have left them.
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
    let dir = std::env::temp_dir().join(format!("xdpgate-demo-{}", std::process::id()));
    fs::create_dir_all(dir.join("site"))?;
    let mut lab = Lab {
        dir: dir.clone(),
        children: Vec::new(),
        binary: binary.clone(),
    };

    println!("\n== 1. Two namespaces: \"internet\" and \"origin\", joined by a veth pair");
    ip(&format!("netns add {INTERNET}"))?;
    ip(&format!("netns add {ORIGIN}"))?;
    ip(&format!(
        "link add {ORIGIN_IF} netns {ORIGIN} type veth peer name {INTERNET_IF} netns {INTERNET}"
    ))?;
    ip(&format!("-n {ORIGIN} link set lo up"))?;
    ip(&format!("-n {INTERNET} link set lo up"))?;
    ip(&format!(
        "-n {ORIGIN} addr add {ORIGIN_ADDR}/24 dev {ORIGIN_IF}"
    ))?;
    ip(&format!("-n {ORIGIN} link set {ORIGIN_IF} up"))?;
    ip(&format!(
        "-n {ORIGIN} route add {CLOUDFLARE_ADDR}/32 dev {ORIGIN_IF}"
    ))?;
    ip(&format!(
        "-n {ORIGIN} route add {STRANGER_ADDR}/32 dev {ORIGIN_IF}"
    ))?;
    ip(&format!(
        "-n {INTERNET} addr add {CLOUDFLARE_ADDR}/32 dev {INTERNET_IF}"
    ))?;
    ip(&format!(
        "-n {INTERNET} addr add {STRANGER_ADDR}/32 dev {INTERNET_IF}"
    ))?;
    ip(&format!("-n {INTERNET} link set {INTERNET_IF} up"))?;
    ip(&format!(
        "-n {INTERNET} route add {ORIGIN_ADDR}/32 dev {INTERNET_IF}"
    ))?;

    println!("\n== 2. A small backend on 127.0.0.1:8000 in \"origin\"");
    fs::write(dir.join("site/index.html"), "hello from the origin\n")?;
    lab.children.push(
        in_ns(ORIGIN)
            .args([
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir.join("site"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("demo: starting the backend (python3 -m http.server)")?,
    );

    println!(
        "\n== 3. xdpgate in \"origin\": TCP 80/443 only from Cloudflare, TLS proxy to the backend"
    );
    let config_path = dir.join("config.yaml");
    fs::write(&config_path, config(&dir))?;
    println!("{}", config(&dir));
    let log = fs::File::create(dir.join("daemon.log"))?;
    lab.children.push(
        in_ns(ORIGIN)
            .arg(&binary)
            .args(["run", "--config"])
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("demo: starting xdpgate")?,
    );
    wait_ready(&dir)?;

    println!(
        "\n== 4. The same HTTPS request from both sources, with `xdpgate stats --watch` running"
    );
    let mut watch = Command::new(&binary)
        .args([
            "stats",
            "--watch",
            "--interval",
            "1",
            "--pin-dir",
            PIN_DIR,
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .spawn()
        .context("demo: starting xdpgate stats --watch")?;
    let url = format!("https://{ORIGIN_ADDR}/");
    let from_cloudflare = curl(CLOUDFLARE_ADDR, &url)?;
    println!(
        "from Cloudflare ({CLOUDFLARE_ADDR}): {}",
        from_cloudflare.trim()
    );
    let from_stranger = curl(STRANGER_ADDR, &url)?;
    println!(
        "from a stranger ({STRANGER_ADDR}): {}",
        from_stranger.trim()
    );
    thread::sleep(Duration::from_millis(1100));
    let _ = watch.kill();
    let _ = watch.wait();

    println!("\n== 5. What the kernel counted (xdpgate stats), and why (xdpgate check)");
    let stats = Command::new(&binary)
        .args([
            "stats",
            "--interval",
            "0.5",
            "--pin-dir",
            PIN_DIR,
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .output()?;
    print!("{}", String::from_utf8_lossy(&stats.stdout));
    for source in [CLOUDFLARE_ADDR, STRANGER_ADDR] {
        let check = Command::new(&binary)
            .args([
                "check",
                source,
                "--tcp",
                "443",
                "--pin-dir",
                PIN_DIR,
                "--state-dir",
            ])
            .arg(dir.join("state"))
            .output()?;
        print!("{}", String::from_utf8_lossy(&check.stdout));
    }
    println!("\nThe proxy's access log:");
    print!(
        "{}",
        fs::read_to_string(dir.join("access.log")).unwrap_or_default()
    );

    let stats_text = String::from_utf8_lossy(&stats.stdout).to_string();
    let served = from_cloudflare.contains("hello from the origin");
    // curl: "(28) Failed to connect ... Timeout was reached": no SYN-ACK came back.
    let timed_out =
        from_stranger.contains("Timeout was reached") || from_stranger.contains("timed out");
    let dropped = timed_out && stats_text.contains("not_member_tcp");
    println!("\n== Result");
    println!(
        "Cloudflare's request was {}; the stranger's SYNs were {}.",
        if served {
            "routed and answered"
        } else {
            "NOT answered"
        },
        if dropped {
            "dropped in the kernel"
        } else {
            "NOT dropped"
        }
    );
    drop(lab);
    if !(served && dropped) {
        bail!(
            "demo: the lab did not behave as it should (daemon log was in {}/daemon.log)",
            dir.display()
        );
    }
    Ok(())
}

/// Polls /readyz in "origin" for up to 20 s.
fn wait_ready(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = in_ns(ORIGIN)
            .args(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg("http://127.0.0.1:9901/readyz")
            .output()?;
        if String::from_utf8_lossy(&out.stdout) == "200" {
            println!("demo: xdpgate is ready");
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "demo: xdpgate did not become ready in 20 s; its log:\n{}",
        fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    )
}

/// `curl` from `source` in "internet"; returns the body, or what went wrong.
fn curl(source: &str, url: &str) -> Result<String> {
    let out = in_ns(INTERNET)
        .args([
            "curl",
            "-sS",
            "-k",
            "--connect-timeout",
            "2",
            "--interface",
            source,
            url,
        ])
        .output()
        .context("demo: running curl")?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
