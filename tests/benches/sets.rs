//! `cargo xtask bench sets`: how long an edit of a set file takes to be
//! enforced by the kernel, and how long a whole swap to and from 100,000
//! prefixes takes. The daemon (release build) filters TCP 8443 on the
//! server's veth for one set read from a file (`watch_interval` at its
//! default, 500 ms); the clock starts when the file is written and stops
//! when a connection from the added source completes (or, for a removal,
//! when one goes unanswered for 20 ms), probed every millisecond from the
//! client namespace.
mod common;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use common::{median, num, Report};
use serde_json::json;
use xdpgate_tests::lab::{connect_from, in_netns, lab_ready, Daemon, Lab, TcpServer, Workdir};

const BENCH: &str = "sets";
const PORT: u16 = 8443;
const PROBE_TIMEOUT: Duration = Duration::from_millis(20);

/// Writes `contents` to `path` by rename, as editors and config management do.
fn replace(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).expect("write set file");
    std::fs::rename(&tmp, path).expect("rename set file");
}

/// Milliseconds from now until `source` can (`allowed`) or cannot connect.
fn until(ns: &str, source: IpAddr, allowed: bool, limit: Duration) -> f64 {
    let start = Instant::now();
    in_netns(ns, || loop {
        let ok = connect_from(source, PORT, PROBE_TIMEOUT).is_ok();
        if ok == allowed {
            return start.elapsed().as_secs_f64() * 1e3;
        }
        if start.elapsed() > limit {
            return f64::NAN;
        }
        std::thread::sleep(Duration::from_millis(1));
    })
}

fn bulk(count: usize) -> String {
    // Distinct /32s and /24s in 100.64.0.0/10, away from the lab's sources.
    let mut out = String::with_capacity(count * 18);
    for i in 0..count as u32 {
        let base = (100u32 << 24) | (64 << 16);
        if i % 4 == 0 {
            let a = base + ((i / 4) << 8);
            out.push_str(&format!("{}/24\n", std::net::Ipv4Addr::from(a)));
        } else {
            let a = base + (1 << 21) + i * 3;
            out.push_str(&format!("{}\n", std::net::Ipv4Addr::from(a)));
        }
    }
    out
}

fn main() {
    let args = common::Args::parse(BENCH);
    args.only(BENCH, &["--prefixes"]);
    if !lab_ready("bench sets", &[]) {
        std::process::exit(1);
    }
    let prefixes: usize = args.extra(BENCH, "--prefixes").unwrap_or(100_000);
    let run_started = std::time::Instant::now();
    let lab = Lab::new("st");
    let work = Workdir::new("bench-sets", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _listener = TcpServer::start(&lab.server_ns, PORT);
    let file = work.path("edited.txt");
    let small = "198.51.100.1\n";
    replace(&file, small);
    let config = work.write(
        "config.yaml",
        &format!(
            "filter:\n  interfaces: [{}]\n  sets:\n    edited: {{ file: {}, max_shrink: 1 }}\n  allow:\n    - {{ tcp: [{PORT}], from: [edited] }}\n",
            lab.server_if,
            file.display()
        ),
    );
    let _daemon = Daemon::start_ready(&lab, &work, &config, "daemon");
    let member: IpAddr = [198, 51, 100, 1].into();
    let added: IpAddr = [203, 0, 113, 1].into();
    let big_member: IpAddr = [203, 0, 113, 2].into();
    assert!(
        until(&lab.client_ns, member, true, Duration::from_secs(5)).is_finite(),
        "the member cannot connect"
    );
    assert!(
        until(&lab.client_ns, added, false, Duration::from_secs(5)).is_finite(),
        "the outsider can connect before the edit"
    );
    let big = format!("{small}{big_member}\n{}", bulk(prefixes));
    let limit = Duration::from_secs(30);

    let mut add = Vec::new();
    let mut remove = Vec::new();
    let mut swap_in = Vec::new();
    let mut swap_out = Vec::new();
    for round in 0..args.rounds {
        replace(&file, &format!("{small}{added}\n"));
        add.push(until(&lab.client_ns, added, true, limit));
        replace(&file, small);
        remove.push(until(&lab.client_ns, added, false, limit));
        replace(&file, &big);
        swap_in.push(until(&lab.client_ns, big_member, true, limit));
        replace(&file, small);
        swap_out.push(until(&lab.client_ns, big_member, false, limit));
        println!(
            "round {}: add one {:.0} ms, remove it {:.0} ms, swap to {} prefixes {:.0} ms, back to 1 {:.0} ms",
            round + 1,
            add[round],
            remove[round],
            prefixes + 2,
            swap_in[round],
            swap_out[round]
        );
    }

    let mut report = Report::new(
        BENCH,
        "Set updates: from file edit to kernel enforcement",
        &format!(
            "The daemon filters TCP {PORT} for one set read from a file, with `watch_interval` at its default (500 ms), \
             so a change waits on average a quarter to half a second to be noticed: that interval, not the update, \
             dominates the small edits. The file is replaced by rename; the clock stops when a probe from the client \
             namespace (every ms; {} ms connect timeout) sees the new verdict. The swap writes {} IPv4 prefixes \
             (/32s and /24s) plus the probing source and back, so the whole set is rebuilt both ways.",
            PROBE_TIMEOUT.as_millis(),
            prefixes + 2
        ),
        &args,
    );
    report.began_at(run_started);
    let rows = [
        ("add one address", &add),
        ("remove it", &remove),
        ("swap to 100k prefixes", &swap_in),
        ("swap back to 1", &swap_out),
    ];
    report.table(
        "Milliseconds from the file written to the kernel's new verdict",
        &["change", "median ms", "min ms", "max ms"],
        rows.iter()
            .map(|(n, v)| {
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                let max = v.iter().copied().fold(0.0, f64::max);
                vec![json!(n), num(median(v)), num(min), num(max)]
            })
            .collect(),
    );
    report.plot(
        "sets-latency.png",
        "File edit to enforcement (median; watch_interval 500 ms)",
        "ms",
        &rows.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>(),
        vec![("median", rows.iter().map(|(_, v)| median(v)).collect())],
    );
    report.command(format!(
        "cargo bench -p xdpgate-tests --bench sets -- --rounds {} --prefixes {prefixes}",
        args.rounds
    ));
    report.note("Not measured yet: the same for a set refreshed from an API (`url`), whose delay is bounded below by its `refresh` interval (at least 1 s).");
    report.samples(
        "ms",
        json!({"add": add, "remove": remove, "swap_in": swap_in, "swap_out": swap_out}),
    );
    report.write(&args.out);
}
