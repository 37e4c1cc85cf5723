//! The proxy side of the lab: a test CA that issues server and client
//! certificates into the workdir, the daemon's config with the filter
//! binding an unrelated port and the proxy's two entrypoints (plain on
//! `[::]:8080`, TLS on `[::]:8443`), the access log, the daemon's memory,
//! and a daemon variant that runs in a private mount namespace with its own
//! `/etc/hosts`, so that a test can change what a service name resolves to.
use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;

use super::{
    client::{Call, Client, Reply},
    daemon::{admin_get, Daemon, Workdir, ADMIN_PORT},
    net::{in_netns, Lab, Tool, ToolOutput},
};

/// The plain HTTP entrypoint `web`.
pub const PLAIN_PORT: u16 = 8080;
/// The TLS entrypoint `websecure`.
pub const TLS_PORT: u16 = 8443;

/// A certificate and its key, as PEM, and the certificate's DER.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Issued {
    /// Writes `<stem>.crt` and `<stem>.key` into the workdir.
    pub fn write(&self, work: &Workdir, stem: &str) -> (PathBuf, PathBuf) {
        (
            work.write(&format!("{stem}.crt"), &self.cert_pem),
            work.write(&format!("{stem}.key"), &self.key_pem),
        )
    }
}

/// A test CA, its certificate written to `ca.pem` in the workdir.
pub struct ProxyPki {
    pub ca_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl ProxyPki {
    pub fn new(work: &Workdir, name: &str) -> ProxyPki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let ca_file = work.write(&format!("{name}.pem"), &cert.pem());
        ProxyPki {
            ca_file,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (the first is also the CN), with a
    /// new key, valid until rcgen's default (4096).
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, None, None)
    }

    /// A new server certificate for `names` with `old`'s key (a renewal
    /// that keeps the key), valid until January 1st of `until_year`.
    pub fn renew(&self, old: &Issued, names: &[&str], until_year: i32) -> Issued {
        self.issue(
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            Some(&old.key_pem),
            Some(until_year),
        )
    }

    /// A client certificate with common name `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, None, None)
    }

    fn issue(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        key_pem: Option<&str>,
        until_year: Option<i32>,
    ) -> Issued {
        let key = match key_pem {
            Some(pem) => KeyPair::from_pem(pem).expect("key PEM"),
            None => KeyPair::generate().expect("key"),
        };
        let sans = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        if let Some(year) = until_year {
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Everything a proxy test needs, dropped in the right order (the daemon,
/// then the client, the workdir with its pins, and the namespaces last): the
/// lab, a workdir, a test CA with a certificate for `localhost` (the TLS
/// entrypoint's default when a test names none), a client trusting that CA,
/// and, once [`ProxyLab::start`] ran, the daemon.
pub struct ProxyLab {
    daemon: Option<Daemon>,
    hosts_daemon: Option<HostsDaemon>,
    pub client: Client,
    pub pki: ProxyPki,
    /// `server.crt` / `server.key`: for `localhost`.
    pub server_cert: (PathBuf, PathBuf),
    pub config: PathBuf,
    pub work: Workdir,
    pub lab: Lab,
}

impl ProxyLab {
    /// `tag`: at most three characters, unique among the tests of a file;
    /// `bin`: `env!("CARGO_BIN_EXE_xdpgate-under-test")`.
    pub fn new(tag: &str, bin: &str) -> ProxyLab {
        let lab = Lab::new(tag);
        let work = Workdir::new(&format!("proxy-{tag}"), bin);
        let pki = ProxyPki::new(&work, "test-ca");
        let server_cert = pki.server(&["localhost"]).write(&work, "server");
        let client = Client::new(&lab.client_ns, &pki.ca_file);
        ProxyLab {
            daemon: None,
            hosts_daemon: None,
            client,
            pki,
            server_cert,
            config: work.path("config.yaml"),
            work,
            lab,
        }
    }

    /// Writes the config for `setup` (see [`proxy_config`]).
    pub fn write_config(&self, setup: &ProxySetup) {
        let mut setup = setup.clone();
        if setup.certs.is_empty() {
            setup.certs.push(self.server_cert.clone());
        }
        std::fs::write(&self.config, proxy_config(&self.lab, &self.work, &setup))
            .expect("write config.yaml");
    }

    /// Writes the config and starts the daemon; returns once it is ready
    /// and both entrypoints accept connections.
    pub fn start(&mut self, setup: &ProxySetup) {
        self.start_unready(setup);
        self.daemon().wait_ready(Duration::from_secs(10));
        self.wait_for_entrypoints();
    }

    /// `/readyz` answers 200 a moment before the entrypoints are bound (a
    /// bug `once_readyz_says_ready_both_entrypoints_accept_connections`
    /// shows); the other tests wait for the listeners so they do not trip
    /// over it.
    fn wait_for_entrypoints(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for port in [PLAIN_PORT, TLS_PORT] {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            while in_netns(&self.lab.server_ns, || {
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1))
            })
            .is_err()
            {
                assert!(
                    Instant::now() < deadline,
                    "entrypoint {port} never accepted"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Writes the config and starts the daemon without waiting for it.
    pub fn start_unready(&mut self, setup: &ProxySetup) {
        self.daemon = None;
        self.write_config(setup);
        self.daemon = Some(Daemon::start_with_env(
            &self.lab,
            &self.work,
            &self.config,
            "daemon",
            &setup.env,
        ));
    }

    /// As [`ProxyLab::start`], with the daemon seeing `hosts` as its
    /// `/etc/hosts` (see [`HostsDaemon`]).
    pub fn start_with_hosts(&mut self, setup: &ProxySetup, hosts: &str) {
        self.write_config(setup);
        self.hosts_daemon = Some(HostsDaemon::start_ready(
            &self.lab,
            &self.work,
            &self.config,
            hosts,
        ));
        self.wait_for_entrypoints();
    }

    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("the daemon was started")
    }

    pub fn hosts_daemon(&self) -> &HostsDaemon {
        self.hosts_daemon.as_ref().expect("started with hosts")
    }

    pub fn pid(&self) -> u32 {
        match (&self.daemon, &self.hosts_daemon) {
            (Some(daemon), _) => daemon.pid(),
            (None, Some(daemon)) => daemon.pid(),
            (None, None) => panic!("the daemon was not started"),
        }
    }

    /// Sends `call` with the lab's client.
    pub fn send(&self, call: &Call) -> std::io::Result<Reply> {
        self.client.send(call)
    }

    /// Starts an echo backend `name` on 127.0.0.1:`port` in the server namespace.
    pub fn echo_backend(&self, name: &str, port: u16) -> super::backend::Backend {
        super::backend::Backend::echo(
            &self.lab.server_ns,
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            name,
        )
    }
}

/// What a test adds to the standard proxy config.
#[derive(Clone, Debug, Default)]
pub struct ProxySetup {
    /// `(cert, key)` files of the TLS entrypoint, the default first; empty
    /// gives no `certs` (a self-signed certificate).
    pub certs: Vec<(PathBuf, PathBuf)>,
    /// More keys of the TLS entrypoint's `tls` section (`client_ca: ...`).
    pub tls_extra: String,
    /// The `limits` section of both entrypoints (`header_read_timeout: 2s`).
    pub limits: String,
    /// More keys of both entrypoints, in flow style (`underscore_headers:
    /// keep, path: { parameters: strip }`).
    pub entrypoint: String,
    /// Lines of the `proxy` section after the entrypoints (`routes:`,
    /// `services:`, `drain:`...), indented by two spaces.
    pub rest: String,
    /// Added to the daemon's environment (never a secret: the in-cluster
    /// discovery variables).
    pub env: Vec<(String, String)>,
}

/// The whole config: the filter binds TCP 22 for `members`
/// (198.51.100.0/29, 2001:db8:1::/64) on the server's veth, which the proxy
/// also trusts; the proxy has `web` on [`PLAIN_PORT`] and `websecure` on
/// [`TLS_PORT`] and writes its access log to `access.log` in the workdir.
pub fn proxy_config(lab: &Lab, work: &Workdir, setup: &ProxySetup) -> String {
    let certs = setup
        .certs
        .iter()
        .map(|(cert, key)| format!("{{ cert: {}, key: {} }}", cert.display(), key.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut tls = format!("certs: [{certs}]");
    if !setup.tls_extra.is_empty() {
        tls = format!("{tls}, {}", setup.tls_extra);
    }
    let mut limits = if setup.limits.is_empty() {
        String::new()
    } else {
        format!(", limits: {{ {} }}", setup.limits)
    };
    if !setup.entrypoint.is_empty() {
        limits = format!("{limits}, {}", setup.entrypoint);
    }
    format!(
        "watch_interval: 100ms
filter:
  interfaces: [{interface}]
  sets:
    members: {{ cidrs: [198.51.100.0/29, \"2001:db8:1::/64\"] }}
  allow:
    - {{ tcp: [22], from: [members] }}
proxy:
  trusted: [members]
  access_log: {{ path: {log} }}
  entrypoints:
    web: {{ listen: \"[::]:{PLAIN_PORT}\"{limits} }}
    websecure: {{ listen: \"[::]:{TLS_PORT}\", tls: {{ {tls} }}{limits} }}
{rest}
",
        interface = lab.server_if,
        log = access_log_path(work).display(),
        rest = setup.rest,
    )
}

pub fn access_log_path(work: &Workdir) -> PathBuf {
    work.path("access.log")
}

/// Every line of the access log so far, parsed.
pub fn access_log(work: &Workdir) -> Vec<Value> {
    std::fs::read_to_string(access_log_path(work))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The daemon's resident memory now and at its peak, in KiB (`VmRSS`,
/// `VmHWM` of /proc/<pid>/status).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `curl` in the client namespace, trusting the test CA and with
/// `localhost` resolving to the server (192.0.2.1) on both entrypoints, and
/// waits for it (at most `timeout`).
pub fn curl(lab: &Lab, ca_file: &Path, args: &[&str], timeout: Duration) -> ToolOutput {
    let ca = ca_file.display().to_string();
    let plain = format!("localhost:{PLAIN_PORT}:192.0.2.1");
    let tls = format!("localhost:{TLS_PORT}:192.0.2.1");
    let mut all = vec![
        "--silent",
        "--show-error",
        "--cacert",
        &ca,
        "--resolve",
        &plain,
        "--resolve",
        &tls,
    ];
    all.extend_from_slice(args);
    Tool::spawn(&lab.client_ns, "curl", &all).wait(timeout)
}

/// True when every `(tool, Debian package)` is on the PATH; otherwise
/// prints which is missing and how to get it.
pub fn tools_ready(test: &str, tools: &[(&str, &str)]) -> bool {
    for (tool, package) in tools {
        if !on_path(tool) {
            println!("SKIP {test}: {tool} is not installed (apt-get install {package})");
            return false;
        }
    }
    true
}

fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `xdpgate run` in the server namespace and in a private mount namespace
/// where `/etc/hosts` is a bind mount of `hosts` in the workdir, so the
/// names the proxy resolves are the test's, and `/etc/resolv.conf` names a
/// DNS server on loopback that does not exist. Killed on drop; its log is
/// printed if the test is failing.
pub struct HostsDaemon {
    child: Option<Child>,
    server_ns: String,
    log: PathBuf,
    pub hosts: PathBuf,
}

impl HostsDaemon {
    pub fn start_ready(lab: &Lab, work: &Workdir, config: &Path, hosts: &str) -> HostsDaemon {
        let hosts_file = work.write("hosts", hosts);
        // Names not in `hosts` are asked of a DNS server on the server
        // namespace's loopback, where none listens: they fail at once, and
        // no query leaves the lab.
        let resolv_file = work.write(
            "resolv.conf",
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        );
        let log = work.path("daemon.log");
        let out = File::create(&log).expect("daemon log file");
        let err = out.try_clone().expect("daemon log file");
        let quote = |p: &Path| format!("'{}'", p.display());
        // `unshare --mount` makes the mounts private, so the bind mount never
        // shows outside; the bpffs stays the host's, so pins are shared.
        let script = format!(
            "mount --bind {hosts} /etc/hosts && mount --bind {resolv} /etc/resolv.conf && \
             exec {bin} run --config {config} --pin-dir {pins} --state-dir {state} \
             --admin-listen 127.0.0.1:{ADMIN_PORT}",
            hosts = quote(&hosts_file),
            resolv = quote(&resolv_file),
            bin = quote(&work.bin),
            config = quote(config),
            pins = quote(&work.pin_dir),
            state = quote(&work.state_dir),
        );
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", lab.server_ns))
            .args(["--", "unshare", "--mount", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn nsenter unshare xdpgate-under-test run");
        let mut daemon = HostsDaemon {
            child: Some(child),
            server_ns: lab.server_ns.clone(),
            log,
            hosts: hosts_file,
        };
        daemon.wait_ready(Duration::from_secs(10));
        daemon
    }

    /// Rewrites the hosts file in place: the bind mount holds its inode, so
    /// a new file renamed over it would not be seen.
    pub fn set_hosts(&self, contents: &str) {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.hosts)
            .expect("open the hosts file");
        file.write_all(contents.as_bytes())
            .expect("rewrite the hosts file");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "the daemon exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            match admin_get(&self.server_ns, "/readyz") {
                Ok(reply) if reply.status == 200 => return,
                Ok(reply) => last = format!("{} {}", reply.status, reply.body.trim()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the daemon is not ready after {timeout:?}: /readyz: {last}\n{}",
            self.log()
        );
    }
}

impl Drop for HostsDaemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log {} ----\n{}---- end of daemon log ----",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// The summary lines of an `h2load` run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct H2loadSummary {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
    pub requests_per_second: f64,
    /// The `time for request:` line (min, max, mean, sd, +/- sd).
    pub request_time: String,
}

impl H2loadSummary {
    /// Parses `finished in 1.2s, 8000.00 req/s, ...`, `requests: N total, N
    /// started, N done, N succeeded, N failed, N errored, N timeout` and
    /// `status codes: N 2xx, ...`; `None` if the lines are missing.
    pub fn parse(output: &str) -> Option<H2loadSummary> {
        let line = |prefix: &str| output.lines().find_map(|l| l.trim().strip_prefix(prefix));
        let count = |text: &str, what: &str| -> Option<u64> {
            text.split(',').find_map(|part| {
                let mut words = part.split_whitespace();
                let n = words.next()?.parse().ok()?;
                (words.next()? == what).then_some(n)
            })
        };
        let requests = line("requests:")?;
        let codes = line("status codes:")?;
        let finished = line("finished in")?;
        let rate = finished
            .split(',')
            .find_map(|p| p.trim().strip_suffix(" req/s"))?
            .trim()
            .parse()
            .ok()?;
        Some(H2loadSummary {
            total: count(requests, "total")?,
            succeeded: count(requests, "succeeded")?,
            failed: count(requests, "failed")?,
            errored: count(requests, "errored")?,
            timeout: count(requests, "timeout").unwrap_or(0),
            status: [
                count(codes, "2xx")?,
                count(codes, "3xx")?,
                count(codes, "4xx")?,
                count(codes, "5xx")?,
            ],
            requests_per_second: rate,
            request_time: line("time for request:")
                .unwrap_or_default()
                .trim()
                .to_string(),
        })
    }
}
