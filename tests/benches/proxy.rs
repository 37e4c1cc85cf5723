//! `cargo xtask bench proxy`: xdpgate's TLS proxy against nginx, HAProxy,
//! Caddy (Debian's), Envoy and Traefik (PyPI's, in the venv `cargo xtask
//! setup` makes), each doing the same job in the server namespace (see
//! `proxy_peers`): TLS on 192.0.2.1:443 with the same ECDSA P-256
//! certificate (every peer must negotiate TLS 1.3: the probe checks),
//! one upstream over keep-alive, the same forwarded headers, no
//! access log, one worker. Every proxy runs against each upstream in turn:
//! the lab's echo server and an nginx answering a fixed body. Load comes
//! from the client namespace over the veth (see `proxy_load`): `wrk`
//! (HTTP/1.1 keep-alive), `h2load` (HTTP/2), `wrk` with `Connection: close`
//! (a new TLS connection per request), then idle TLS keep-alive connections
//! held open while the server's memory is read. Competitors alternate within
//! each round; a response that is not 2xx fails the run.
mod common;
mod proxy_load;
mod proxy_peers;
mod proxy_report;

use std::{
    io::Write as _,
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{tree_cpu_jiffies, tree_rss_kib};
use proxy_load::{
    client, h2load_non_2xx, idle_connections, parse_h2load, parse_wrk, probe, upstream_closes,
    WRK_LUA,
};
use proxy_peers::{
    proxy, upstream_nginx_conf, venv_bin, Files, Launch, Upstream, ECHO, LISTEN, NGINX_UPSTREAM,
    PROXIES,
};
use proxy_report::{add_results, new_report, METRICS};
use xdpgate_tests::lab::{in_netns, lab_ready, Backend, Lab, ProxyPki, Workdir, ADMIN_PORT};

pub const BENCH: &str = "proxy";
/// Idle connections in a full run: 10,000 was the aim, but these machines
/// cap open files at 20,000 (a hard limit root cannot raise here) and
/// HAProxy reserves two per connection.
pub const IDLE_FULL: usize = 8_000;
const URL: &str = "https://192.0.2.1:443/";
/// The name `--compare`'s earlier xdpgate build runs under.
const BEFORE: &str = "xdpgate-before";

/// xdpgate's configuration: the filter on the server veth (SSH from the
/// admins' set only), one TLS entrypoint, every request to `backend`.
fn xdpgate_yaml(lab: &Lab, crt: &Path, key: &Path, backend: &str) -> String {
    format!(
        "filter:\n  interfaces: [{dev}]\n  sets:\n    admins: {{ cidrs: [198.51.100.0/29] }}\n  allow:\n    - {{ tcp: [22], from: [admins] }}\n\
         proxy:\n  access_log: {{ enabled: false }}\n  entrypoints:\n    \
         websecure: {{ listen: \"{LISTEN}\", tls: {{ certs: [{{ cert: {crt}, key: {key} }}] }}, limits: {{ max_connections: 30000, idle_timeout: 120s }} }}\n  \
         default_service: \"{backend}\"\n",
        dev = lab.server_if,
        crt = crt.display(),
        key = key.display()
    )
}

/// A competitor's process (group) in the server namespace.
struct Server {
    child: Child,
}

impl Server {
    fn start(
        ns: &str,
        program: &str,
        args: &[String],
        env: &[(&str, String)],
        log: &Path,
    ) -> Server {
        let out = std::fs::File::create(log).expect("server log");
        let err = out.try_clone().expect("server log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .arg("--")
            .arg(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Server { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_listening(&mut self, ns: &str, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let address: SocketAddr = "192.0.2.1:443".parse().unwrap();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if in_netns(ns, || {
                std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
            })
            .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on 443: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: signalling our own child's process group.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The load each proxy gets, the same for all.
struct Plan {
    seconds: u64,
    idle: usize,
    wrk_h1: Vec<String>,
    h2load: Vec<String>,
    wrk_new: Vec<String>,
    h2log: PathBuf,
}

impl Plan {
    fn new(seconds: u64, idle: usize, lua: &Path, h2log: PathBuf) -> Plan {
        let s = |v: &str| v.to_string();
        let lua = lua.display().to_string();
        Plan {
            seconds,
            idle,
            wrk_h1: vec![
                s("-t1"),
                s("-c64"),
                format!("-d{seconds}s"),
                s("-s"),
                lua.clone(),
                s(URL),
            ],
            h2load: vec![
                s("-t1"),
                s("-c64"),
                s("-m10"),
                format!("-D{seconds}"),
                format!("--log-file={}", h2log.display()),
                s(URL),
            ],
            wrk_new: vec![
                s("-t1"),
                s("-c16"),
                format!("-d{}s", seconds.div_ceil(2)),
                s("-H"),
                s("Connection: close"),
                s("-s"),
                lua,
                s(URL),
            ],
            h2log,
        }
    }

    fn commands(&self) -> Vec<String> {
        let quote = |a: &String| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        };
        vec![
            format!("wrk {}", self.wrk_h1.join(" ")),
            format!("h2load {}", self.h2load.join(" ")),
            format!(
                "wrk {}",
                self.wrk_new.iter().map(quote).collect::<Vec<_>>().join(" ")
            ),
        ]
    }
}

/// One proxy's figures against one upstream, in [`METRICS`] order; the idle
/// connections are measured only when `idle` (they do not involve the
/// upstream). Panics when a response was not 2xx: a proxy that fails
/// requests is not measuring the same job.
fn measure(
    lab: &Lab,
    plan: &Plan,
    server: &Server,
    upstream: Upstream,
    idle: bool,
    what: &str,
) -> Vec<f64> {
    let ns = lab.client_ns.clone();
    let pid = server.pid();
    let s = |v: &str| v.to_string();
    // A warm-up, so the upstream pool and the caches exist.
    client(&ns, "wrk", &[s("-t1"), s("-c8"), s("-d1s"), s(URL)]);
    let rss_idle = tree_rss_kib(pid) as f64 / 1024.0;
    let cpu0 = tree_cpu_jiffies(pid);
    let seconds = plan.seconds;
    let sampler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(seconds * 1000 / 2));
        tree_rss_kib(pid)
    });
    let h1 = parse_wrk(&client(&ns, "wrk", &plan.wrk_h1));
    let cpu1 = tree_cpu_jiffies(pid);
    let (closed_by_proxy, closed_by_upstream) = upstream_closes(
        &lab.server_ns,
        upstream.address,
        Duration::from_secs(seconds),
    );
    let rss_load = sampler.join().unwrap_or(0) as f64 / 1024.0;
    let _ = std::fs::remove_file(&plan.h2log);
    let h2_out = client(&ns, "h2load", &plan.h2load);
    let h2 = parse_h2load(&h2_out, &plan.h2log);
    let new = parse_wrk(&client(&ns, "wrk", &plan.wrk_new));
    for (label, non_2xx) in [
        ("HTTP/1.1", h1.bad_status),
        ("HTTP/2", h2load_non_2xx(&h2_out)),
        ("new-connection", new.bad_status),
    ] {
        assert!(
            non_2xx == 0.0,
            "bench proxy: {what}: {non_2xx} {label} responses were not 2xx (or the tool printed no count); the round fails"
        );
    }
    let (rss_conns, opened) = if idle {
        let (streams, runtime, opened) = idle_connections(&ns, plan.idle);
        std::thread::sleep(Duration::from_millis(500));
        let rss = tree_rss_kib(pid) as f64 / 1024.0;
        drop(streams);
        drop(runtime);
        (rss, opened as f64)
    } else {
        (f64::NAN, f64::NAN)
    };
    let requests = h1.rps * seconds as f64;
    let cpu_us = (cpu1 - cpu0) as f64 * common::ns_per_jiffy() / 1e3 / requests.max(1.0);
    let per_conn = (rss_conns - rss_idle) * 1024.0 / opened;
    vec![
        h1.rps,
        h1.p50,
        h1.p99,
        h1.p999,
        h1.socket_errors + h1.bad_status,
        h2.0,
        h2.1,
        h2.2,
        h2.3,
        h2.4,
        new.rps,
        cpu_us,
        rss_idle,
        rss_load,
        rss_conns,
        opened,
        per_conn,
        closed_by_proxy,
        closed_by_upstream,
    ]
}

/// One request of each protocol through the proxy: it must answer 200 with
/// the upstream's body, and through the echo upstream the five forwarded
/// headers must have arrived.
fn probe_proxy(lab: &Lab, upstream: Upstream, what: &str) {
    for http2 in [false, true] {
        // Listening is not serving: Traefik binds before its routes are
        // loaded. Give each proxy a few seconds to answer at all.
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = loop {
            let probe = probe(&lab.client_ns, URL, http2);
            if probe.status != 0 || Instant::now() > deadline {
                break probe;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let (status, body) = (probe.status, &probe.body);
        assert!(
            status == 200 && body.contains(&format!("\"backend\":\"{}\"", upstream.name)),
            "bench proxy: {what} (HTTP/2 {http2}): answered {status} {body:?}, not the upstream's 200"
        );
        // Like for like: a TLS 1.2 resumption has no key exchange, a TLS 1.3
        // one has X25519, so a peer left on TLS 1.2 (nginx 1.22's default
        // `ssl_protocols`) makes new connections cheaper for itself and wrk.
        let version = &probe.tls_version;
        assert_eq!(
            version, "TLSv1.3",
            "bench proxy: {what} (HTTP/2 {http2}) negotiated {version}, not TLS 1.3 as every peer must"
        );
        if upstream.name == ECHO.name {
            for header in [
                "x-forwarded-for",
                "x-real-ip",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-port",
            ] {
                assert!(
                    body.contains(&format!("\"{header}\"")),
                    "bench proxy: {what}: the upstream got no {header}: {body}"
                );
            }
        }
    }
}

fn main() {
    let args = common::Args::parse(BENCH);
    args.only(
        BENCH,
        &[
            "--seconds",
            "--idle",
            "--proxies",
            "--upstreams",
            "--compare",
        ],
    );
    if !lab_ready(
        "bench proxy",
        &["nginx", "haproxy", "caddy", "wrk", "h2load", "curl", "ss"],
    ) {
        std::process::exit(1);
    }
    let Some(venv_bin) =
        venv_bin().filter(|bin| bin.join("traefik").exists() && bin.join("envoy").exists())
    else {
        eprintln!(
            "bench proxy: traefik and envoy are not in the venv (cargo xtask setup installs them)"
        );
        std::process::exit(1);
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds: u64 = args
        .extra(BENCH, "--seconds")
        .unwrap_or(if args.quick { 2 } else { 10 });
    let idle: usize =
        args.extra(BENCH, "--idle")
            .unwrap_or(if args.quick { 200 } else { IDLE_FULL });
    // The quick (smoke) run: the echo upstream only, to stay as short as it was.
    let default_upstreams = if args.quick {
        "echo"
    } else {
        "echo,nginx-upstream"
    };
    let upstreams: Vec<Upstream> = args
        .extra::<String>(BENCH, "--upstreams")
        .unwrap_or_else(|| default_upstreams.to_string())
        .split(',')
        .map(|name| {
            [ECHO, NGINX_UPSTREAM]
                .into_iter()
                .find(|u| u.name == name)
                .unwrap_or_else(|| {
                    common::fail(
                        BENCH,
                        &format!("--upstreams: no upstream `{name}` (echo, nginx-upstream)"),
                    )
                })
        })
        .collect();
    // `--proxies a,b`: a subset (for a quick before/after); xdpgate always
    // runs, last, as the ratios are xdpgate's against each other.
    let chosen: Option<String> = args.extra(BENCH, "--proxies");
    if let Some(unknown) = chosen
        .iter()
        .flat_map(|c| c.split(','))
        .find(|name| !PROXIES.contains(name))
    {
        common::fail(
            BENCH,
            &format!("--proxies: no proxy `{unknown}` ({})", PROXIES.join(", ")),
        );
    }
    let mut proxies: Vec<&str> = PROXIES
        .into_iter()
        .filter(|p| {
            *p == "xdpgate"
                || chosen
                    .as_ref()
                    .is_none_or(|c| c.split(',').any(|n| n == *p))
        })
        .collect();
    // `--compare <xdpgate binary>`: an earlier build of xdpgate runs as one
    // more competitor, just before this one, so a change's before and after
    // are measured in the same run.
    let before: Option<PathBuf> = args.extra::<String>(BENCH, "--compare").map(PathBuf::from);
    if let Some(binary) = &before {
        if !binary.is_file() {
            common::fail(
                BENCH,
                &format!("--compare: {} is not a file", binary.display()),
            );
        }
        proxies.insert(proxies.len() - 1, BEFORE);
    }
    raise_open_files();

    let lab = Lab::new("px");
    let work = Workdir::new("bench-proxy", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let pki = ProxyPki::new(&work, "bench-ca");
    let issued = pki.server(&["localhost"]);
    let (crt, key) = issued.write(&work, "server");
    let pem = work.write(
        "server.pem",
        &format!("{}{}", issued.cert_pem, issued.key_pem),
    );
    let _echo = Backend::echo(&lab.server_ns, ECHO.address.parse().unwrap(), ECHO.name);
    let dir = work.path("");
    let upstream_conf = work.write("upstream-nginx.conf", &upstream_nginx_conf(&dir));
    let upstream_log = work.path("upstream-nginx.log");
    let s = |v: &str| v.to_string();
    let _upstream_nginx = upstreams
        .iter()
        .any(|u| u.name == NGINX_UPSTREAM.name)
        .then(|| {
            let args = [
                s("-c"),
                upstream_conf.display().to_string(),
                s("-p"),
                dir.display().to_string(),
            ];
            Server::start(&lab.server_ns, "nginx", &args, &[], &upstream_log)
        });
    let lua = work.write("pct.lua", WRK_LUA);
    let plan = Plan::new(seconds, idle, &lua, work.path("h2load.log"));
    let files = Files {
        dir: &dir,
        crt: &crt,
        key: &key,
        pem: &pem,
        venv_bin: &venv_bin,
    };
    let xdpgate_from = |program: &Path, upstream: Upstream, config: &Path| {
        let launch = Launch {
            program: program.display().to_string(),
            args: vec![
                s("run"),
                s("--worker-threads"),
                s("1"),
                s("--config"),
                config.display().to_string(),
                s("--pin-dir"),
                work.pin_dir.display().to_string(),
                s("--state-dir"),
                work.state_dir.display().to_string(),
                s("--admin-listen"),
                format!("127.0.0.1:{ADMIN_PORT}"),
            ],
            env: vec![],
        };
        (xdpgate_yaml(&lab, &crt, &key, upstream.address), launch)
    };
    let xdpgate = |upstream: Upstream, config: &Path| xdpgate_from(&work.bin, upstream, config);
    // Every proxy's files for every upstream, written once.
    let mut launches = Vec::new();
    let mut report = new_report(&args, seconds, idle, &upstreams);
    for &name in &proxies {
        let mut per_upstream = Vec::new();
        for &upstream in &upstreams {
            let (configs, launch) = match (name, &before) {
                (BEFORE, Some(binary)) => {
                    let config = dir.join(format!("{BEFORE}-{}.yaml", upstream.name));
                    let (yaml, launch) = xdpgate_from(binary, upstream, &config);
                    let file = config.file_name().unwrap().to_string_lossy().into_owned();
                    (vec![(file, yaml)], launch)
                }
                _ => proxy(name, &files, upstream, &xdpgate),
            };
            for (file, text) in configs {
                work.write(&file, &text);
                report.command(
                    format!("# {file}:\n{text}").replace(&dir.display().to_string(), "$WORK/"),
                );
            }
            let env: Vec<String> = launch.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            report.command(
                format!(
                    "{} {} {}",
                    env.join(" "),
                    launch.program,
                    launch.args.join(" ")
                )
                .trim()
                .replace(&dir.display().to_string(), "$WORK/")
                .replace(&venv_bin.display().to_string(), "$VENV/bin"),
            );
            per_upstream.push(launch);
        }
        launches.push(per_upstream);
    }
    report.command(
        format!("# upstream-nginx.conf:\n{}", upstream_nginx_conf(&dir))
            .replace(&dir.display().to_string(), "$WORK/"),
    );
    for command in plan.commands() {
        report.command(command.replace(&dir.display().to_string(), "$WORK/"));
    }

    // samples[proxy][upstream][metric]: one value per round.
    let mut samples = vec![vec![vec![Vec::new(); METRICS.len()]; upstreams.len()]; proxies.len()];
    for round in 0..args.rounds {
        for (u, &upstream) in upstreams.iter().enumerate() {
            for (p, name) in proxies.iter().enumerate() {
                let launch = &launches[p][u];
                let log = work.path(&format!("{name}.log"));
                let mut server = Server::start(
                    &lab.server_ns,
                    &launch.program,
                    &launch.args,
                    &launch.env,
                    &log,
                );
                server.wait_listening(&lab.server_ns, &log);
                let what = format!("round {}, {name} to {}", round + 1, upstream.name);
                probe_proxy(&lab, upstream, &what);
                let values = measure(&lab, &plan, &server, upstream, u == 0, &what);
                println!(
                    "{what}: h1 {:.0} rps p99 {:.2} ms | h2 {:.0} rps p99 {:.2} ms | new conns {:.0}/s | {:.1} us/req | RSS idle {:.1} load {:.1} MiB, {} idle conns {:.1} KiB each | upstream conns closed: {} by proxy, {} by upstream",
                    values[0], values[2], values[5], values[7], values[10], values[11], values[12], values[13],
                    values[15], values[16], values[17], values[18]
                );
                for (m, v) in values.iter().enumerate() {
                    samples[p][u][m].push(*v);
                }
                drop(server);
                if name.starts_with("xdpgate") {
                    let _ = work.cli(&["detach"]);
                }
            }
        }
    }
    add_results(&mut report, &samples, &upstreams, &proxies, idle);
    let _ = std::io::stdout().flush();
    report.write(&args.out);
}

/// Raises our soft open-files limit to the hard one; the proxies inherit it.
fn raise_open_files() {
    // SAFETY: valid rlimit pointers.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
