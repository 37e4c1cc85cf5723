//! What the running daemon knows about itself, in one serialisable value.
//!
//! The daemon keeps a [`DaemonStatus`] current and writes it to
//! `<state_dir>/status.json` after every change, so the CLI (`xdpgate status`,
//! `sets`, `check`) can explain the kernel's state even after the daemon has
//! died; the admin listener renders the same value as metrics. Nothing in here
//! is a secret: it is printed and exported as it is.
use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::policy::Tunnels;

/// The file name of the status snapshot inside the state directory.
pub const STATUS_FILE: &str = "status.json";

/// Seconds since the Unix epoch, the unit of every timestamp in the status.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds of the last change to this value.
    pub updated_at: u64,
    /// The config file in use, or `None` for the embedded default.
    pub config_path: Option<PathBuf>,
    pub pin_dir: PathBuf,
    pub interfaces: Vec<InterfaceStatus>,
    pub policy: PolicyStatus,
    pub sets: Vec<SetStatus>,
    pub reloads: ReloadStatus,
    /// The Ingress source, when `proxy.ingress` is configured.
    #[serde(default)]
    pub ingress: Option<IngressStatus>,
    /// What readiness waits for besides the kernel and the sets.
    #[serde(default)]
    pub readiness: ReadinessStatus,
}

/// The daemon's own conditions for taking traffic; [`readiness`] reads them
/// with the kernel's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadinessStatus {
    /// The proxy's entrypoints are bound (true when there is no proxy).
    pub entrypoints_bound: bool,
    /// The Ingress sources delivered and their routes were applied (true
    /// without `proxy.ingress`): a new node must not take traffic before it
    /// knows the cluster's routes.
    pub ingress_loaded: bool,
    /// SIGTERM arrived: the daemon is shutting down.
    pub draining: bool,
}

/// Whether the daemon should take traffic, and if not, every reason why, one
/// sentence each. `armed` and `live_links` (interfaces whose pinned link
/// still filters) are read from the kernel by the caller. `/readyz` and
/// `xdpgate status` both ask this, so they never disagree.
pub fn readiness(
    status: &DaemonStatus,
    armed: bool,
    live_links: &[String],
) -> Result<(), Vec<String>> {
    let mut missing = Vec::new();
    let flags = &status.readiness;
    if flags.draining {
        missing.push("draining: the daemon is shutting down".to_string());
    }
    if !flags.entrypoints_bound {
        missing.push("the proxy's entrypoints are not bound yet".to_string());
    }
    if !flags.ingress_loaded {
        missing.push(
            "the Ingress routes are not loaded yet (files not read or the Kubernetes \
             watch has not listed)"
                .to_string(),
        );
    }
    if !armed {
        missing.push("the filter is not armed: it passes everything".to_string());
    }
    for interface in &status.interfaces {
        if !live_links.contains(&interface.name) {
            missing.push(format!("not attached to {}", interface.name));
        }
    }
    if status.interfaces.is_empty() {
        missing.push("not attached to any interface yet".to_string());
    }
    for set in status.sets.iter().filter(|s| !s.loaded) {
        missing.push(format!("set `{}` is not loaded", set.name));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// What the Ingress source contributes and what it could not use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngressStatus {
    /// Ingresses of our class translated (valid).
    pub ingresses: usize,
    /// Routes from Ingresses in force (after conflicts).
    pub routes: usize,
    /// TLS Secrets whose certificates are served.
    pub certificates: usize,
    /// Source problems (unreadable files, a failing watch), invalid
    /// Ingresses and unusable TLS Secrets, one sentence each.
    pub problems: Vec<String>,
    /// Routes or services left out because another definition wins.
    pub conflicts: Vec<String>,
    /// Things that work but should change (Traefik annotations,
    /// `ImplementationSpecific` paths).
    pub warnings: Vec<String>,
    /// Unix seconds of the last change applied to the proxy.
    pub applied_at: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// `driver` or `generic`.
    pub mode: String,
    /// How the filter got there this time: `attached`, `adopted` (a pinned link
    /// from an earlier instance, with the new program swapped in).
    pub how: String,
    /// The mode `filter.xdp_mode` asks for, when the link runs in another
    /// one (an adopted link is kept rather than moved; see `problems`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted_mode: Option<String>,
}

/// What `xdpgate status` and the daemon's log say of an interface whose link
/// runs in another mode than `filter.xdp_mode` asks for.
pub fn mode_differs(interface: &str, mode: &str, wanted: &str) -> String {
    format!(
        "{interface} is filtered in {mode} mode but filter.xdp_mode asks for {wanted}: the \
         kernel cannot run both on one interface, so the link in force is kept; to switch, \
         run `xdpgate detach` and start the daemon again ({interface} is unfiltered in between)"
    )
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The generation in the kernel's control word after the last apply.
    pub generation: u64,
    /// Bit `i` of the kernel's set masks stands for `set_names[i]`.
    pub set_names: Vec<String>,
    /// Unix seconds of the last successful apply; 0 if none yet.
    pub applied_at: u64,
    /// Why the last attempt to compile or apply a policy failed, if it did.
    /// The policy in force is then the one of `generation`.
    pub last_error: Option<String>,
    /// Policies refused (compile or apply errors) since the daemon started.
    pub refused: u64,
    /// Who may send tunnels under the policy in force: `pass` (not
    /// filtered), `drop`, or `from a, b` (see [`describe_tunnels`]).
    #[serde(default)]
    pub tunnels: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Config reloads applied (SIGHUP or file change).
    pub ok: u64,
    /// Config reloads refused because the new file was invalid.
    pub failed: u64,
    /// Unix seconds of the last reload attempt; 0 if none.
    pub last_at: u64,
    pub last_error: Option<String>,
}

/// One address set as the daemon holds it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetStatus {
    pub name: String,
    /// Distinct prefixes in the set (the union of its sources).
    pub size: usize,
    /// True once every source has produced a list (fresh, last-known-good or
    /// embedded); a set that is not loaded is not enforced.
    pub loaded: bool,
    pub sources: Vec<SourceStatus>,
}

/// One source of a set and the story of its last refresh.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// `inline`, `file` or `cloudflare`.
    pub kind: String,
    /// Where it comes from: `config`, a file path or a URL.
    pub origin: String,
    /// Prefixes this source contributes now.
    pub entries: usize,
    /// Where the entries in force came from: `config`, `file`, `api`,
    /// `last-known-good` (persisted in the state directory) or `embedded`
    /// (the snapshot compiled into the binary).
    pub from: String,
    /// Unix seconds when the entries in force were obtained; 0 if never.
    pub obtained_at: u64,
    /// Unix seconds of the last refresh attempt; 0 if none.
    pub last_attempt_at: u64,
    /// Unix seconds of the last successful refresh (including "not
    /// modified"); 0 if none.
    pub last_success_at: u64,
    /// The outcome of the last attempt, e.g. `ok`, `not modified`,
    /// `refused: shrink of 80% exceeds max_shrink 50%`, `error: ...`.
    pub last_result: String,
    /// Refreshes that produced a list that is now in force or unchanged.
    pub successes: u64,
    /// Refreshes that failed to produce a list (I/O, HTTP, parse).
    pub failures: u64,
    /// Lists that were obtained but refused by validation (empty, shrink).
    pub refusals: u64,
    /// The HTTP entity tag of the list in force, for conditional requests.
    pub etag: Option<String>,
}

impl DaemonStatus {
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(STATUS_FILE)
    }

    /// Writes the status atomically (temporary file, then rename), so a
    /// reader never sees half of it.
    pub fn write_to(&self, state_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let path = Self::path_in(state_dir);
        let tmp = state_dir.join(format!(".{STATUS_FILE}.{}", std::process::id()));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn read_from(state_dir: &Path) -> std::io::Result<Self> {
        let path = Self::path_in(state_dir);
        let text = std::fs::read(&path)?;
        serde_json::from_slice(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }
}

/// `pass`, `drop` or `from a, b`: the policy's tunnel rule in a word or two.
pub fn describe_tunnels(tunnels: &Tunnels) -> String {
    match tunnels {
        Tunnels::Pass => "pass".to_string(),
        Tunnels::From(sets) if sets.is_empty() => "drop".to_string(),
        Tunnels::From(sets) => format!("from {}", sets.join(", ")),
    }
}

/// Link kinds (`ip -d link`'s `info_kind`) that decapsulate packets arriving
/// on another interface: IP-in-IP, GRE, SIT and the UDP encapsulations. Their
/// inner packets enter the host through the tunnel device, where the filter
/// is not attached. WireGuard and IPsec interfaces are left out: they take
/// only packets from authenticated peers.
pub const TUNNEL_KINDS: &[&str] = &[
    "ipip",
    "sit",
    "ip6tnl",
    "gre",
    "gretap",
    "erspan",
    "ip6gre",
    "ip6gretap",
    "ip6erspan",
    "vxlan",
    "geneve",
    "bareudp",
    "gtp",
    "l2tp",
];

/// A network device that decapsulates tunnels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelDevice {
    pub name: String,
    pub kind: String,
}

/// The tunnel devices of the current network namespace, from
/// `ip -details -json link show`. `Err` says why they could not be listed.
pub fn tunnel_devices() -> Result<Vec<TunnelDevice>, String> {
    let output = std::process::Command::new("ip")
        .args(["-details", "-json", "link", "show"])
        .output()
        .map_err(|e| format!("cannot run `ip -details -json link show`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`ip -details -json link show` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    parse_tunnel_devices(&output.stdout)
}

/// The tunnel devices in the JSON `ip -details -json link show` prints.
pub fn parse_tunnel_devices(json: &[u8]) -> Result<Vec<TunnelDevice>, String> {
    let links: Vec<serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| format!("`ip -details -json link show` printed no list of links: {e}"))?;
    Ok(links
        .iter()
        .filter_map(|link| {
            let kind = link["linkinfo"]["info_kind"].as_str()?;
            let name = link["ifname"].as_str()?;
            TUNNEL_KINDS.contains(&kind).then(|| TunnelDevice {
                name: name.to_string(),
                kind: kind.to_string(),
            })
        })
        .collect())
}

/// What `xdpgate status` says about tunnel devices beside the filtered
/// `interfaces`, given the policy's tunnel rule ([`describe_tunnels`]).
pub fn tunnel_warnings(
    devices: &[TunnelDevice],
    interfaces: &[String],
    tunnels: &str,
) -> Vec<String> {
    if interfaces.is_empty() {
        return Vec::new();
    }
    let beside = interfaces.join(", ");
    devices
        .iter()
        .filter(|d| !interfaces.contains(&d.name))
        .map(|d| {
            let rule = match tunnels {
                "drop" => "filter.tunnels is `drop`: tunnel packets are dropped on the filtered \
                           interfaces, so nothing reaches it through them"
                    .to_string(),
                t if t.starts_with("from ") => format!(
                    "filter.tunnels lets only members of {} send tunnels; what they send \
                     through it is not judged",
                    &t[5..]
                ),
                _ => "tunnels are not filtered (filter.tunnels: pass): any source that reaches \
                      it can send packets to any port of this host that the filter never judges; \
                      set filter.tunnels to `drop` or `{ from: [sets] }`"
                    .to_string(),
            };
            format!(
                "tunnel device {} ({}) beside the filtered interface(s) {beside}: {rule}",
                d.name, d.kind
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_LINK: &str = r#"[
        {"ifindex":1,"ifname":"lo","linkinfo":null},
        {"ifindex":2,"ifname":"eth0"},
        {"ifindex":3,"ifname":"tunl0","linkinfo":{"info_kind":"ipip","info_data":{}}},
        {"ifindex":4,"ifname":"flannel.1","linkinfo":{"info_kind":"vxlan"}},
        {"ifindex":5,"ifname":"wg0","linkinfo":{"info_kind":"wireguard"}},
        {"ifindex":6,"ifname":"veth1","linkinfo":{"info_kind":"veth"}}
    ]"#;

    #[test]
    fn tunnel_devices_are_found_by_kind_and_authenticated_ones_left_out() {
        let devices = parse_tunnel_devices(IP_LINK.as_bytes()).unwrap();
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["tunl0", "flannel.1"]);
        assert_eq!(devices[0].kind, "ipip");
    }

    #[test]
    fn unparsable_ip_output_is_an_error_saying_so() {
        let err = parse_tunnel_devices(b"not json").unwrap_err();
        assert!(err.contains("ip -details -json link show"), "{err}");
    }

    #[test]
    fn the_warning_names_the_device_and_what_the_policy_does_about_it() {
        let devices = parse_tunnel_devices(IP_LINK.as_bytes()).unwrap();
        let eth0 = vec!["eth0".to_string()];
        let open = tunnel_warnings(&devices, &eth0, "pass");
        assert_eq!(open.len(), 2);
        assert!(open[0].contains("tunl0 (ipip)") && open[0].contains("eth0"));
        assert!(open[0].contains("not filtered"), "{}", open[0]);
        let from = tunnel_warnings(&devices, &eth0, "from nodes");
        assert!(from[1].contains("only members of nodes"), "{}", from[1]);
        let dropped = tunnel_warnings(&devices, &eth0, "drop");
        assert!(dropped[0].contains("dropped"), "{}", dropped[0]);
        // Nothing filtered, nothing to warn beside.
        assert!(tunnel_warnings(&devices, &[], "pass").is_empty());
    }

    #[test]
    fn the_tunnel_rule_is_described_in_a_word_or_two() {
        assert_eq!(describe_tunnels(&Tunnels::Pass), "pass");
        assert_eq!(describe_tunnels(&Tunnels::From(vec![])), "drop");
        assert_eq!(
            describe_tunnels(&Tunnels::From(vec!["nodes".into(), "peers".into()])),
            "from nodes, peers"
        );
    }
}
