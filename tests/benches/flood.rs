//! `cargo xtask bench flood`: a SYN flood from random spoofed IPv4 sources
//! (trafgen, one process on one CPU) across a veth pair into a server
//! namespace with a listener on TCP 443, while a legitimate client (an
//! allowed source) opens connections to it. Four filters on the same path,
//! alternated round by round: none, real `ufw` (enabled inside the server
//! namespace with its config in a private mount namespace), an nftables
//! `netdev ingress` set drop, and xdpgate (the release daemon, XDP on the
//! server's veth). All three allow Cloudflare's ranges plus the client's
//! 198.51.100.0/24 on 443. On a veth the receiver's work runs in softirq on
//! the sender's CPU, so a cheaper filter shows as a higher flood rate.
//!
//! xdpgate runs with `xdp_mode: generic` here. Native XDP on a veth moves
//! the receive path onto the veth's own queue and NAPI poll, which the
//! sender then waits on: with it, trafgen got a fifth to a twentieth of the
//! packets through that it got with nftables, whatever the program did
//! (measured 2026-12-03), and that measures the veth, not the filter. Generic XDP sits on the same receive path as
//! the nftables ingress hook, so the rows compare the filters. On a NIC,
//! native XDP runs in the driver before any socket buffer is built.
//!
//! The host is never touched: everything is inside the two namespaces, and
//! the host's iptables/nftables rules and ufw files are compared before and
//! after (the run fails if they differ).
mod common;

use std::{
    net::IpAddr,
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{cpu_jiffies, median, ns_per_jiffy, num, percentile, Report};
use serde_json::{json, Value};
use xdpgate_tests::lab::{
    connect_from, enter_netns, lab_ready, net::run, Daemon, Lab, TcpServer, Workdir,
};

const BENCH: &str = "flood";
const PORT: u16 = 443;
const CLIENT_RANGE: &str = "198.51.100.0/24";
const COMPETITORS: [&str; 4] = ["no filter", "ufw", "nftables ingress", "xdpgate"];
/// The name `--compare`'s other xdpgate build runs under.
const COMPARED: &str = "xdpgate (compared)";

fn cloudflare_v4() -> Vec<String> {
    xdpgate::policy::cloudflare_default().sets["cloudflare"]
        .iter()
        .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
        .map(|n| n.to_string())
        .collect()
}

/// What the host's firewall looks like; must be the same after the run.
fn host_firewall() -> String {
    let mut all = String::new();
    for (program, args) in [
        ("iptables", &["-S"][..]),
        ("ip6tables", &["-S"][..]),
        ("nft", &["list", "ruleset"][..]),
        (
            "sh",
            &[
                "-c",
                "cat /etc/default/ufw; find /etc/ufw /lib/ufw -type f | sort | xargs cat",
            ][..],
        ),
    ] {
        let out = Command::new(program).args(args).output();
        all.push_str(&format!("== {program} {args:?}\n"));
        if let Ok(out) = out {
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    all
}

/// ufw's files copied into the workdir; every ufw command runs in the server
/// namespace and a private mount namespace where those copies are
/// bind-mounted over /etc/ufw, /etc/default/ufw and /lib/ufw.
struct Ufw {
    root: std::path::PathBuf,
    server_ns: String,
}

impl Ufw {
    fn new(work: &Workdir, server_ns: &str) -> Ufw {
        let root = work.path("ufw");
        std::fs::create_dir_all(&root).expect("ufw dir");
        let r = root.display();
        run(
            "sh",
            &[
                "-c",
                &format!(
                    "cp -a /etc/ufw {r}/etc-ufw && cp -a /lib/ufw {r}/lib-ufw && cp /etc/default/ufw {r}/default-ufw && \
                     sed -i 's/^IPT_SYSCTL=.*/IPT_SYSCTL=/; s/^IPT_MODULES=.*/IPT_MODULES=/' {r}/default-ufw"
                ),
            ],
        );
        Ufw {
            root,
            server_ns: server_ns.into(),
        }
    }

    /// The command line that runs `script` with ufw's files private.
    fn command(&self, script: &str) -> String {
        let r = self.root.display();
        format!(
            "ip netns exec {ns} unshare --mount --propagation private sh -ec 'mount --bind {r}/etc-ufw /etc/ufw; \
             mount --bind {r}/lib-ufw /lib/ufw; mount --bind {r}/default-ufw /etc/default/ufw; {script}'",
            ns = self.server_ns
        )
    }

    fn run(&self, script: &str) {
        run("sh", &["-c", &self.command(script)]);
    }
}

fn nft_ruleset(dev: &str, allowed: &[String]) -> String {
    format!(
        "table netdev xgbench {{\n  set allow {{ type ipv4_addr; flags interval; elements = {{ {} }} }}\n  \
         chain ingress {{ type filter hook ingress device \"{dev}\" priority 0; policy accept;\n    \
         ip protocol tcp tcp dport {PORT} tcp flags & (syn | ack) == syn ip saddr != @allow drop\n  }}\n}}\n",
        allowed.join(", ")
    )
}

fn xdpgate_config(dev: &str, allowed: &[String]) -> String {
    format!(
        "filter:\n  interfaces: [{dev}]\n  xdp_mode: generic\n  sets:\n    cloudflare: {{ cidrs: [{}] }}\n  allow:\n    - {{ tcp: [{PORT}], from: [cloudflare] }}\n",
        allowed.join(", ")
    )
}

/// `ip -s` counters of `dev` in `ns`: (tx packets, tx dropped).
fn tx_counters(ns: &str, dev: &str) -> (u64, u64) {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "-s", "link", "show", "dev", dev])
        .output()
        .expect("ip -s link");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let tx = &v[0]["stats64"]["tx"];
    (
        tx["packets"].as_u64().unwrap_or(0),
        tx["dropped"].as_u64().unwrap_or(0),
    )
}

struct Sample {
    rate: f64,
    sent_rate: f64,
    softirq_ns: f64,
    busy_ns: f64,
    p50_ms: f64,
    p99_ms: f64,
    success: f64,
    attempts: usize,
}

/// The flood for `duration` with the legitimate client probing meanwhile.
fn flood_once(lab: &Lab, conf: &str, duration: Duration) -> Sample {
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let prober = {
        let (stop, latencies, ns) = (
            Arc::clone(&stop),
            Arc::clone(&latencies),
            lab.client_ns.clone(),
        );
        std::thread::spawn(move || {
            enter_netns(&ns);
            let source: IpAddr = [198, 51, 100, 1].into();
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let ok = connect_from(source, PORT, Duration::from_secs(1)).is_ok();
                let mut l = latencies.lock().unwrap();
                l.1 += 1;
                if ok {
                    l.0.push(began.elapsed().as_secs_f64() * 1e3);
                }
                drop(l);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (tx0, drop0) = tx_counters(&lab.client_ns, &lab.client_if);
    let (soft0, busy0) = cpu_jiffies();
    let started = Instant::now();
    // trafgen forks its senders; SIGINT to the whole process group stops them.
    let mut trafgen = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.client_ns))
        .arg("--")
        .arg("trafgen")
        .args(trafgen_args(&lab.client_if, conf))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn trafgen");
    std::thread::sleep(duration);
    // SAFETY: signalling the process group of a child not yet reaped.
    unsafe { libc::kill(-(trafgen.id() as libc::pid_t), libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while trafgen.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            unsafe { libc::kill(-(trafgen.id() as libc::pid_t), libc::SIGKILL) };
            let _ = trafgen.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (soft1, busy1) = cpu_jiffies();
    let (tx1, drop1) = tx_counters(&lab.client_ns, &lab.client_if);
    stop.store(true, Ordering::Relaxed);
    let _ = prober.join();
    let sent = (tx1 - tx0) as f64;
    let delivered = sent - (drop1 - drop0) as f64;
    let (lat, attempts) = latencies.lock().unwrap().clone();
    let jiffy = ns_per_jiffy();
    Sample {
        rate: delivered / elapsed,
        sent_rate: sent / elapsed,
        softirq_ns: (soft1 - soft0) as f64 * jiffy / delivered.max(1.0),
        busy_ns: (busy1 - busy0) as f64 * jiffy / delivered.max(1.0),
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
        success: if attempts == 0 {
            f64::NAN
        } else {
            lat.len() as f64 / attempts as f64 * 100.0
        },
        attempts,
    }
}

fn trafgen_args(dev: &str, conf: &str) -> Vec<String> {
    [
        "--dev",
        dev,
        "--conf",
        conf,
        "--cpus",
        "1",
        "--no-sock-mem",
        "--notouch-irq",
        "--no-cpu-stats",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The filters a round runs, in order: none, ufw, nftables, then each
/// xdpgate build (this one, and `--compare`'s) with its own pin directory.
struct Filters<'a> {
    lab: &'a Lab,
    ufw: &'a Ufw,
    nft_file: std::path::PathBuf,
    xdpgates: Vec<(String, Workdir, std::path::PathBuf)>,
}

impl Filters<'_> {
    fn names(&self) -> Vec<String> {
        COMPETITORS[..3]
            .iter()
            .map(|s| s.to_string())
            .chain(self.xdpgates.iter().map(|(name, _, _)| name.clone()))
            .collect()
    }

    fn nft(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.lab.server_ns, "nft"];
        all.extend(args);
        run("ip", &all);
    }

    /// Puts filter `c` in place; an xdpgate daemon is returned to stop later.
    fn start(&self, c: usize) -> Option<Daemon> {
        match c {
            0 => None,
            1 => {
                self.ufw.run("ufw --force enable >/dev/null");
                None
            }
            2 => {
                self.nft(&["-f", self.nft_file.to_str().expect("UTF-8 path")]);
                None
            }
            _ => {
                let (name, work, config) = &self.xdpgates[c - 3];
                Some(Daemon::start_ready(
                    self.lab,
                    work,
                    config,
                    &name.replace(' ', "-"),
                ))
            }
        }
    }

    fn stop(&self, c: usize, daemon: Option<Daemon>) {
        match c {
            0 => {}
            1 => self.ufw.run("ufw disable >/dev/null"),
            2 => self.nft(&["delete", "table", "netdev", "xgbench"]),
            _ => {
                if let Some(mut d) = daemon {
                    d.terminate(Duration::from_secs(10));
                }
                let _ = self.xdpgates[c - 3].1.cli(&["detach"]);
            }
        }
    }
}

fn main() {
    let args = common::Args::parse(BENCH);
    args.only(BENCH, &["--seconds", "--compare"]);
    if !lab_ready("bench flood", &["trafgen", "ufw", "nft"]) {
        std::process::exit(1);
    }
    let seconds: f64 = args
        .extra(BENCH, "--seconds")
        .unwrap_or(if args.quick { 1.5 } else { 8.0 });
    let duration = Duration::from_secs_f64(seconds);
    let before = host_firewall();

    let mut allowed = cloudflare_v4();
    allowed.push(CLIENT_RANGE.into());
    let lab = Lab::new("fl");
    let work = Workdir::new("bench-flood", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _listener = TcpServer::start(&lab.server_ns, PORT);

    let mac_json = Command::new("ip")
        .args([
            "-n",
            &lab.server_ns,
            "-j",
            "link",
            "show",
            "dev",
            &lab.server_if,
        ])
        .output()
        .expect("ip link");
    let mac = serde_json::from_slice::<Value>(&mac_json.stdout)
        .ok()
        .and_then(|v| v[0]["address"].as_str().map(String::from))
        .expect("server veth MAC");
    let packet = format!(
        "{{ eth(da={mac}), ipv4(sa=drnd(), da=192.0.2.1, ttl=64), tcp(sp=drnd(), dp={PORT}, seq=drnd(), syn, window=64240) }}\n"
    );
    let conf = work.write("syn.trafgen", &packet);
    let conf = conf.to_str().expect("UTF-8 path").to_string();

    let ufw = Ufw::new(&work, &lab.server_ns);
    let mut ufw_setup = String::from("ufw --force reset >/dev/null; ufw default deny incoming >/dev/null; ufw default allow outgoing >/dev/null;");
    for range in &allowed {
        ufw_setup.push_str(&format!(
            " ufw allow proto tcp from {range} to any port {PORT} >/dev/null;"
        ));
    }
    let began = Instant::now();
    ufw.run(&ufw_setup);
    println!("bench flood: ufw rules written in {:.1?}", began.elapsed());
    let nft_file = work.write("ingress.nft", &nft_ruleset(&lab.server_if, &allowed));
    let xdp_config = work.write("xdpgate.yaml", &xdpgate_config(&lab.server_if, &allowed));

    let mut report = Report::new(
        BENCH,
        "SYN flood: UFW, nftables ingress and xdpgate",
        &format!(
            "trafgen (one process, one CPU) sends 54-byte TCP SYNs to 192.0.2.1:{PORT} from random spoofed IPv4 \
             sources, as fast as it can for {seconds} s, across a veth pair from a client namespace into a server \
             namespace with a listener on {PORT}. Meanwhile a legitimate client (198.51.100.1, allowed by every filter) \
             opens a TCP connection every 10 ms (1 s timeout). The filters allow Cloudflare's {} IPv4 ranges and \
             {CLIENT_RANGE} on {PORT}. On a veth the receiving side runs in softirq on the sending CPU, so the cheaper \
             the receive path, the more packets trafgen gets through. xdpgate runs in generic XDP mode, on the same \
             receive path as the nftables ingress hook: native XDP on a veth moves the receive path onto the veth's own \
             queue, which the sender waits on, and would measure the veth rather than the filter. *Rate* = packets the \
             veth delivered per second; \
             *softirq/packet* and *busy CPU/packet* are from /proc/stat over the whole machine (the busy figure includes \
             whatever else ran meanwhile).",
            allowed.len() - 1
        ),
        &args,
    );
    report.version("trafgen", common::package_version("netsniff-ng"));
    report.version("ufw", common::package_version("ufw"));
    report.version("nftables", common::package_version("nftables"));
    report.version("iptables", common::version_of("iptables", &["-V"]));
    report.command(format!(
        "trafgen {}   # config: {}",
        trafgen_args(&lab.client_if, "syn.trafgen").join(" "),
        packet.trim()
    ));
    report.command(
        ufw.command("ufw --force enable")
            .replace(&work.path("").display().to_string(), "$WORK/"),
    );
    report.command(format!("# ufw rules, once: {}", ufw_setup));
    report.command(format!(
        "ip netns exec $SERVER nft -f ingress.nft   # {}",
        nft_ruleset(&lab.server_if, &allowed).replace('\n', " ")
    ));
    report.command(format!("nsenter --net=/var/run/netns/$SERVER xdpgate run --worker-threads 2 --config xdpgate.yaml   # {}", xdpgate_config(&lab.server_if, &allowed).replace('\n', " ")));

    let mut xdpgates = vec![(COMPETITORS[3].to_string(), work, xdp_config.clone())];
    if let Some(binary) = args.extra::<String>(BENCH, "--compare") {
        let binary = std::path::PathBuf::from(binary);
        if !binary.is_file() {
            common::fail(
                BENCH,
                &format!("--compare: {} is not a file", binary.display()),
            );
        }
        let other = Workdir::new("bench-flood-compared", binary.to_str().expect("UTF-8 path"));
        let config = other.write("xdpgate.yaml", &xdpgate_config(&lab.server_if, &allowed));
        report.command(format!(
            "# {COMPARED}: another build of xdpgate (--compare), with the same config"
        ));
        xdpgates.push((COMPARED.to_string(), other, config));
    }
    let filters = Filters {
        lab: &lab,
        ufw: &ufw,
        nft_file,
        xdpgates,
    };
    let names = filters.names();
    let mut samples: Vec<Vec<Sample>> = names.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for (c, name) in names.iter().enumerate() {
            let daemon = filters.start(c);
            let sample = flood_once(&lab, &conf, duration);
            println!(
                "round {}: {name:<18} {:>9.0} pps ({:>9.0} sent)  softirq {:>6.0} ns/pkt  busy {:>6.0} ns/pkt  connect p50 {:.2} ms p99 {:.2} ms  ok {:.1}% of {}",
                round + 1, sample.rate, sample.sent_rate, sample.softirq_ns, sample.busy_ns, sample.p50_ms, sample.p99_ms, sample.success, sample.attempts
            );
            filters.stop(c, daemon);
            samples[c].push(sample);
        }
    }
    report_medians(&mut report, &names, &samples);

    drop(_listener);
    drop(filters);
    drop(lab);
    let after = host_firewall();
    if before != after {
        eprintln!("bench flood: the host's firewall rules or ufw files changed during the run:\nbefore:\n{before}\nafter:\n{after}");
        std::process::exit(1);
    }
    report.note("Checked after the run: the host's `iptables -S`, `ip6tables -S`, `nft list ruleset` and the files under /etc/ufw, /lib/ufw and /etc/default/ufw are byte-for-byte what they were before it.");
    report.write(&args.out);
}

/// The medians table, the plots and every round's samples.
fn report_medians(report: &mut Report, names: &[String], samples: &[Vec<Sample>]) {
    let med =
        |c: usize, f: fn(&Sample) -> f64| median(&samples[c].iter().map(f).collect::<Vec<_>>());
    let ufw_rate = med(1, |s| s.rate);
    let ufw_soft = med(1, |s| s.softirq_ns);
    let nft_rate = med(2, |s| s.rate);
    let mut rows = Vec::new();
    for (c, name) in names.iter().enumerate() {
        let rate = med(c, |s| s.rate);
        let soft = med(c, |s| s.softirq_ns);
        rows.push(vec![
            json!(name),
            num(rate),
            num(med(c, |s| s.sent_rate)),
            num(soft),
            num(med(c, |s| s.busy_ns)),
            num(med(c, |s| s.p50_ms)),
            num(med(c, |s| s.p99_ms)),
            num(med(c, |s| s.success)),
            num(rate / ufw_rate),
            num(ufw_soft / soft),
            num(rate / nft_rate),
        ]);
    }
    report.table(
        "Medians over the rounds",
        &[
            "filter",
            "rate (pkt/s)",
            "sent (pkt/s)",
            "softirq ns/pkt",
            "busy CPU ns/pkt",
            "connect p50 (ms)",
            "connect p99 (ms)",
            "connect success %",
            "rate vs ufw",
            "softirq: ufw / this",
            "rate vs nftables",
        ],
        rows,
    );
    let per = |f: fn(&Sample) -> f64| (0..names.len()).map(|c| med(c, f)).collect::<Vec<_>>();
    report.plot(
        "flood-rate.png",
        "SYN flood rate absorbed (median)",
        "packets per second",
        names,
        vec![("rate", per(|s| s.rate))],
    );
    report.plot(
        "flood-cpu.png",
        "CPU per flood packet (median)",
        "ns per packet",
        names,
        vec![
            ("softirq", per(|s| s.softirq_ns)),
            ("busy (whole machine)", per(|s| s.busy_ns)),
        ],
    );
    report.plot(
        "flood-connect.png",
        "Legitimate client's connect time during the flood (median of rounds)",
        "ms",
        names,
        vec![("p50", per(|s| s.p50_ms)), ("p99", per(|s| s.p99_ms))],
    );
    report.samples(
        "rounds",
        json!(names.iter().zip(samples).map(|(n, s)| (n.to_string(), json!(s.iter().map(|x| json!({
            "rate": num(x.rate), "sent_rate": num(x.sent_rate), "softirq_ns": num(x.softirq_ns), "busy_ns": num(x.busy_ns),
            "p50_ms": num(x.p50_ms), "p99_ms": num(x.p99_ms), "success_pct": num(x.success), "attempts": x.attempts
        })).collect::<Vec<_>>()))).collect::<serde_json::Map<_, _>>()),
    );
}
