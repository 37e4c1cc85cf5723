//! The config file: one YAML file read into a [`Config`], validated whole
//! before anything uses it. Every error names the file, the line and the key
//! path (`filter.allow[1].from[0]`) of what is wrong, with a "did you mean"
//! where a name looks like a typo. Parsing is pure: it reads no set file and
//! asks no API, so a config that parses can still meet an empty set at run
//! time; what the daemon does then is the `sets` module's business.
//!
//! The schema is described in `docs/config.md`; [`DEFAULT_YAML`] is the
//! built-in configuration used when no file is given.
use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;

use crate::{
    logging::LogFormat,
    policy::{Binding, PolicySpec, Tunnels},
    sets::SetSpec,
};

mod check;
#[cfg(test)]
mod ingress_tests;
#[cfg(test)]
mod middleware_tests;
mod proxy;
#[cfg(test)]
mod proxy_tests;
mod read;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tunnels_tests;
mod values;
#[cfg(test)]
mod weighted_tests;
mod yaml;

/// The name and address rules the Ingress translation shares with the file.
pub(crate) use proxy::{route_host, route_path, target};
pub(crate) use values::{valid_name, MAX_NAME};

/// The built-in configuration: Cloudflare's ranges may connect to TCP 80
/// and 443 on the default-route interface, and nothing else is filtered.
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// Where last-known-good lists and `status.json` live unless `state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xdpgate";
/// Where the program, maps and links are pinned unless `filter.pin_dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdpgate";
/// The admin listener's address unless `admin.listen` says otherwise: loopback only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(500);
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Polling files more often than this is a busy loop, not a watch.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(1);

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub filter: FilterConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// Where last-known-good lists and status.json live. Default /var/lib/xdpgate.
    pub state_dir: PathBuf,
    /// How often the config file and set files are checked for changes.
    /// Default 500ms. YAML key `watch_interval` (humantime, e.g. "500ms").
    pub watch_interval: Duration,
    /// The ingress proxy; `None` when the file has no `proxy:` section (the
    /// daemon then runs the filter and the admin listener only). When present
    /// every name in it resolves: each route's service and the default
    /// service are keys of `services`, each route's entrypoints and each
    /// redirect target are entrypoints, and `trusted` names sets of `filter`.
    pub proxy: Option<crate::proxy::ProxyConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FilterConfig {
    /// Interfaces to attach to; empty means the interface of the default route.
    pub interfaces: Vec<String>,
    /// Native or generic XDP (`filter.xdp_mode`). Default `auto`.
    pub xdp_mode: crate::filter::XdpModeChoice,
    /// Where the program, maps and links are pinned. Default /sys/fs/bpf/xdpgate.
    pub pin_dir: PathBuf,
    /// The address sets, sorted by name.
    pub sets: Vec<SetSpec>,
    /// Bindings in file order (the policy compiler numbers them from 1).
    pub allow: Vec<Binding>,
    /// Sets whose members are dropped on every port.
    pub deny: Vec<String>,
    /// Drop all TCP from non-members to bound ports, not only connection attempts.
    pub strict: bool,
    /// Who may send tunnel protocols. YAML `tunnels: pass | drop | { from: [sets] }`.
    pub tunnels: Tunnels,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`. Default 127.0.0.1:9901.
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// A `tracing` `EnvFilter` directive: `info`, `xdpgate=debug,aya=warn`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for FilterConfig {
    /// No sets and no rules: not a policy that passes [`parse`], a starting point.
    fn default() -> Self {
        FilterConfig {
            interfaces: Vec::new(),
            xdp_mode: crate::filter::XdpModeChoice::Auto,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            sets: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            strict: false,
            tunnels: Tunnels::Pass,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: DEFAULT_ADMIN_LISTEN,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: DEFAULT_LOG_LEVEL.to_string(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Every default, and an empty (unenforceable) policy.
    fn defaults() -> Self {
        Config {
            filter: FilterConfig::default(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            watch_interval: DEFAULT_WATCH_INTERVAL,
            proxy: None,
        }
    }

    /// The PolicySpec to compile once the sets have contents. A set missing
    /// from `contents` is compiled as empty (the compiler refuses a policy
    /// that binds an empty set).
    pub fn policy_spec(&self, contents: &BTreeMap<String, Vec<IpNet>>) -> PolicySpec {
        PolicySpec {
            sets: self
                .filter
                .sets
                .iter()
                .map(|set| {
                    let nets = contents.get(&set.name).cloned().unwrap_or_default();
                    (set.name.clone(), nets)
                })
                .collect(),
            allow: self.filter.allow.clone(),
            deny: self.filter.deny.clone(),
            strict: self.filter.strict,
            tunnels: self.filter.tunnels.clone(),
        }
    }
}

/// Parses and validates a whole config file. `origin` is only used in error
/// messages.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let in_file = |e: ConfigError| ConfigError {
        path: origin.to_path_buf(),
        ..e
    };
    let root = yaml::load(text).map_err(in_file)?;
    let config = read::read_config(root.as_ref()).map_err(in_file)?;
    check::check_policy(&config, &yaml::index_lines(root.as_ref())).map_err(in_file)?;
    Ok(config)
}

/// Reads and parses a config file; a file that cannot be read is an error
/// that names it.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: None,
        key: String::new(),
        message: format!("cannot read the config file: {e}"),
    })?;
    parse(&text, path)
}

/// The built-in configuration ([`DEFAULT_YAML`]).
pub fn embedded_default() -> Config {
    parse(DEFAULT_YAML, Path::new("<built-in default config>"))
        .expect("the embedded default.yaml is valid (checked by the config tests)")
}

/// What is wrong with a config file, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", Located(self))]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; `None` when the culprit is missing from the file altogether.
    pub line: Option<usize>,
    /// The key path, like `filter.allow[1].from[0]`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// An error in a file not named yet ([`parse`] fills in the path).
    fn new(key: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            path: PathBuf::new(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// `path: line N: key: message`, leaving out the parts that are unknown.
struct Located<'a>(&'a ConfigError);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if !e.path.as_os_str().is_empty() {
            write!(f, "{}: ", e.path.display())?;
        }
        if let Some(line) = e.line {
            write!(f, "line {line}: ")?;
        }
        if !e.key.is_empty() {
            write!(f, "{}: ", e.key)?;
        }
        f.write_str(&e.message)
    }
}
