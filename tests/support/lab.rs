//! The lab for the daemon's end-to-end tests: a server and a client network
//! namespace joined by a veth pair, the real daemon (`xdpgate-under-test
//! run`) attached to the server's end, listeners behind it and many source
//! addresses in front of it.
//!
//! Addresses are documentation ranges and exist only inside the test's
//! namespaces. The server has 192.0.2.1/24 and 2001:db8::1/64; the client has
//! the "members" 198.51.100.1-6 and 2001:db8:1::1-6 and the "outsiders"
//! 203.0.113.1-6 and 2001:db8:2::1-6, with routes both ways over the veth.
//! Whether a source is really a member is up to each test's config.
//!
//! Everything a test makes is removed by a guard's `Drop`, also when an
//! assertion fails: the namespaces ([`Lab`]), the daemon process
//! ([`Daemon`], whose log is printed if the test is failing), the pins and
//! the temporary directory ([`Workdir`]), listeners and servers. Declare
//! them in the order lab, workdir, daemon so they drop the other way round.
pub mod api;
pub mod backend;
pub mod client;
pub mod container;
pub mod daemon;
pub mod flood;
pub mod ingress;
pub mod kube_api;
pub mod net;
pub mod proxy;
pub mod raw;
pub mod redis;

pub use api::{ApiServer, Reply, Served, TestPki};
pub use backend::Backend;
pub use client::{Call, Client};
pub use container::{
    container_tools_ready, output, podman, seccomp_option, Container, TestImage, CONFIG_IN_IMAGE,
};
pub use daemon::{
    admin_get, admin_get_at, wait_for, xdp_program_ids, xdpgate, CliOutput, Daemon, HttpReply,
    KernelCounters, Metrics, Workdir, ADMIN_PORT,
};
pub use flood::{flood, start_connect, Flood, FLOOD_BATCH, FLOOD_THREADS, FLOOD_WAIT};
pub use net::{
    connect_from, enter_netns, in_netns, members, outsiders, server_addr, tcp_connects,
    tcp_outcomes, udp_echo_from, udp_outcomes, Lab, TcpServer, Tool, ToolOutput, UdpEcho,
    SERVER_V4, SERVER_V6,
};
pub use proxy::{
    access_log, curl, memory_kib, proxy_config, tools_ready, H2loadSummary, HostsDaemon, Issued,
    ProxyLab, ProxyPki, ProxySetup, PLAIN_PORT, TLS_PORT,
};
pub use raw::{h2py, loopback_status, python_h2_ready, raw_exchange, raw_request, RawReply};
pub use redis::{store_errors, StoreKind, StoreServer};

/// The TCP port the tests protect.
pub const TCP_PORT: u16 = 8443;
/// The UDP port the tests protect.
pub const UDP_PORT: u16 = 8472;

/// True when this process can run the lab: BPF privileges, bpffs at
/// /sys/fs/bpf, `ip` and `nsenter`, and every tool in `tools`. Otherwise
/// prints exactly what is missing and how to get it.
pub fn lab_ready(test: &str, tools: &[&str]) -> bool {
    if !crate::have_bpf_privileges(test) {
        return false;
    }
    if !on_bpffs("/sys/fs/bpf") {
        println!(
            "SKIP {test}: bpffs is not mounted at /sys/fs/bpf \
             (mount -t bpf bpf /sys/fs/bpf, or cargo xtask setup)"
        );
        return false;
    }
    for tool in ["ip", "nsenter"].iter().chain(tools) {
        if !on_path(tool) {
            let package = match *tool {
                "ip" => "iproute2",
                "nsenter" => "util-linux",
                other => other,
            };
            println!("SKIP {test}: {tool} is not installed (apt-get install {package})");
            return false;
        }
    }
    true
}

fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                std::fs::metadata(dir.join(tool))
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

fn on_bpffs(dir: &str) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(path) = std::ffi::CString::new(dir) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut stat) };
    rc == 0 && stat.f_type as i64 == BPF_FS_MAGIC
}
