//! `cargo xtask bench proxy`: xdpgate's TLS proxy against nginx, HAProxy and
//! Caddy (Debian's), each doing the same job in the server namespace: TLS
//! on 192.0.2.1:443 with the same ECDSA P-256 certificate, one upstream (an
//! echo server on 127.0.0.1:9000) over keep-alive, the same forwarded
//! headers, no access log, one worker. Load comes from the client namespace
//! over the veth: `wrk` (HTTP/1.1 keep-alive), `h2load` (HTTP/2), `wrk` with
//! `Connection: close` (a new TLS connection per request), then idle TLS
//! keep-alive connections held open while the server's memory is read.
//! Competitors alternate within each round.
mod common;

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{median, num, percentile, tree_cpu_jiffies, tree_rss_kib, Report};
use serde_json::{json, Value};
use xdpgate_tests::lab::{
    client::socket_in, in_netns, lab_ready, Backend, Lab, ProxyPki, Workdir, ADMIN_PORT,
};

const BENCH: &str = "proxy";
const COMPETITORS: [&str; 4] = ["nginx", "haproxy", "caddy", "xdpgate"];
const BACKEND: &str = "127.0.0.1:9000";
/// Idle connections in a full run: 10,000 was the aim, but these machines
/// cap open files at 20,000 (a hard limit root cannot raise here) and
/// HAProxy reserves two per connection.
const IDLE_FULL: usize = 8_000;
const URL: &str = "https://192.0.2.1:443/";

/// The forwarded headers every proxy sets, as xdpgate does.
fn nginx_conf(dir: &Path, crt: &Path, key: &Path) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         worker_rlimit_nofile 20000;\nevents {{ worker_connections 30000; }}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/nb; proxy_temp_path {d}/np; fastcgi_temp_path {d}/nf; uwsgi_temp_path {d}/nu; scgi_temp_path {d}/ns;\n\
         keepalive_timeout 120s; keepalive_requests 1000000;\n\
         upstream be {{ server {BACKEND}; keepalive 64; }}\n  server {{\n    listen 192.0.2.1:443 ssl http2;\n\
         ssl_certificate {crt}; ssl_certificate_key {key};\n    location / {{\n      proxy_pass http://be;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_set_header X-Real-IP $remote_addr;\n\
         proxy_set_header X-Forwarded-Proto https;\n      proxy_set_header X-Forwarded-Host $host;\n\
         proxy_set_header X-Forwarded-Port 443;\n    }}\n  }}\n}}\n",
        crt = crt.display(),
        key = key.display()
    )
}

fn haproxy_cfg(dir: &Path, pem: &Path) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 9500\n  pidfile {d}/haproxy.pid\n  tune.ssl.default-dh-param 2048\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n  timeout server 60s\n  timeout http-keep-alive 120s\n\
         frontend fe\n  bind 192.0.2.1:443 ssl crt {pem} alpn h2,http/1.1\n  maxconn 9500\n\
         http-request set-header X-Forwarded-For %[src]\n  http-request set-header X-Real-IP %[src]\n\
         http-request set-header X-Forwarded-Proto https\n  http-request set-header X-Forwarded-Host %[req.hdr(host)]\n\
         http-request set-header X-Forwarded-Port 443\n  default_backend be\n\
         backend be\n  http-reuse always\n  server s1 {BACKEND} maxconn 64\n",
        d = dir.display(),
        pem = pem.display()
    )
}

fn caddyfile(crt: &Path, key: &Path) -> String {
    format!(
        "{{\n  admin off\n  auto_https off\n  default_sni 192.0.2.1\n  servers {{\n    timeouts {{\n      idle 120s\n    }}\n  }}\n}}\n\
         https://192.0.2.1:443 {{\n  tls {crt} {key}\n  reverse_proxy {BACKEND} {{\n\
         header_up X-Forwarded-For {{remote_host}}\n    header_up X-Real-IP {{remote_host}}\n\
         header_up X-Forwarded-Proto https\n    header_up X-Forwarded-Host {{host}}\n    header_up X-Forwarded-Port 443\n  }}\n}}\n",
        crt = crt.display(),
        key = key.display()
    )
}

fn xdpgate_yaml(lab: &Lab, crt: &Path, key: &Path) -> String {
    format!(
        "filter:\n  interfaces: [{dev}]\n  sets:\n    admins: {{ cidrs: [198.51.100.0/29] }}\n  allow:\n    - {{ tcp: [22], from: [admins] }}\n\
         proxy:\n  access_log: {{ enabled: false }}\n  entrypoints:\n    \
         websecure: {{ listen: \"192.0.2.1:443\", tls: {{ certs: [{{ cert: {crt}, key: {key} }}] }}, limits: {{ max_connections: 30000, idle_timeout: 120s }} }}\n  \
         default_service: \"{BACKEND}\"\n",
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

/// Runs a client tool in the client namespace and returns its stdout.
fn client(ns: &str, program: &str, args: &[String]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ns}"))
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "{program} {args:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text
}

const WRK_LUA: &str = "done = function(summary, latency, requests)\n  \
  local e = summary.errors\n  \
  io.write(string.format(\"XG %d %d %d %d %d %d %d\\n\", summary.requests, summary.duration, \
  latency:percentile(50), latency:percentile(99), latency:percentile(99.9), \
  e.connect + e.read + e.write + e.timeout, e.status))\nend\n";

/// wrk's figures: (requests/s, p50 ms, p99 ms, p99.9 ms, errors).
fn parse_wrk(out: &str) -> (f64, f64, f64, f64, f64) {
    let Some(line) = out.lines().find_map(|l| l.strip_prefix("XG ")) else {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    };
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if f.len() < 7 {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    }
    (
        f[0] / (f[1] / 1e6),
        f[2] / 1e3,
        f[3] / 1e3,
        f[4] / 1e3,
        f[5] + f[6],
    )
}

/// h2load's requests/s from its summary, and latency percentiles (ms)
/// from its per-request log (third column: microseconds to the response).
fn parse_h2load(out: &str, log: &Path) -> (f64, f64, f64, f64, f64) {
    let rps = out
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let failed = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| l.split(',').find(|p| p.contains("failed")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let times: Vec<f64> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .map(|us| us / 1e3)
        .collect();
    (
        rps,
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 99.9),
        failed,
    )
}

/// Opens `count` TLS connections from the client namespace, each sending
/// one keep-alive request and reading its answer, and keeps them open.
fn idle_connections(
    ns: &str,
    count: usize,
) -> (
    Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tokio::runtime::Runtime,
    usize,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(config);
    let source: IpAddr = [198, 51, 100, 2].into();
    let server: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let sockets: Vec<_> = (0..count)
        .filter_map(|_| socket_in(ns, source).ok())
        .collect();
    let streams = runtime.block_on(async move {
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tasks = Vec::new();
        for socket in sockets {
            let (limit, connector) = (Arc::clone(&limit), connector.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await.ok()?;
                let tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
                    .await
                    .ok()?
                    .ok()?;
                let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
                let mut tls =
                    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
                        .await
                        .ok()?
                        .ok()?;
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .ok()?;
                let mut buf = vec![0u8; 16384];
                let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                (n > 0).then_some(tls)
            }));
        }
        let mut streams = Vec::new();
        for t in tasks {
            if let Ok(Some(s)) = t.await {
                streams.push(s);
            }
        }
        streams
    });
    let opened = streams.len();
    (streams, runtime, opened)
}

#[derive(Debug)]
struct AnyCert;
impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

const METRICS: [&str; 16] = [
    "h1 rps",
    "h1 p50 ms",
    "h1 p99 ms",
    "h1 p99.9 ms",
    "h1 errors",
    "h2 rps",
    "h2 p50 ms",
    "h2 p99 ms",
    "h2 p99.9 ms",
    "h2 failed",
    "new TLS conn/s",
    "CPU us/request (h1)",
    "RSS idle MiB",
    "RSS under load MiB",
    "RSS idle conns MiB",
    "idle conns open",
];

fn main() {
    let args = common::Args::parse(BENCH);
    args.only(BENCH, &["--seconds", "--idle"]);
    if !lab_ready(
        "bench proxy",
        &["nginx", "haproxy", "caddy", "wrk", "h2load"],
    ) {
        std::process::exit(1);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds: u64 = args
        .extra(BENCH, "--seconds")
        .unwrap_or(if args.quick { 2 } else { 10 });
    let idle: usize =
        args.extra(BENCH, "--idle")
            .unwrap_or(if args.quick { 200 } else { IDLE_FULL });
    // SAFETY: valid rlimit pointers; raising our soft limit to the hard one,
    // which the servers inherit.
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

    let lab = Lab::new("px");
    let work = Workdir::new("bench-proxy", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let pki = ProxyPki::new(&work, "bench-ca");
    let issued = pki.server(&["localhost"]);
    let (crt, key) = issued.write(&work, "server");
    let pem = work.write(
        "server.pem",
        &format!("{}{}", issued.cert_pem, issued.key_pem),
    );
    let _backend = Backend::echo(&lab.server_ns, BACKEND.parse().unwrap(), "echo");
    let dir = work.path("");
    let nginx = work.write("nginx.conf", &nginx_conf(&dir, &crt, &key));
    let haproxy = work.write("haproxy.cfg", &haproxy_cfg(&dir, &pem));
    let caddy = work.write("Caddyfile", &caddyfile(&crt, &key));
    let xdp = work.write("xdpgate.yaml", &xdpgate_yaml(&lab, &crt, &key));
    let lua = work.write("pct.lua", WRK_LUA);
    let h2log = work.path("h2load.log");
    let s = |v: &str| v.to_string();
    let wrk_h1: Vec<String> = vec![
        s("-t1"),
        s("-c64"),
        format!("-d{seconds}s"),
        s("-s"),
        lua.display().to_string(),
        s(URL),
    ];
    let h2: Vec<String> = vec![
        s("-t1"),
        s("-c64"),
        s("-m10"),
        format!("-D{seconds}"),
        format!("--log-file={}", h2log.display()),
        s(URL),
    ];
    let wrk_new: Vec<String> = vec![
        s("-t1"),
        s("-c16"),
        format!("-d{}s", seconds.div_ceil(2)),
        s("-H"),
        s("Connection: close"),
        s("-s"),
        lua.display().to_string(),
        s(URL),
    ];

    let start_cmd = |c: usize| -> (String, Vec<String>, Vec<(&'static str, String)>) {
        match c {
            0 => (
                s("nginx"),
                vec![
                    s("-c"),
                    nginx.display().to_string(),
                    s("-p"),
                    dir.display().to_string(),
                    s("-e"),
                    work.path("nginx-error.log").display().to_string(),
                ],
                vec![],
            ),
            1 => (
                s("haproxy"),
                vec![s("-db"), s("-f"), haproxy.display().to_string()],
                vec![],
            ),
            2 => (
                s("caddy"),
                vec![
                    s("run"),
                    s("--config"),
                    caddy.display().to_string(),
                    s("--adapter"),
                    s("caddyfile"),
                ],
                vec![
                    ("GOMAXPROCS", s("1")),
                    ("HOME", dir.display().to_string()),
                    ("XDG_DATA_HOME", dir.display().to_string()),
                    ("XDG_CONFIG_HOME", dir.display().to_string()),
                ],
            ),
            _ => (
                work.bin.display().to_string(),
                vec![
                    s("run"),
                    s("--worker-threads"),
                    s("1"),
                    s("--config"),
                    xdp.display().to_string(),
                    s("--pin-dir"),
                    work.pin_dir.display().to_string(),
                    s("--state-dir"),
                    work.state_dir.display().to_string(),
                    s("--admin-listen"),
                    format!("127.0.0.1:{ADMIN_PORT}"),
                ],
                vec![],
            ),
        }
    };

    let mut report = Report::new(
        BENCH,
        "TLS proxy: xdpgate, nginx, HAProxy and Caddy",
        &format!(
            "Each proxy terminates TLS on 192.0.2.1:443 in the server namespace with the same ECDSA P-256 certificate, \
             forwards every request to one upstream (an HTTP/1.1 echo server on {BACKEND} answering a ~300-byte JSON body) \
             over keep-alive connections, sets X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host and \
             X-Forwarded-Port, logs nothing, and runs ONE worker (nginx `worker_processes 1`, HAProxy `nbthread 1`, \
             Caddy `GOMAXPROCS=1`, xdpgate `--worker-threads 1`). The clients run in the client namespace across the veth, \
             on the same 2 cores as the proxy and the upstream. Per competitor and round: wrk HTTP/1.1 keep-alive for {seconds} s, \
             h2load HTTP/2 for {seconds} s, wrk with `Connection: close` (a full TLS handshake per request), then {idle} idle \
             TLS keep-alive connections (each made one request) held open while the proxy's RSS is read. CPU/request is the \
             proxy's own user+system time (all its processes) during the wrk run divided by the requests; RSS is summed over \
             its processes. Latencies are per request, in ms; p99.9 from wrk's own histogram and h2load's per-request log."
        ),
        &args,
    );
    report.version("nginx", common::package_version("nginx"));
    report.version("haproxy", common::package_version("haproxy"));
    report.version("caddy", common::package_version("caddy"));
    report.version("wrk", common::package_version("wrk"));
    report.version("h2load", common::package_version("nghttp2-client"));
    for c in 0..COMPETITORS.len() {
        let (p, a, e) = start_cmd(c);
        let env: Vec<String> = e.iter().map(|(k, v)| format!("{k}={v}")).collect();
        report.command(
            format!("{} {p} {}", env.join(" "), a.join(" "))
                .trim()
                .replace(&dir.display().to_string(), "$WORK/"),
        );
    }
    report
        .command(format!("wrk {}", wrk_h1.join(" ")).replace(&dir.display().to_string(), "$WORK/"));
    report
        .command(format!("h2load {}", h2.join(" ")).replace(&dir.display().to_string(), "$WORK/"));
    report.command(
        format!(
            "wrk {}",
            wrk_new
                .iter()
                .map(|a| if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                })
                .collect::<Vec<_>>()
                .join(" ")
        )
        .replace(&dir.display().to_string(), "$WORK/"),
    );
    for (name, text) in [
        ("nginx.conf", std::fs::read_to_string(&nginx)),
        ("haproxy.cfg", std::fs::read_to_string(&haproxy)),
        ("Caddyfile", std::fs::read_to_string(&caddy)),
        ("xdpgate.yaml", std::fs::read_to_string(&xdp)),
    ] {
        report.command(format!(
            "# {name}:\n{}",
            text.unwrap_or_default()
                .replace(&dir.display().to_string(), "$WORK/")
        ));
    }

    let jiffy_us = common::ns_per_jiffy() / 1e3;
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); METRICS.len()]; COMPETITORS.len()];
    for round in 0..args.rounds {
        for (c, name) in COMPETITORS.iter().enumerate() {
            let (program, a, env) = start_cmd(c);
            let log = work.path(&format!("{name}.log"));
            let mut server = Server::start(&lab.server_ns, &program, &a, &env, &log);
            server.wait_listening(&lab.server_ns, &log);
            // A warm-up, so the upstream pool and the caches exist.
            client(
                &lab.client_ns,
                "wrk",
                &[s("-t1"), s("-c8"), s("-d1s"), s(URL)],
            );
            let rss_idle = tree_rss_kib(server.pid()) as f64 / 1024.0;
            let cpu0 = tree_cpu_jiffies(server.pid());
            let (ns, pid) = (lab.client_ns.clone(), server.pid());
            let sampler = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(seconds * 1000 / 2));
                tree_rss_kib(pid)
            });
            let h1 = parse_wrk(&client(&ns, "wrk", &wrk_h1));
            let cpu1 = tree_cpu_jiffies(server.pid());
            let rss_load = sampler.join().unwrap_or(0) as f64 / 1024.0;
            let _ = std::fs::remove_file(&h2log);
            let h2r = parse_h2load(&client(&ns, "h2load", &h2), &h2log);
            let new = parse_wrk(&client(&ns, "wrk", &wrk_new));
            let (streams, runtime, opened) = idle_connections(&ns, idle);
            std::thread::sleep(Duration::from_millis(500));
            let rss_conns = tree_rss_kib(server.pid()) as f64 / 1024.0;
            drop(streams);
            drop(runtime);
            let requests = h1.0 * seconds as f64;
            let cpu_us = (cpu1 - cpu0) as f64 * jiffy_us / requests.max(1.0);
            let values = [
                h1.0,
                h1.1,
                h1.2,
                h1.3,
                h1.4,
                h2r.0,
                h2r.1,
                h2r.2,
                h2r.3,
                h2r.4,
                new.0,
                cpu_us,
                rss_idle,
                rss_load,
                rss_conns,
                opened as f64,
            ];
            println!(
                "round {}: {name:<8} h1 {:.0} rps p50 {:.2} p99 {:.2} p99.9 {:.2} ms | h2 {:.0} rps p99 {:.2} ms | new conns {:.0}/s | {:.1} us/req | RSS idle {:.1} load {:.1} {} conns {:.1} MiB",
                round + 1, h1.0, h1.1, h1.2, h1.3, h2r.0, h2r.2, new.0, cpu_us, rss_idle, rss_load, opened, rss_conns
            );
            for (m, v) in values.iter().enumerate() {
                samples[c][m].push(*v);
            }
            drop(server);
            if c == 3 {
                let _ = work.cli(&["detach"]);
            }
        }
    }

    let med = |c: usize, m: usize| median(&samples[c][m]);
    let names: Vec<String> = COMPETITORS.iter().map(|s| s.to_string()).collect();
    let mut rows = Vec::new();
    for (c, name) in COMPETITORS.iter().enumerate() {
        let mut row = vec![json!(name)];
        row.extend((0..METRICS.len()).map(|m| num(med(c, m))));
        rows.push(row);
    }
    let mut columns = vec!["proxy"];
    columns.extend(METRICS);
    report.table("Medians over the rounds", &columns, rows);
    let mut ratios = Vec::new();
    for (m, label) in [
        (0, "h1 rps"),
        (2, "h1 p99"),
        (5, "h2 rps"),
        (7, "h2 p99"),
        (10, "new TLS conn/s"),
        (11, "CPU/request"),
        (14, "RSS idle conns"),
    ] {
        let mut row = vec![json!(label)];
        row.extend((0..3).map(|c| num(med(3, m) / med(c, m))));
        ratios.push(row);
    }
    report.table(
        "xdpgate / competitor (medians; above 1 means xdpgate's figure is larger)",
        &["metric", "vs nginx", "vs haproxy", "vs caddy"],
        ratios,
    );
    let per = |m: usize| {
        (0..COMPETITORS.len())
            .map(|c| med(c, m))
            .collect::<Vec<_>>()
    };
    report.plot(
        "proxy-rps.png",
        "Requests per second (median)",
        "requests/s",
        &names,
        vec![
            ("HTTP/1.1 keep-alive (wrk)", per(0)),
            ("HTTP/2 (h2load)", per(5)),
            ("new TLS connection each (wrk)", per(10)),
        ],
    );
    report.plot(
        "proxy-latency.png",
        "Latency, HTTP/1.1 keep-alive (wrk -c64, median of rounds)",
        "ms",
        &names,
        vec![("p50", per(1)), ("p99", per(2)), ("p99.9", per(3))],
    );
    report.plot(
        "proxy-latency-h2.png",
        "Latency, HTTP/2 (h2load -c64 -m10, median of rounds)",
        "ms",
        &names,
        vec![("p50", per(6)), ("p99", per(7)), ("p99.9", per(8))],
    );
    report.plot(
        "proxy-memory.png",
        "Resident memory (median)",
        "MiB",
        &names,
        vec![
            ("idle", per(12)),
            ("under wrk load", per(13)),
            (&format!("{idle} idle TLS connections"), per(14)),
        ],
    );
    report.plot(
        "proxy-cpu.png",
        "Proxy CPU per request, HTTP/1.1 keep-alive (median)",
        "microseconds",
        &names,
        vec![("user+system", per(11))],
    );
    report.samples(
        "rounds",
        json!(COMPETITORS
            .iter()
            .zip(&samples)
            .map(|(n, s)| (
                n.to_string(),
                json!(METRICS
                    .iter()
                    .zip(s)
                    .map(|(m, v)| (
                        m.to_string(),
                        json!(v.iter().map(|x| num(*x)).collect::<Vec<Value>>())
                    ))
                    .collect::<serde_json::Map<_, _>>())
            ))
            .collect::<serde_json::Map<_, _>>()),
    );
    report.note(
        "The benchmark does not profile: the by-hand profile of xdpgate, what was changed after it and what that changed are in the notes under the machine description at the top of this page.",
    );
    report.note(&format!(
        "Idle connections: {IDLE_FULL} in a full run, not 10,000: open files are capped at 20,000 on these machines \
         (a hard limit root cannot raise in this container) and HAProxy reserves two per connection (`maxconn 9500`)."
    ));
    let _ = std::io::stdout().flush();
    report.write(&args.out);
}
