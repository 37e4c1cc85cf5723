//! The filter attached to a real interface: a veth pair between two network
//! namespaces this test creates, the embedded Cloudflare default on the
//! server side, and real TCP connections from a Cloudflare address and from an
//! outsider on the client side. Everything it creates is removed on drop,
//! including when an assertion fails. Needs root.
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    os::fd::AsRawFd,
    process::Command,
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use xdpgate::{
    filter::Filter,
    policy::{cloudflare_default, compile},
};
use xdpgate_common::{Family, Reason};
use xdpgate_tests::have_bpf_privileges;

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// A Cloudflare address, used only inside the test's own namespaces.
const CLOUDFLARE: Ipv4Addr = Ipv4Addr::new(104, 16, 0, 2);

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("run ip");
    assert!(status.success(), "ip {args} failed");
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Topology {
    server: String,
    client: String,
}

impl Topology {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let topology = Topology {
            server: format!("xg-srv-{id}"),
            client: format!("xg-cli-{id}"),
        };
        let (s, c) = (&topology.server, &topology.client);
        ip(&format!("netns add {s}"));
        ip(&format!("netns add {c}"));
        ip(&format!(
            "link add xgs{id} netns {s} type veth peer name xgc{id} netns {c}"
        ));
        ip(&format!("-n {s} addr add {SERVER}/24 dev xgs{id}"));
        ip(&format!("-n {s} link set xgs{id} up"));
        ip(&format!("-n {s} route add {CLOUDFLARE}/32 dev xgs{id}"));
        ip(&format!("-n {c} addr add {OUTSIDER}/24 dev xgc{id}"));
        ip(&format!("-n {c} addr add {CLOUDFLARE}/32 dev xgc{id}"));
        ip(&format!("-n {c} link set xgc{id} up"));
        topology
    }

    fn server_interface(&self) -> String {
        format!("xgs{}", std::process::id() % 100_000)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns`; sockets it creates
/// live in that namespace.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let handle = File::open(format!("/var/run/netns/{ns}")).expect("open netns");
                // SAFETY: a valid namespace fd; only this thread changes namespace.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {ns}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .expect("namespace thread")
    })
}

/// Whether a TCP connection from `source` to the server's :443 completes
/// within a second.
fn connects_from(topology: &Topology, source: Ipv4Addr) -> bool {
    in_netns(&topology.client, || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())
            .expect("bind source");
        let server = SocketAddr::V4(SocketAddrV4::new(SERVER, 443));
        socket
            .connect_timeout(&server.into(), Duration::from_secs(1))
            .is_ok()
    })
}

#[test]
fn the_cloudflare_default_admits_cloudflare_and_drops_outsiders_on_a_real_interface() {
    let test = "the_cloudflare_default_admits_cloudflare_and_drops_outsiders_on_a_real_interface";
    if !have_bpf_privileges(test) {
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("SKIP {test}: the `ip` command (iproute2) is not installed");
        return;
    }
    let topology = Topology::new();
    let _listener = in_netns(&topology.server, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, 443)).expect("listen on :443")
    });
    // Without a filter both sources connect: the topology itself works.
    assert!(
        connects_from(&topology, OUTSIDER),
        "outsider connects before the filter"
    );
    assert!(
        connects_from(&topology, CLOUDFLARE),
        "cloudflare connects before the filter"
    );

    let interface = topology.server_interface();
    let filter = in_netns(&topology.server, || {
        let mut filter = Filter::load().expect("load");
        filter
            .apply(&compile(&cloudflare_default()).expect("default compiles"))
            .expect("apply");
        filter
            .attach(&interface, xdpgate::filter::XdpModeChoice::Auto)
            .expect("attach to the veth");
        filter
    });

    assert!(
        connects_from(&topology, CLOUDFLARE),
        "a Cloudflare source connects"
    );
    assert!(
        !connects_from(&topology, OUTSIDER),
        "an outsider's SYNs are dropped"
    );
    let counters = filter.counters().expect("counters");
    assert!(counters.get(Reason::PassMember, Family::Ipv4).packets >= 1);
    // The client retransmits its SYN within the one-second timeout.
    assert!(counters.get(Reason::DropNotMemberTcp, Family::Ipv4).packets >= 1);

    // Dropping the filter detaches it: the interface is left as it was found.
    drop(filter);
    assert!(
        connects_from(&topology, OUTSIDER),
        "outsider connects after detach"
    );
}
