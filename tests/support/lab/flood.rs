//! A flood of TCP connection attempts from chosen source addresses, to look
//! for any moment in which a filter lets a non-member's SYN through (a
//! restart, a rolling update). Each attempt is a real kernel SYN from a
//! non-blocking socket in the client namespace.
use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};

use super::{
    net::{enter_netns, TcpServer},
    server_addr,
};
use crate::lab::TCP_PORT;

/// Each flood thread sends this many SYNs at once, gives them this long to
/// be answered (on a veth an answer takes far less), closes the sockets and
/// starts over: thousands of SYNs a second, so that even a window of a
/// fraction of a millisecond would let some through.
pub const FLOOD_BATCH: usize = 32;
pub const FLOOD_WAIT: Duration = Duration::from_millis(20);
pub const FLOOD_THREADS: usize = 4;

/// What the flood saw.
#[derive(Default)]
pub struct Flood {
    /// Attempts whose SYN went out and got no answer.
    pub unanswered: AtomicU64,
    /// Non-member connections that completed: each one is a hole.
    pub breaches: std::sync::Mutex<Vec<String>>,
    /// Attempts that failed locally (no SYN sent), by error.
    pub local_errors: std::sync::Mutex<Vec<String>>,
}

/// A non-blocking connection attempt from `source`: the SYN is on its way
/// when this returns.
pub fn start_connect(source: IpAddr) -> std::io::Result<Socket> {
    let domain = if source.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&server_addr(source, TCP_PORT).into()) {
        Ok(()) => Ok(socket),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(socket),
        Err(e) => Err(e),
    }
}

/// Batches of connection attempts from `sources` in turn until `stop`.
pub fn flood(client_ns: &str, sources: &[IpAddr], stop: &AtomicBool, seen: &Flood) {
    enter_netns(client_ns);
    let mut next = sources.iter().cycle();
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::with_capacity(FLOOD_BATCH);
        for &source in next.by_ref().take(FLOOD_BATCH) {
            match start_connect(source) {
                Ok(socket) => batch.push((source, socket)),
                Err(e) => seen
                    .local_errors
                    .lock()
                    .unwrap()
                    .push(format!("{source}: {e}")),
            }
        }
        std::thread::sleep(FLOOD_WAIT);
        for (source, socket) in batch {
            // A peer address means the handshake completed.
            if socket.peer_addr().is_ok() {
                seen.breaches.lock().unwrap().push(source.to_string());
            } else {
                seen.unanswered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Flood {
    /// Asserts that no non-member got through `during` something: no flood
    /// attempt completed a handshake and `listener` accepted only `members`.
    pub fn assert_kept_out(&self, listener: &TcpServer, members: &[IpAddr], during: &str) {
        let breaches = self.breaches.lock().unwrap().clone();
        assert!(
            breaches.is_empty(),
            "non-member connections completed during {during}: {breaches:?}"
        );
        let intruders: Vec<IpAddr> = listener
            .peers()
            .into_iter()
            .filter(|p| !members.contains(p))
            .collect();
        assert!(
            intruders.is_empty(),
            "the listener accepted non-members: {intruders:?}"
        );
    }
}
