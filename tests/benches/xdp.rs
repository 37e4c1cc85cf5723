//! `cargo xtask bench xdp`: per-packet cost of the XDP program by packet
//! shape, from `BPF_PROG_TEST_RUN` with a large repeat count (the kernel
//! reports the mean time per run), beside two baselines measured in the same
//! run and the same rounds: a bare XDP_PASS program, and the smallest useful
//! filter ("parse IPv4 + one LPM lookup + one per-CPU counter") holding the
//! same IPv4 prefixes. Each figure is the median of several rounds; the
//! programs are interleaved within a round so drift hits all of them alike.
//!
//! Policies: the embedded Cloudflare default (22 prefixes), and the same plus a
//! set of 100,000 random prefixes (75,000 IPv4, 25,000 IPv6) bound to 443.
//! `--compare <object>` adds another build of the program (an `xdpgate` eBPF
//! object, e.g. from an earlier commit) with the Cloudflare default, measured
//! in the same rounds, and prints this build's difference from it per shape.
//! With `XDPGATE_BENCH_DUMP=<dir>` in the environment, each program's
//! `bpftool prog dump xlated` is written to `<dir>/<name>.xlated`.
//! Needs root. Writes `target/bench/xdp.json`.
use std::{net::IpAddr, time::Instant};

use aya::{
    maps::{lpm_trie::Key, LpmTrie, MapData},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use xdpgate::{
    filter::BASELINE_OBJECT,
    policy::{cloudflare_default, compile, CompiledPolicy, PolicySpec},
};
use xdpgate_tests::{arp_frame, have_bpf_privileges, Ext, Flags, Harness, Packet};

mod common;

use common::{num, Report};

struct Args {
    repeat: u32,
    rounds: usize,
    random_prefixes: usize,
    compare: Option<std::path::PathBuf>,
    common: common::Args,
}

fn parse_args() -> Args {
    let common = common::Args::parse("xdp");
    common.only("xdp", &["--repeat", "--prefixes", "--compare"]);
    let default_repeat = if common.quick { 20_000 } else { 1_000_000 };
    let args = Args {
        repeat: common.extra("xdp", "--repeat").unwrap_or(default_repeat),
        rounds: common.rounds,
        random_prefixes: common.extra("xdp", "--prefixes").unwrap_or(100_000),
        compare: common.extra("xdp", "--compare"),
        common,
    };
    if args.repeat == 0 {
        common::fail("xdp", "--repeat must be at least 1");
    }
    args
}

/// A small deterministic generator, so every run measures the same prefixes.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_prefixes(count: usize) -> Vec<IpNet> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let v4_count = count * 3 / 4;
    let mut nets = Vec::with_capacity(count);
    for i in 0..count {
        if i < v4_count {
            let len = 16 + (rng.next() % 17) as u8;
            let addr = (rng.next() as u32).into();
            nets.push(IpNet::V4(Ipv4Net::new(addr, len).unwrap().trunc()));
        } else {
            let len = 32 + (rng.next() % 33) as u8;
            // Global unicast, 2000::/3.
            let high = (rng.next() as u128) << 64 | rng.next() as u128;
            let addr = (high & !(0b111 << 125)) | (0b001 << 125);
            nets.push(IpNet::V6(Ipv6Net::new(addr.into(), len).unwrap().trunc()));
        }
    }
    nets
}

/// The Cloudflare default plus a `bulk` set of random prefixes also bound to 443.
fn bulk_spec(count: usize) -> PolicySpec {
    let mut spec = cloudflare_default();
    spec.sets.insert("bulk".into(), random_prefixes(count));
    spec.allow[0].from.push("bulk".into());
    spec
}

/// A source that is in none of the policy's sets.
fn outsider(policy: &CompiledPolicy, v6: bool) -> String {
    let mut rng = XorShift(42);
    loop {
        let addr: IpAddr = if v6 {
            let a = (rng.next() as u128) << 64 | rng.next() as u128;
            std::net::Ipv6Addr::from((a & !(0b111 << 125)) | (0b001 << 125)).into()
        } else {
            std::net::Ipv4Addr::from(rng.next() as u32).into()
        };
        if policy.lookup(addr) == 0 && !addr.is_loopback() {
            return addr.to_string();
        }
    }
}

/// A source in no set of `policy` whose first 16 bits a prefix of
/// `members` shares (e.g. 173.245.0.0/16 of Cloudflare's 173.245.48.0/20):
/// the program cannot skip the trie for it.
fn near_outsider(policy: &CompiledPolicy, members: &CompiledPolicy, v6: bool) -> String {
    let mut rng = XorShift(7);
    let tops: Vec<IpAddr> = if v6 {
        members.v6.keys().map(|n| IpAddr::V6(n.network())).collect()
    } else {
        members.v4.keys().map(|n| IpAddr::V4(n.network())).collect()
    };
    for top in tops {
        for _ in 0..10_000 {
            let addr: IpAddr = match top {
                IpAddr::V4(t) => {
                    let low = rng.next() as u32 & 0xffff;
                    std::net::Ipv4Addr::from(u32::from(t) & 0xffff_0000 | low).into()
                }
                IpAddr::V6(t) => {
                    let low = ((rng.next() as u128) << 64 | rng.next() as u128) >> 16;
                    std::net::Ipv6Addr::from(u128::from(t) & (0xffff << 112) | low).into()
                }
            };
            if policy.lookup(addr) == 0 {
                return addr.to_string();
            }
        }
    }
    panic!("every /16 of the member prefixes is full of members")
}

/// A baseline object with its LPM trie filled with `policy`'s IPv4 prefixes.
struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    fn load(policy: &CompiledPolicy) -> Self {
        let mut ebpf = Ebpf::load(BASELINE_OBJECT).expect("baseline object loads");
        for name in ["baseline_pass", "baseline_minimal"] {
            let program: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
            program
                .load()
                .expect("the kernel accepts the baseline program");
        }
        let mut trie: LpmTrie<&mut MapData, [u8; 4], u64> =
            LpmTrie::try_from(ebpf.map_mut("BASELINE_V4").unwrap()).unwrap();
        for (net, mask) in &policy.v4 {
            trie.insert(
                &Key::new(net.prefix_len().into(), net.network().octets()),
                mask,
                0,
            )
            .unwrap();
        }
        Baseline { ebpf }
    }

    fn program(&mut self, name: &str) -> &mut Xdp {
        self.ebpf.program_mut(name).unwrap().try_into().unwrap()
    }

    fn time(&mut self, program: &str, frame: &[u8], repeat: u32) -> f64 {
        let program = self.program(program);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        program
            .test_run(opts)
            .expect("BPF_PROG_TEST_RUN")
            .duration
            .as_nanos() as f64
    }
}

/// The size of a loaded program as `bpftool prog show` reports it: the
/// verifier's output (`xlated`, in 8-byte instruction slots, the count
/// `bpftool prog dump xlated` lists) and the JIT's (bytes of machine code).
/// The program is pinned for bpftool to find it, and unpinned again.
fn program_size(name: &str, program: &mut Xdp) -> Option<(u64, u64)> {
    let pin = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/xdpgate-bench-{}-{name}",
        std::process::id()
    ));
    if let Err(e) = program.pin(&pin) {
        println!(
            "bench xdp: cannot pin {name} at {} for bpftool: {e}",
            pin.display()
        );
        return None;
    }
    let output = std::process::Command::new("bpftool")
        .args(["--json", "prog", "show", "pinned"])
        .arg(&pin)
        .output();
    if let Some(dir) = std::env::var_os("XDPGATE_BENCH_DUMP") {
        // The verifier's output, to read what a path executes.
        let path = std::path::Path::new(&dir).join(format!("{name}.xlated"));
        match std::process::Command::new("bpftool")
            .args(["prog", "dump", "xlated", "pinned"])
            .arg(&pin)
            .output()
        {
            Ok(dump) => {
                let _ = std::fs::write(&path, dump.stdout);
            }
            Err(e) => println!("bench xdp: bpftool prog dump xlated {name}: {e}"),
        }
    }
    let _ = std::fs::remove_file(&pin);
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            println!("bench xdp: bpftool prog show {name} failed: {}", err.trim());
            return None;
        }
        Err(e) => {
            println!("bench xdp: cannot run bpftool ({e}); instruction counts left out");
            return None;
        }
    };
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some((
        info["bytes_xlated"].as_u64()? / 8,
        info["bytes_jited"].as_u64()?,
    ))
}

const COLUMNS: [&str; 6] = [
    "pass",
    "minimal (cf)",
    "xdpgate (cf)",
    "minimal (100k)",
    "xdpgate (100k)",
    "compared (cf)",
];

fn main() {
    let args = parse_args();
    if !have_bpf_privileges("bench xdp") {
        std::process::exit(1);
    }

    let cloudflare = compile(&cloudflare_default()).expect("default compiles");
    let started = Instant::now();
    let bulk = compile(&bulk_spec(args.random_prefixes)).expect("bulk policy compiles");
    let mut xdpgate_cf = Harness::with_policy(&cloudflare);
    let mut xdpgate_bulk = Harness::with_policy(&bulk);
    let mut baseline_cf = Baseline::load(&cloudflare);
    let mut baseline_bulk = Baseline::load(&bulk);
    let mut compared = args.compare.as_ref().map(|path| {
        let object = std::fs::read(path)
            .unwrap_or_else(|e| common::fail("xdp", &format!("--compare {}: {e}", path.display())));
        let filter = xdpgate::filter::Filter::load_object(&object)
            .unwrap_or_else(|e| common::fail("xdp", &format!("--compare {}: {e}", path.display())));
        let mut harness = Harness { filter };
        harness.filter.apply(&cloudflare).expect("policy applies");
        harness
    });
    let columns = if compared.is_some() {
        COLUMNS.len()
    } else {
        COLUMNS.len() - 1
    };
    println!(
        "bench xdp: compiled and loaded {} + {} prefixes in {:.2?}; repeat {} x {} rounds",
        bulk.v4.len(),
        bulk.v6.len(),
        started.elapsed(),
        args.repeat,
        args.rounds
    );

    let mut sizes = Vec::new();
    for (name, size) in [
        (
            "xdpgate",
            program_size("xdpgate", xdpgate_cf.filter.program()),
        ),
        (
            "baseline_minimal",
            program_size("baseline_minimal", baseline_cf.program("baseline_minimal")),
        ),
    ] {
        if let Some((xlated, jited)) = size {
            println!("bench xdp: {name}: {xlated} xlated instructions, {jited} bytes jited");
            sizes.push(vec![
                serde_json::json!(name),
                serde_json::json!(xlated),
                serde_json::json!(jited),
            ]);
        }
    }

    if let Some(compared) = compared.as_mut() {
        if let Some((xlated, jited)) = program_size("compared", compared.filter.program()) {
            println!("bench xdp: compared: {xlated} xlated instructions, {jited} bytes jited");
            sizes.push(vec![
                serde_json::json!("compared"),
                serde_json::json!(xlated),
                serde_json::json!(jited),
            ]);
        }
    }

    let out4 = outsider(&bulk, false);
    let out6 = outsider(&bulk, true);
    let member4 = "104.16.0.1";
    let member6 = "2606:4700::1";
    let near4 = near_outsider(&bulk, &cloudflare, false);
    let near6 = near_outsider(&bulk, &cloudflare, true);
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        (
            "v4 non-member SYN :443 (drop)",
            Packet::tcp(&out4, 443, Flags::Syn).build(),
        ),
        (
            "v4 non-member SYN, member's /16 (drop)",
            Packet::tcp(&near4, 443, Flags::Syn).build(),
        ),
        (
            "v4 member SYN :443",
            Packet::tcp(member4, 443, Flags::Syn).build(),
        ),
        (
            "v4 non-member ACK :443",
            Packet::tcp(&out4, 443, Flags::Ack).build(),
        ),
        (
            "v4 SYN :8080 (unbound)",
            Packet::tcp(&out4, 8080, Flags::Syn).build(),
        ),
        (
            "v4 UDP :53 (unbound)",
            Packet::udp(&out4, 53).payload(32).build(),
        ),
        (
            "v4 802.1Q non-member SYN (drop)",
            Packet::tcp(&out4, 443, Flags::Syn).vlans(&[0x8100]).build(),
        ),
        (
            "v4 4 VID-0 tags non-member SYN (drop)",
            Packet::tcp(&out4, 443, Flags::Syn).priority_tags(4).build(),
        ),
        (
            "v4 tiny first fragment non-member (drop)",
            Packet::tcp(&out4, 443, Flags::Syn)
                .l4_truncated(8)
                .ipv4_fragment(0, true)
                .build(),
        ),
        (
            "v4 IHL 15 non-member SYN (drop)",
            Packet::tcp(&out4, 443, Flags::Syn).ipv4_options(10).build(),
        ),
        (
            "v4 later fragment",
            Packet::tcp(&out4, 443, Flags::Syn)
                .ipv4_fragment(100, false)
                .build(),
        ),
        (
            "v6 non-member SYN :443 (drop)",
            Packet::tcp(&out6, 443, Flags::Syn).build(),
        ),
        (
            "v6 non-member SYN, member's /16 (drop)",
            Packet::tcp(&near6, 443, Flags::Syn).build(),
        ),
        (
            "v6 member SYN :443",
            Packet::tcp(member6, 443, Flags::Syn).build(),
        ),
        (
            "v6 non-member ACK :443",
            Packet::tcp(&out6, 443, Flags::Ack).build(),
        ),
        (
            "v6 SYN :8080 (unbound)",
            Packet::tcp(&out6, 8080, Flags::Syn).build(),
        ),
        (
            "v6 3 ext headers non-member SYN (drop)",
            Packet::tcp(&out6, 443, Flags::Syn)
                .exts(&[Ext::HopByHop, Ext::DestOpts, Ext::Routing])
                .build(),
        ),
        ("ARP", arp_frame()),
    ];

    // samples[shape][column] = one mean-ns figure per round.
    let mut samples = vec![vec![Vec::with_capacity(args.rounds); columns]; shapes.len()];
    for round in 0..args.rounds {
        for (s, (_, frame)) in shapes.iter().enumerate() {
            // Rotate the starting program each round: A B C, B C A, ...
            for k in 0..columns {
                let column = (k + round + s) % columns;
                let ns = match column {
                    0 => baseline_cf.time("baseline_pass", frame, args.repeat),
                    1 => baseline_cf.time("baseline_minimal", frame, args.repeat),
                    2 => xdpgate_cf.time(frame, args.repeat),
                    3 => baseline_bulk.time("baseline_minimal", frame, args.repeat),
                    4 => xdpgate_bulk.time(frame, args.repeat),
                    _ => compared
                        .as_mut()
                        .expect("a compared build")
                        .time(frame, args.repeat),
                };
                samples[s][column].push(ns);
            }
        }
    }

    let mut table = String::new();
    table.push_str(&format!(
        "\nmedian ns/packet over {} rounds of {} runs (BPF_PROG_TEST_RUN)\n",
        args.rounds, args.repeat
    ));
    table.push_str(&format!("{:<40}", "shape"));
    for c in &COLUMNS[..columns] {
        table.push_str(&format!("{c:>16}"));
    }
    table.push_str(&format!("{:>12}{:>12}", "ratio cf", "ratio 100k"));
    if columns > 5 {
        table.push_str(&format!("{:>14}{:>12}", "vs compared", "ratio"));
    }
    table.push('\n');
    let mut rows = Vec::new();
    let mut per_column = vec![Vec::new(); columns];
    for (s, (name, _)) in shapes.iter().enumerate() {
        let medians: Vec<f64> = samples[s].iter().map(|v| common::median(v)).collect();
        table.push_str(&format!("{name:<40}"));
        for m in &medians {
            table.push_str(&format!("{m:>16.1}"));
        }
        let ratio_cf = medians[2] / medians[1];
        let ratio_bulk = medians[4] / medians[3];
        table.push_str(&format!("{ratio_cf:>11.2}x{ratio_bulk:>11.2}x"));
        let mut row = vec![serde_json::json!(name)];
        row.extend(medians.iter().map(|&m| num(m)));
        row.push(num(ratio_cf));
        row.push(num(ratio_bulk));
        if columns > 5 {
            let (delta, ratio) = (medians[2] - medians[5], medians[2] / medians[5]);
            table.push_str(&format!("{delta:>+13.1}n{ratio:>11.2}x"));
            row.push(num(delta));
            row.push(num(ratio));
        }
        table.push('\n');
        rows.push(row);
        for (c, m) in medians.iter().enumerate() {
            per_column[c].push(*m);
        }
    }
    const NOTE: &str = "ratio = xdpgate / minimal (parse IPv4 + one LPM lookup + one per-CPU counter) with \
         the same prefixes. minimal only parses untagged IPv4: on other shapes it passes after \
         the ethertype check, so its ratio there shows xdpgate's extra parsing, not a like-for-like cost.";
    table.push_str(&format!("\n{NOTE}\n"));
    print!("{table}");

    let mut report = Report::new(
        "xdp",
        "XDP program: per-packet cost by packet shape",
        &format!(
            "The kernel's mean time per run of each program over one frame, from `BPF_PROG_TEST_RUN` \
             with `repeat` {} (no NIC, no driver: the program's own cost). Beside xdpgate: `pass` \
             (a bare XDP_PASS) and `minimal` (the smallest useful filter: parse IPv4, one LPM \
             lookup, one per-CPU counter), each with the Cloudflare default policy (22 prefixes) \
             and with the same plus {} random prefixes (3/4 IPv4, 1/4 IPv6) bound to 443. The \
             programs are interleaved within a round and the starting program rotates each round.",
            args.repeat, args.random_prefixes
        ),
        &args.common,
    );
    report.began_at(started);
    let mut headers = vec!["shape"];
    headers.extend(&COLUMNS[..columns]);
    headers.extend(["xdpgate/minimal (cf)", "xdpgate/minimal (100k)"]);
    if columns > 5 {
        headers.extend(["xdpgate - compared (cf), ns", "xdpgate/compared (cf)"]);
    }
    report.table("Median ns per packet", &headers, rows);
    let shape_names: Vec<String> = shapes.iter().map(|(n, _)| n.to_string()).collect();
    if !sizes.is_empty() {
        report.table(
            "Program size (bpftool prog show)",
            &["program", "xlated instructions", "jited bytes"],
            sizes,
        );
    }
    report.plot(
        "xdp-ns-per-packet.png",
        "XDP per-packet cost (BPF_PROG_TEST_RUN, median)",
        "ns per packet",
        &shape_names,
        COLUMNS
            .iter()
            .zip(per_column)
            .filter(|(c, _)| !c.starts_with("minimal"))
            .map(|(c, v)| (*c, v))
            .collect(),
    );
    report.note(NOTE);
    report.command(format!(
        "cargo bench -p xdpgate-tests --bench xdp -- --repeat {} --rounds {} --prefixes {}{}",
        args.repeat,
        args.rounds,
        args.random_prefixes,
        args.compare
            .as_ref()
            .map(|p| format!(" --compare {}", p.display()))
            .unwrap_or_default()
    ));
    report.samples(
        "ns_per_round",
        serde_json::json!(shapes
            .iter()
            .zip(&samples)
            .map(|((n, _), s)| (n.to_string(), serde_json::json!(s)))
            .collect::<serde_json::Map<_, _>>()),
    );
    report.write(&args.common.out);
}
