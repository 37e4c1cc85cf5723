//! Entrypoints seen from a client. A plain entrypoint that redirects sends
//! clients to the TLS one with 308 (or the 301 configured), keeping host,
//! path and query. And the per-entrypoint limits: an oversized
//! request head gets 431, a head sent too slowly is cut off (slowloris), an
//! idle keep-alive connection is closed, connections past the cap wait until
//! one is free, and HTTP/2 clients are told the stream cap (`nghttp`). The daemon runs
//! in the lab's server namespace; clients connect from the client namespace.
//! Needs root.
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use xdpgate_tests::lab::{enter_netns, in_netns, lab_ready, Daemon, Lab, Workdir, SERVER_V4};

const PLAIN: u16 = 8080;
const BACKEND: u16 = 9100;

/// A minimal HTTP/1.1 backend in the server namespace: every request gets
/// `200 ok`, on keep-alive connections.
struct Backend {
    _thread: std::thread::JoinHandle<()>,
}

impl Backend {
    fn start(server_ns: &str) -> Backend {
        let listener = in_netns(server_ns, || {
            TcpListener::bind((Ipv4Addr::LOCALHOST, BACKEND)).expect("backend listens")
        });
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve_ok(stream));
            }
        });
        Backend { _thread: thread }
    }
}

fn serve_ok(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                .is_err()
            {
                return;
            }
        }
    }
}

fn config(lab: &Lab) -> String {
    format!(
        "filter:
  interfaces: [{}]
  sets:
    members: {{ cidrs: [198.51.100.0/29] }}
  allow:
    - {{ tcp: [22], from: [members] }}
proxy:
  entrypoints:
    web:
      listen: \"[::]:{PLAIN}\"
      limits: {{ max_header_bytes: 16384, header_read_timeout: 1s, idle_timeout: 1s, max_connections: 2, h2_max_concurrent_streams: 7 }}
  routes:
    - {{ path: /, service: \"127.0.0.1:{BACKEND}\" }}
  access_log: {{ enabled: false }}
",
        lab.server_if
    )
}

fn connect() -> TcpStream {
    let stream = TcpStream::connect_timeout(
        &SocketAddr::new(IpAddr::V4(SERVER_V4), PLAIN),
        Duration::from_secs(2),
    )
    .expect("connect to the entrypoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Sends `request` and reads one response head; returns the status code.
fn status_of(stream: &mut TcpStream, request: &[u8]) -> Option<u16> {
    stream.write_all(request).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    // Drain a short body so the connection is ready for the next request.
    if let Some(len) = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).ok()?;
    }
    Some(status)
}

/// Whether the server closes `stream` within `within` (reads EOF or reset).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
        && {
            // A timeout is an error too: tell it apart.
            stream
                .set_read_timeout(Some(Duration::from_millis(10)))
                .unwrap();
            !matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: app.example\r\n\r\n";

/// The status and Location of a redirect answered to `request`.
fn redirect_of(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::new(IpAddr::V4(SERVER_V4), port),
        Duration::from_secs(2),
    )
    .expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    while !text.contains("\r\n\r\n") {
        let n = stream.read(&mut buf).expect("a response");
        assert!(n > 0, "closed without a response");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let location = text
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or_default()
        .to_string();
    (status, location)
}

#[test]
fn a_plain_entrypoint_redirects_to_the_tls_one_keeping_host_path_and_query() {
    let test = "a_plain_entrypoint_redirects_to_the_tls_one_keeping_host_path_and_query";
    if !lab_ready(test, &[]) {
        return;
    }
    let lab = Lab::new("rdr");
    let work = Workdir::new("redirect", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let config = format!(
        "filter:
  interfaces: [{}]
  sets:
    members: {{ cidrs: [198.51.100.0/29] }}
  allow:
    - {{ tcp: [22], from: [members] }}
proxy:
  entrypoints:
    web:    {{ listen: \"[::]:80\", redirect: websecure }}
    legacy: {{ listen: \"[::]:8081\", redirect: {{ to: alt, code: 301 }} }}
    websecure: {{ listen: \"[::]:443\", tls: {{}} }}
    alt:    {{ listen: \"[::]:8443\", tls: {{}} }}
  routes:
    - {{ path: /, service: \"127.0.0.1:{BACKEND}\" }}
  access_log: {{ enabled: false }}
",
        lab.server_if
    );
    let path = work.write("config.yaml", &config);
    let _daemon = Daemon::start_ready(&lab, &work, &path, "daemon");
    let client_ns = lab.client_ns.clone();
    std::thread::spawn(move || {
        enter_netns(&client_ns);
        assert_eq!(
            redirect_of(80, "POST /a/b?x=1&y=%20 HTTP/1.1\r\nhost: Shop.Example.com:80\r\ncontent-length: 0\r\n\r\n"),
            (308, "https://Shop.Example.com/a/b?x=1&y=%20".to_string()),
            "308 keeps the method; the default port 443 is left out of the URL"
        );
        assert_eq!(
            redirect_of(8081, "GET /old HTTP/1.1\r\nhost: shop.example.com\r\n\r\n"),
            (301, "https://shop.example.com:8443/old".to_string()),
            "301 when configured, to the target entrypoint's port"
        );
    })
    .join()
    .expect("client checks");
}

#[test]
fn entrypoint_limits_are_enforced_where_a_client_notices() {
    let test = "entrypoint_limits_are_enforced_where_a_client_notices";
    if !lab_ready(test, &["nghttp"]) {
        return;
    }
    let lab = Lab::new("lim");
    let work = Workdir::new("limits", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backend = Backend::start(&lab.server_ns);
    let path = work.write("config.yaml", &config(&lab));
    let _daemon = Daemon::start_ready(&lab, &work, &path, "daemon");
    let client_ns = lab.client_ns.clone();
    std::thread::spawn(move || {
        enter_netns(&client_ns);
        limits_from_the_client_side();
    })
    .join()
    .expect("client checks");
}

fn limits_from_the_client_side() {
    // HTTP/2 clients (here h2c with prior knowledge) are told the stream cap.
    let out = std::process::Command::new("nghttp")
        .args(["-nv", &format!("http://{SERVER_V4}:{PLAIN}/")])
        .output()
        .expect("run nghttp");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):7"),
        "the server's SETTINGS carry the configured stream cap:\n{text}"
    );

    // A normal request is served, on a keep-alive connection.
    let mut first = connect();
    assert_eq!(status_of(&mut first, GET), Some(200));
    assert_eq!(status_of(&mut first, GET), Some(200), "keep-alive");

    // A request head over max_header_bytes gets 431.
    let mut big = connect();
    let padding = "a".repeat(40 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: app.example\r\nx-padding: {padding}\r\n\r\n");
    assert_eq!(status_of(&mut big, request.as_bytes()), Some(431));
    drop(big);

    // The connection cap (2): with two connections held open, a third is
    // accepted by the kernel but not served until one of them closes.
    let mut second = connect();
    assert_eq!(status_of(&mut second, GET), Some(200));
    let mut third = connect();
    third.write_all(GET).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        third.read(&mut byte).is_err(),
        "a third connection is not served while two are open"
    );
    drop(first);
    drop(second);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&rest).contains("\r\n\r\n") {
        let n = third.read(&mut buf).expect("served once a slot is free");
        assert!(n > 0, "the third connection was closed instead of served");
        rest.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));

    // An idle keep-alive connection is closed after idle_timeout (1 s).
    let started = Instant::now();
    assert!(
        closed_within(&mut third, Duration::from_secs(4)),
        "the idle connection was not closed"
    );
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(800),
        "closed after {idle:?}, before the idle timeout"
    );
    drop(third);

    // Slowloris: a head trickled in slower than header_read_timeout (1 s) is
    // cut off, and a normal client is still served meanwhile.
    let mut slow = connect();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: app").unwrap();
    let mut normal = connect();
    assert_eq!(status_of(&mut normal, GET), Some(200));
    drop(normal);
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(300));
        if slow.write_all(b"a").is_err() {
            cut = true;
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut byte = [0u8; 64];
        match slow.read(&mut byte) {
            Ok(0) => {
                cut = true;
                break;
            }
            Ok(_) => {
                // hyper may answer 408 before closing.
                cut = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(cut, "a trickled head was not cut off within 5 s");
}
