//! A store server, `redis-server` (Debian's) or `valkey-server` (same
//! options), inside a test's server namespace, on 127.0.0.1, without
//! persistence, for the shared rate limit's tests: the
//! daemons reach it there as a node reaches the cluster's store. Killed on
//! drop (and on [`StoreServer::stop`]); its output is kept in a file that is
//! printed when the test is failing.
use std::{
    fs::File,
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{daemon::Metrics, net::in_netns};

/// Which server: both take the same options and speak the same protocol.
#[derive(Clone, Copy, Debug)]
pub enum StoreKind {
    Redis,
    Valkey,
}

impl StoreKind {
    pub fn program(self) -> &'static str {
        match self {
            StoreKind::Redis => "redis-server",
            StoreKind::Valkey => "valkey-server",
        }
    }
}

pub struct StoreServer {
    kind: StoreKind,
    child: Option<Child>,
    server_ns: String,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl StoreServer {
    /// True when `kind`'s server runs; otherwise says how to install it.
    pub fn installed(test: &str, kind: StoreKind) -> bool {
        let program = kind.program();
        if Command::new(program).arg("--version").output().is_ok() {
            return true;
        }
        println!(
            "SKIP {test}: {program} is not installed (apt-get install {program}; Debian 12 \
             has no valkey-server package)"
        );
        false
    }

    /// Starts it in `server_ns` listening on `port` (plain TCP, or TLS when
    /// `args` say `--port 0 --tls-port ...`), with `args` added, and waits
    /// until `port` accepts connections. `log` receives its output.
    pub fn start(
        kind: StoreKind,
        server_ns: &str,
        port: u16,
        args: &[String],
        log: PathBuf,
    ) -> StoreServer {
        let mut server = StoreServer {
            kind,
            child: None,
            server_ns: server_ns.to_string(),
            port,
            args: args.to_vec(),
            log,
        };
        server.restart();
        server
    }

    /// Starts it again after [`StoreServer::stop`], on the same port,
    /// empty (as a store restarted without persistence).
    pub fn restart(&mut self) {
        self.stop();
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("store log file");
        let err = out.try_clone().expect("store log file");
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.server_ns))
            .args(["--", self.kind.program(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nsenter {}: {e}", self.kind.program()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = self.port;
        while !in_netns(&self.server_ns, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("{} exited ({status}):\n{}", self.kind.program(), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {port}:\n{}",
                self.kind.program(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the store is gone at once, as when its node dies.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let program = self.kind.program();
            eprintln!("---- {program} log ----\n{}---- end ----", self.log());
        }
    }
}

/// `xdpgate_rate_limit_store_errors_total{middleware,outcome}` in a scrape
/// (0 when the series is absent).
pub fn store_errors(metrics: &Metrics, middleware: &str, outcome: &str) -> u64 {
    metrics
        .get(
            "xdpgate_rate_limit_store_errors_total",
            &[("middleware", middleware), ("outcome", outcome)],
        )
        .unwrap_or(0.0) as u64
}
