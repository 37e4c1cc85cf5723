//! A cluster-wide rate limit on a real `redis-server` (Debian's), and on
//! `valkey-server` where it is installed (Debian 12 has no package: that
//! test says SKIP), started by the test: three `xdpgate run` daemons, each with its own filter on its
//! own interface, proxy and admin listener, share one store in the server
//! namespace and spend one budget (a burst of 30 across all three, ±1,
//! where three local limits would let 90 through). With the store killed
//! each middleware applies its `on_error` (`local`: this node's own limit;
//! `deny`: 429), counted in `xdpgate_rate_limit_store_errors_total`. When
//! the store is back (empty, on the same port) the very next requests are
//! decided by it, on every daemon, without a reload and without one more
//! fallback, whether a daemon's connections were tried while the store was
//! down or broke unused. Needs root (namespaces, XDP) and redis-server.
use std::{net::SocketAddr, time::Duration};

use xdpgate_tests::lab::{
    in_netns, lab_ready, loopback_status, store_errors, Backend, Daemon, Lab, StoreKind,
    StoreServer, Workdir,
};

const BURST: usize = 30;
const STORE_PORT: u16 = 6379;
const BACKEND_PORT: u16 = 8090;
const PROXY_PORTS: [u16; 3] = [8081, 8082, 8083];
const ADMIN_PORTS: [u16; 3] = [9911, 9912, 9913];

/// Three daemons and their store in one server namespace. Fields drop in
/// order: daemons, their pins, the backend, the store, the namespaces.
struct Cluster {
    daemons: Vec<Daemon>,
    _works: Vec<Workdir>,
    _backend: Backend,
    store: StoreServer,
    /// The store's log, removed after the store stopped.
    _store_dir: tempfile::TempDir,
    lab: Lab,
}

impl Cluster {
    fn start(kind: StoreKind, tag: &str) -> Cluster {
        let lab = Lab::new(tag);
        let store_dir = tempfile::Builder::new()
            .prefix(&format!("xdpgate-{tag}-store-"))
            .tempdir()
            .expect("a directory for the store's log");
        let store = StoreServer::start(
            kind,
            &lab.server_ns,
            STORE_PORT,
            &["--port".to_string(), STORE_PORT.to_string()],
            store_dir.path().join("store.log"),
        );
        let backend = Backend::echo(
            &lab.server_ns,
            SocketAddr::from(([127, 0, 0, 1], BACKEND_PORT)),
            "backend",
        );
        // One interface per daemon: the lab's veth, and two more veth pairs
        // inside the server namespace (removed with it).
        let mut interfaces = vec![lab.server_if.clone()];
        for i in 1..3 {
            let (a, b) = (format!("rl{i}a"), format!("rl{i}b"));
            ip(&format!(
                "-n {} link add {a} type veth peer name {b}",
                lab.server_ns
            ));
            for end in [&a, &b] {
                ip(&format!("-n {} link set {end} up", lab.server_ns));
            }
            interfaces.push(a);
        }
        let mut works = Vec::new();
        let mut daemons = Vec::new();
        for (i, interface) in interfaces.iter().enumerate() {
            let work = Workdir::new(
                &format!("{tag}{i}"),
                env!("CARGO_BIN_EXE_xdpgate-under-test"),
            );
            let config = work.write("config.yaml", &config(interface, PROXY_PORTS[i]));
            let daemon = Daemon::start_with_admin(
                &lab,
                &work,
                &config,
                &format!("daemon{i}"),
                ADMIN_PORTS[i],
            );
            works.push(work);
            daemons.push(daemon);
        }
        for daemon in &mut daemons {
            daemon.wait_ready(Duration::from_secs(20));
        }
        Cluster {
            daemons,
            _works: works,
            _backend: backend,
            store,
            _store_dir: store_dir,
            lab,
        }
    }

    /// `count` requests for `host`, round robin over the daemons starting
    /// with `first`; how many got 200 and how many 429.
    fn send(&self, host: &str, first: usize, count: usize, every: usize) -> (usize, usize) {
        in_netns(&self.lab.server_ns, || {
            let statuses: Vec<u16> = (0..count)
                .map(|i| loopback_status(PROXY_PORTS[(first + i * every) % 3], host))
                .collect();
            assert!(
                statuses.iter().all(|s| *s == 200 || *s == 429),
                "every answer is 200 or 429: {statuses:?}"
            );
            let passed = statuses.iter().filter(|s| **s == 200).count();
            (passed, count - passed)
        })
    }

    /// `xdpgate_rate_limit_store_errors_total` of `middleware` with
    /// `outcome`, per daemon.
    fn fallbacks(&self, middleware: &str, outcome: &str) -> Vec<u64> {
        self.daemons
            .iter()
            .map(|d| store_errors(&d.metrics(), middleware, outcome))
            .collect()
    }
}

fn ip(args: &str) {
    let status = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("run ip");
    assert!(status.success(), "ip {args}: {status}");
}

fn config(interface: &str, port: u16) -> String {
    let store = format!("address: \"127.0.0.1:{STORE_PORT}\", timeout: 300ms");
    format!(
        r#"watch_interval: 100ms
filter:
  interfaces: [{interface}]
  sets:
    nodes: {{ cidrs: [198.51.100.0/29] }}
  allow:
    - {{ tcp: [22], from: [nodes] }}
proxy:
  access_log: {{ enabled: false }}
  entrypoints:
    web: {{ listen: "127.0.0.1:{port}" }}
  middlewares:
    shared_local:
      rate_limit:
        average: 1
        period: 1h
        burst: {BURST}
        store: {{ redis: {{ {store}, on_error: local }} }}
    shared_deny:
      rate_limit:
        average: 1
        period: 1h
        burst: {BURST}
        store: {{ redis: {{ {store}, on_error: deny, pool: 2 }} }}
  routes:
    - {{ host: local.test, service: "127.0.0.1:{BACKEND_PORT}", middlewares: [shared_local] }}
    - {{ host: deny.test, service: "127.0.0.1:{BACKEND_PORT}", middlewares: [shared_deny] }}
"#
    )
}

#[test]
fn three_daemons_share_one_redis() {
    three_daemons_share_one_budget_and_fall_back_while_the_store_is_down(StoreKind::Redis, "rls");
}

#[test]
fn three_daemons_share_one_valkey() {
    three_daemons_share_one_budget_and_fall_back_while_the_store_is_down(StoreKind::Valkey, "rlv");
}

fn three_daemons_share_one_budget_and_fall_back_while_the_store_is_down(
    kind: StoreKind,
    tag: &str,
) {
    let test = format!("three_daemons_share_one_{kind:?}");
    if !lab_ready(&test, &[]) || !StoreServer::installed(&test, kind) {
        return;
    }
    let mut cluster = Cluster::start(kind, tag);

    // 90 requests round robin over the three: one budget of 30.
    let (passed, refused) = cluster.send("local.test", 0, 3 * BURST, 1);
    assert!(
        passed.abs_diff(BURST) <= 1,
        "{passed} of {} passed ({refused} refused); one shared burst is {BURST}",
        3 * BURST
    );
    assert_eq!(
        cluster.fallbacks("shared_local", "local"),
        [0, 0, 0],
        "no fallback while the store answers"
    );

    // Each daemon's two `deny` connections open (6 requests of a budget
    // that the restart below empties anyway).
    assert_eq!(cluster.send("deny.test", 0, 6, 1), (6, 0));

    // The store dies: `local` decides with the node's own limit (its
    // bucket untouched so far: all 10 pass), `deny` refuses.
    cluster.store.stop();
    assert_eq!(
        cluster.send("local.test", 0, 10, 3),
        (10, 0),
        "on_error: local"
    );
    assert_eq!(
        cluster.send("deny.test", 1, 10, 3),
        (0, 10),
        "on_error: deny"
    );
    assert_eq!(cluster.fallbacks("shared_local", "local"), [10, 0, 0]);
    assert_eq!(cluster.fallbacks("shared_deny", "deny"), [0, 10, 0]);

    // The store is back, empty, on the same port. Daemon 1's connections
    // were tried while it was down, daemon 2's broke unused: the very next
    // requests on all three are the store's, and one burst passes.
    cluster.store.restart();
    let (passed, refused) = cluster.send("deny.test", 0, 3 * BURST, 1);
    assert!(
        passed.abs_diff(BURST) <= 1,
        "after the store returned {passed} of {} passed ({refused} refused); one shared \
         burst is {BURST}",
        3 * BURST
    );
    assert_eq!(
        cluster.fallbacks("shared_deny", "deny"),
        [0, 10, 0],
        "no request took the fallback once the store was back"
    );
    let recovered = cluster.daemons[1].log();
    assert!(
        recovered.contains("the rate limit store answers again"),
        "daemon 1 logs that the store is back:\n{recovered}"
    );
}
