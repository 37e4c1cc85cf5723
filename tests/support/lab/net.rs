//! The network side of the lab: two namespaces joined by a veth pair, the
//! client's many source addresses, listeners in the server namespace and
//! connections made from a chosen source address in the client namespace.
use std::{
    fs::File,
    io::{ErrorKind, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};

/// The server's addresses on its veth end.
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// How many sources of each kind and family the client carries.
pub const SOURCES_PER_GROUP: u16 = 6;

/// Sources meant to be in the allowed set: 198.51.100.1-6 and 2001:db8:1::1-6
/// (inside 198.51.100.0/29 and 2001:db8:1::/64).
pub fn members() -> Vec<IpAddr> {
    let v4 = (1..=SOURCES_PER_GROUP).map(|i| IpAddr::from([198, 51, 100, i as u8]));
    let v6 = (1..=SOURCES_PER_GROUP).map(|i| IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, i]));
    v4.chain(v6).collect()
}

/// Sources meant to be outside it: 203.0.113.1-6 and 2001:db8:2::1-6.
pub fn outsiders() -> Vec<IpAddr> {
    let v4 = (1..=SOURCES_PER_GROUP).map(|i| IpAddr::from([203, 0, 113, i as u8]));
    let v6 = (1..=SOURCES_PER_GROUP).map(|i| IpAddr::from([0x2001, 0xdb8, 2, 0, 0, 0, 0, i]));
    v4.chain(v6).collect()
}

/// The server address of the source's family, at `port`.
pub fn server_addr(source: IpAddr, port: u16) -> SocketAddr {
    match source {
        IpAddr::V4(_) => SocketAddr::new(SERVER_V4.into(), port),
        IpAddr::V6(_) => SocketAddr::new(SERVER_V6.into(), port),
    }
}

/// Runs `args` with `program`, panicking with its output if it fails.
pub fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ip(args: &str) {
    run("ip", &args.split_whitespace().collect::<Vec<_>>());
}

/// Moves the calling thread into network namespace `ns` for the rest of its
/// life: sockets it creates from then on live there.
pub fn enter_netns(ns: &str) {
    let handle = File::open(format!("/var/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open /var/run/netns/{ns}: {e}"));
    // SAFETY: a valid namespace fd; only this thread changes namespace.
    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {ns}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a thread inside network namespace `ns`; sockets it creates
/// stay in that namespace whichever thread uses them later.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(ns);
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A tokio runtime of `workers` threads for a test server, with `listener`
/// (bound already, in whatever namespace) registered on it.
pub fn runtime_for(
    listener: TcpListener,
    workers: usize,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener) {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).expect("tokio listener")
    };
    (runtime, listener)
}

/// A server namespace and a client namespace joined by a veth pair, with the
/// addresses and routes described in the module documentation. Removed on
/// drop, which also removes the veth pair.
pub struct Lab {
    pub server_ns: String,
    pub client_ns: String,
    /// The server's veth end, where the daemon attaches.
    pub server_if: String,
    pub client_if: String,
}

impl Lab {
    /// `tag` (two or three characters) tells this test's names from another
    /// test's in the same process; the pid tells them from other processes.
    pub fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        assert!(
            tag.len() <= 3,
            "a tag of at most 3 characters keeps veth names short"
        );
        let lab = Lab {
            server_ns: format!("xg-{tag}-srv-{pid}"),
            client_ns: format!("xg-{tag}-cli-{pid}"),
            server_if: format!("xs{tag}{pid}"),
            client_if: format!("xc{tag}{pid}"),
        };
        assert!(
            lab.server_if.len() <= 15,
            "veth name {} too long",
            lab.server_if
        );
        // Created first so that Drop removes whatever part was made if a
        // step below fails.
        ip(&format!("netns add {}", lab.server_ns));
        ip(&format!("netns add {}", lab.client_ns));
        lab.wire();
        lab
    }

    fn wire(&self) {
        let (s, c, sif, cif) = (
            &self.server_ns,
            &self.client_ns,
            &self.server_if,
            &self.client_if,
        );
        ip(&format!(
            "link add {sif} netns {s} type veth peer name {cif} netns {c}"
        ));
        for ns in [s, c] {
            ip(&format!("-n {ns} link set lo up"));
        }
        ip(&format!("-n {s} addr add {SERVER_V4}/24 dev {sif}"));
        ip(&format!("-n {s} addr add {SERVER_V6}/64 dev {sif} nodad"));
        for source in members().into_iter().chain(outsiders()) {
            let (len, flags) = if source.is_ipv4() {
                (32, "")
            } else {
                (128, "nodad")
            };
            ip(&format!("-n {c} addr add {source}/{len} dev {cif} {flags}"));
        }
        ip(&format!("-n {s} link set {sif} up"));
        ip(&format!("-n {c} link set {cif} up"));
        for range in [
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8:1::/64",
            "2001:db8:2::/64",
        ] {
            ip(&format!("-n {s} route add {range} dev {sif}"));
        }
        ip(&format!("-n {c} route add 192.0.2.0/24 dev {cif}"));
        ip(&format!("-n {c} route add 2001:db8::/64 dev {cif}"));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A TCP connection from `source` to the server's `port`, made from the
/// calling thread's namespace (the client's).
pub fn connect_from(source: IpAddr, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let domain = if source.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&server_addr(source, port).into(), timeout)?;
    Ok(socket.into())
}

/// Whether a TCP connection from each source completes within `timeout`;
/// every source tries at the same time, from the client namespace.
pub fn tcp_outcomes(
    client_ns: &str,
    sources: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Vec<(IpAddr, bool)> {
    std::thread::scope(|scope| {
        let tries: Vec<_> = sources
            .iter()
            .map(|&source| {
                scope.spawn(move || {
                    enter_netns(client_ns);
                    (source, connect_from(source, port, timeout).is_ok())
                })
            })
            .collect();
        tries
            .into_iter()
            .map(|t| t.join().expect("connect thread"))
            .collect()
    })
}

/// Whether a TCP connection from `source` completes within `timeout`.
pub fn tcp_connects(client_ns: &str, source: IpAddr, port: u16, timeout: Duration) -> bool {
    tcp_outcomes(client_ns, &[source], port, timeout)[0].1
}

/// Sends up to `tries` datagrams from `source` to the server's UDP `port`,
/// each waiting `timeout` for the echo. Returns how many were sent and
/// whether an echo came back (it stops at the first).
pub fn udp_echo_from(source: IpAddr, port: u16, tries: u32, timeout: Duration) -> (u32, bool) {
    let socket = UdpSocket::bind(SocketAddr::new(source, 0)).expect("bind a UDP source");
    socket.set_read_timeout(Some(timeout)).expect("UDP timeout");
    let payload = format!("echo from {source}");
    let mut buf = [0u8; 256];
    for sent in 1..=tries {
        socket
            .send_to(payload.as_bytes(), server_addr(source, port))
            .expect("send a datagram");
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == payload.as_bytes() => return (sent, true),
            Ok(_) => panic!("the UDP echo answered something else"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("receiving the UDP echo for {source}: {e}"),
        }
    }
    (tries, false)
}

/// As [`udp_echo_from`] for every source at once, from the client namespace.
pub fn udp_outcomes(
    client_ns: &str,
    sources: &[IpAddr],
    port: u16,
    tries: u32,
    timeout: Duration,
) -> Vec<(IpAddr, u32, bool)> {
    std::thread::scope(|scope| {
        let tries: Vec<_> = sources
            .iter()
            .map(|&source| {
                scope.spawn(move || {
                    enter_netns(client_ns);
                    let (sent, echoed) = udp_echo_from(source, port, tries, timeout);
                    (source, sent, echoed)
                })
            })
            .collect();
        tries
            .into_iter()
            .map(|t| t.join().expect("UDP thread"))
            .collect()
    })
}

/// The address as the client configured it (`::ffff:a.b.c.d` as a.b.c.d).
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// A background loop that stops and is joined on drop.
struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        Worker {
            stop,
            thread: Some(std::thread::spawn(move || body(flag))),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How long the listeners wait for work before looking at their stop flag.
const LISTENER_TICK: Duration = Duration::from_millis(20);

/// A dual-stack TCP listener in the server namespace that accepts every
/// connection, records the peer's address and closes it.
pub struct TcpServer {
    peers: Arc<Mutex<Vec<IpAddr>>>,
    _worker: Worker,
}

impl TcpServer {
    pub fn start(server_ns: &str, port: u16) -> TcpServer {
        let listener: TcpListener = in_netns(server_ns, || {
            let socket =
                Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).expect("TCP socket");
            socket.set_only_v6(false).expect("dual-stack listener");
            socket.set_reuse_address(true).expect("SO_REUSEADDR");
            socket
                .bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port).into())
                .unwrap_or_else(|e| panic!("listen on TCP {port}: {e}"));
            socket.listen(1024).expect("listen");
            socket.set_nonblocking(true).expect("non-blocking listener");
            socket.into()
        });
        let peers = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&peers);
        let worker = Worker::spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((_, peer)) => record.lock().unwrap().push(canonical(peer.ip())),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(LISTENER_TICK / 4)
                    }
                    Err(e) => panic!("accept on TCP {port}: {e}"),
                }
            }
        });
        TcpServer {
            peers,
            _worker: worker,
        }
    }

    /// Every peer accepted so far, in order.
    pub fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().unwrap().clone()
    }
}

/// A dual-stack UDP echo server in the server namespace.
pub struct UdpEcho {
    _worker: Worker,
}

impl UdpEcho {
    pub fn start(server_ns: &str, port: u16) -> UdpEcho {
        let socket: UdpSocket = in_netns(server_ns, || {
            let socket =
                Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).expect("UDP socket");
            socket.set_only_v6(false).expect("dual-stack UDP");
            socket
                .bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port).into())
                .unwrap_or_else(|e| panic!("bind UDP {port}: {e}"));
            socket.into()
        });
        socket
            .set_read_timeout(Some(LISTENER_TICK))
            .expect("UDP timeout");
        let worker = Worker::spawn(move |stop| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        });
        UdpEcho { _worker: worker }
    }
}

/// A program run inside a namespace with `nsenter --net` (a peer tool such
/// as nmap or hping3), its output collected. Killed on drop.
pub struct Tool {
    child: Option<std::process::Child>,
    what: String,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// What a [`Tool`] printed, and how it ended.
#[derive(Debug)]
pub struct ToolOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Tool {
    pub fn spawn(ns: &str, program: &str, args: &[&str]) -> Tool {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = child.stdout.take().map(|p| drain(Box::new(p)));
        let stderr = child.stderr.take().map(|p| drain(Box::new(p)));
        Tool {
            child: Some(child),
            what: format!("{program} {}", args.join(" ")),
            stdout,
            stderr,
        }
    }

    /// Waits for the program to end by itself; panics (killing it) if it
    /// runs longer than `timeout`.
    pub fn wait(mut self, timeout: Duration) -> ToolOutput {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.child.as_mut().expect("a running tool");
        loop {
            if let Some(status) = child.try_wait().expect("wait for the tool") {
                return self.collect(status);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "`{}` still runs after {timeout:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (after which hping3 prints its statistics) and waits.
    pub fn interrupt(self, timeout: Duration) -> ToolOutput {
        let pid = self.child.as_ref().expect("a running tool").id();
        // SAFETY: signalling a child this guard owns and has not reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        self.wait(timeout)
    }

    fn collect(&mut self, status: std::process::ExitStatus) -> ToolOutput {
        let text = |pipe: Option<JoinHandle<Vec<u8>>>| {
            let bytes = pipe
                .map(|p| p.join().unwrap_or_default())
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        self.child = None;
        ToolOutput {
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
