//! The schema: reads the YAML tree into a [`Config`], checking every key and
//! value on the way. Errors name the key path and line of the value at fault.
//! Whether the policy as a whole makes sense is [`super::check`]'s job.
use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use ipnet::IpNet;
use tracing_subscriber::{filter::LevelFilter, EnvFilter};

use super::{
    proxy::{read_proxy, Surroundings},
    values::{boolean, duration, file_path, suggest, valid_name, MAX_NAME},
    yaml::{closest_name, Node, Val},
    AdminConfig, Config, ConfigError, FilterConfig, LogConfig, MIN_WATCH_INTERVAL,
};
use crate::{
    logging::LogFormat,
    policy::{parse_net, Binding, PortRange, Tunnels},
    sets::{CloudflareSpec, SetSpec, SourceSpec, DEFAULT_MAX_SHRINK},
};
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME: usize = 15;
/// A refresh more often than this would hammer the API for nothing.
const MIN_CLOUDFLARE_REFRESH: Duration = Duration::from_secs(1);

pub(super) fn read_config(root: Option<&Node>) -> Result<Config, ConfigError> {
    let mut config = Config::defaults();
    let Some(root) = root else {
        return Ok(config);
    };
    let top = Val::root(root).table(
        "",
        &[
            "state_dir",
            "watch_interval",
            "log",
            "admin",
            "filter",
            "proxy",
        ],
    )?;
    if let Some(v) = top.get("state_dir") {
        config.state_dir = file_path(v, "state_dir")?;
    }
    if let Some(v) = top.get("watch_interval") {
        let interval = duration(v, "watch_interval")?;
        if interval < MIN_WATCH_INTERVAL {
            return Err(v.error(
                "watch_interval",
                format!(
                    "{} is too short to poll files at; use at least {}",
                    humantime::format_duration(interval),
                    humantime::format_duration(MIN_WATCH_INTERVAL)
                ),
            ));
        }
        config.watch_interval = interval;
    }
    if let Some(v) = top.get("log") {
        config.log = read_log(v)?;
    }
    if let Some(v) = top.get("admin") {
        config.admin = read_admin(v)?;
    }
    if let Some(v) = top.get("filter") {
        config.filter = read_filter(v)?;
    }
    // Last: the proxy refers to the filter's sets and must not collide with
    // the admin listener.
    if let Some(v) = top.get("proxy") {
        let around = Surroundings {
            sets: &config.filter.sets,
            admin_listen: config.admin.listen,
        };
        config.proxy = Some(read_proxy(v, &around)?);
    }
    Ok(config)
}

fn read_log(v: Val) -> Result<LogConfig, ConfigError> {
    let table = v.table("log", &["level", "format"])?;
    let mut log = LogConfig::default();
    if let Some(v) = table.get("level") {
        let path = table.key_path("level");
        let level = v.text(&path, "a log level like info or xdpgate=debug,aya=warn")?;
        log.level = log_level(level).map_err(|message| v.error(&path, message))?;
    }
    if let Some(v) = table.get("format") {
        let path = table.key_path("format");
        log.format = match v.text(&path, "text or json")? {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(v.error(
                    &path,
                    format!(
                        "unknown log format `{other}`: expected text or json{}",
                        suggest(other, &["text", "json"])
                    ),
                ))
            }
        };
    }
    Ok(log)
}

/// Checks an `EnvFilter` directive. A bare word that is not a level parses as
/// "everything from target <word>", which is never what `level: debgu` means,
/// so such words are refused.
fn log_level(level: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = level.trim();
    if level.is_empty() {
        return Err("the log level is empty; write e.g. info".into());
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare_word = !directive.contains(['=', '[']);
        if bare_word && LevelFilter::from_str(directive).is_err() {
            let hint = match closest_name(&directive.to_lowercase(), LEVELS.into_iter()) {
                Some(near) => format!(" (did you mean `{near}`?)"),
                None => format!("; to set the level of one target write `{directive}=debug`"),
            };
            return Err(format!(
                "`{directive}` is not a log level ({}){hint}",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::try_new(level)
        .map(|_| level.to_string())
        .map_err(|e| format!("`{level}` is not a log filter directive: {e}"))
}

fn read_admin(v: Val) -> Result<AdminConfig, ConfigError> {
    let table = v.table("admin", &["listen"])?;
    let mut admin = AdminConfig::default();
    if let Some(v) = table.get("listen") {
        let path = table.key_path("listen");
        let text = v.text(&path, "an address and port like 127.0.0.1:9901")?;
        admin.listen = text.trim().parse::<SocketAddr>().map_err(|_| {
            v.error(
                &path,
                format!(
                    "`{text}` is not an IP address and port like 127.0.0.1:9901 or [::1]:9901 \
                     (host names are not resolved)"
                ),
            )
        })?;
    }
    Ok(admin)
}

fn read_filter(v: Val) -> Result<FilterConfig, ConfigError> {
    let table = v.table(
        "filter",
        &[
            "interfaces",
            "xdp_mode",
            "pin_dir",
            "strict",
            "tunnels",
            "sets",
            "allow",
            "deny",
        ],
    )?;
    let mut filter = FilterConfig::default();
    if let Some(v) = table.get("interfaces") {
        filter.interfaces = interfaces(v, &table.key_path("interfaces"))?;
    }
    if let Some(v) = table.get("xdp_mode") {
        let path = table.key_path("xdp_mode");
        let text = v.text(&path, "auto")?;
        filter.xdp_mode = crate::filter::XdpModeChoice::parse(text).ok_or_else(|| {
            v.error(
                &path,
                format!("`{text}` is not `auto`, `native` or `generic`"),
            )
        })?;
    }
    if let Some(v) = table.get("pin_dir") {
        filter.pin_dir = file_path(v, &table.key_path("pin_dir"))?;
    }
    if let Some(v) = table.get("strict") {
        filter.strict = boolean(v, &table.key_path("strict"))?;
    }
    if let Some(v) = table.get("tunnels") {
        filter.tunnels = read_tunnels(v, &table.key_path("tunnels"))?;
    }
    if let Some(v) = table.get("sets") {
        filter.sets = read_sets(v, &table.key_path("sets"))?;
    }
    if let Some(v) = table.get("allow") {
        let path = table.key_path("allow");
        let example = "[{ tcp: [443], from: [cloudflare] }]";
        for (path, item) in v.list(&path, example)? {
            filter.allow.push(read_binding(item, &path)?);
        }
    }
    if let Some(v) = table.get("deny") {
        filter.deny = names(v, &table.key_path("deny"))?;
    }
    Ok(filter)
}

/// `pass`, `drop`, or `{ from: [sets] }`.
fn read_tunnels(v: Val, path: &str) -> Result<Tunnels, ConfigError> {
    if let Ok(text) = v.text(path, "") {
        return match text {
            "pass" => Ok(Tunnels::Pass),
            "drop" => Ok(Tunnels::From(Vec::new())),
            other => Err(v.error(
                path,
                format!("`{other}` is not `pass`, `drop` or a mapping like {{ from: [nodes] }}"),
            )),
        };
    }
    let table = v.table(path, &["from"])?;
    match table.get("from") {
        Some(from) => Ok(Tunnels::From(names(from, &table.key_path("from"))?)),
        None => Err(v.error(
            path,
            "`tunnels` as a mapping needs `from: [sets]` (or write `tunnels: drop`)",
        )),
    }
}

fn interfaces(v: Val, path: &str) -> Result<Vec<String>, ConfigError> {
    let mut names: Vec<String> = Vec::new();
    for (path, item) in v.list(path, "[eth0]")? {
        let name = item.text(&path, "an interface name like eth0")?;
        let valid = !name.is_empty()
            && name.len() <= MAX_INTERFACE_NAME
            && name != "."
            && name != ".."
            && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            return Err(item.error(
                &path,
                format!(
                    "`{name}` is not a network interface name (1-{MAX_INTERFACE_NAME} bytes, \
                     no `/`, `:` or spaces)"
                ),
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(item.error(&path, format!("interface `{name}` is listed twice")));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// The sets, sorted by name (the order the kernel's mask bits follow).
fn read_sets(v: Val, path: &str) -> Result<Vec<SetSpec>, ConfigError> {
    let table = v.named_table(path)?;
    let mut sets = Vec::new();
    for (name, key_line, v) in table.entries() {
        let path = table.key_path(name);
        if !valid_name(name) {
            return Err(ConfigError::new(
                &path,
                Some(key_line),
                format!(
                    "`{name}` is not a valid set name: use 1-{MAX_NAME} letters, digits, `_`, \
                     `-` or `.` (set names become metric labels and file names)"
                ),
            ));
        }
        sets.push(read_set(name, v, &path)?);
    }
    sets.sort_by(|a: &SetSpec, b| a.name.cmp(&b.name));
    Ok(sets)
}

/// One set: the union of its sources, inline CIDRs first, then files in the
/// order given, then Cloudflare's ranges.
fn read_set(name: &str, v: Val, path: &str) -> Result<SetSpec, ConfigError> {
    let table = v.table(
        path,
        &["cidrs", "file", "files", "cloudflare", "max_shrink"],
    )?;
    let mut sources = Vec::new();
    if let Some(v) = table.get("cidrs") {
        let path = table.key_path("cidrs");
        let mut nets: Vec<IpNet> = Vec::new();
        for (path, item) in v.list(&path, "[10.0.0.0/24, 10.1.0.1]")? {
            let text = item.text(&path, "an address or CIDR like 10.0.0.0/24")?;
            nets.push(parse_net(text).map_err(|message| item.error(&path, message))?);
        }
        if nets.is_empty() {
            return Err(v.error(&path, "lists no addresses: add some or remove `cidrs`"));
        }
        sources.push(SourceSpec::Inline(nets));
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let mut add_file = |file: PathBuf, item: Val, path: &str| {
        if files.contains(&file) {
            return Err(item.error(path, format!("`{}` is listed twice", file.display())));
        }
        files.push(file);
        Ok(())
    };
    if let Some(v) = table.get("file") {
        let path = table.key_path("file");
        add_file(file_path(v, &path)?, v, &path)?;
    }
    if let Some(v) = table.get("files") {
        let path = table.key_path("files");
        let items = v.list(&path, "[/etc/xdpgate/a.txt, /etc/xdpgate/b.txt]")?;
        if items.is_empty() {
            return Err(v.error(&path, "lists no files: add some or remove `files`"));
        }
        for (path, item) in items {
            add_file(file_path(item, &path)?, item, &path)?;
        }
    }
    sources.extend(files.into_iter().map(SourceSpec::File));
    if let Some(v) = table.get("cloudflare") {
        sources.push(SourceSpec::Cloudflare(read_cloudflare(
            v,
            &table.key_path("cloudflare"),
        )?));
    }
    let mut max_shrink = DEFAULT_MAX_SHRINK;
    if let Some(v) = table.get("max_shrink") {
        max_shrink = fraction(v, &table.key_path("max_shrink"))?;
    }
    if sources.is_empty() {
        return Err(v.error(
            path,
            format!("set `{name}` has no source: give it `cidrs`, `file`, `files` or `cloudflare`"),
        ));
    }
    Ok(SetSpec {
        name: name.to_string(),
        sources,
        max_shrink,
    })
}

fn read_cloudflare(v: Val, path: &str) -> Result<CloudflareSpec, ConfigError> {
    let table = v.table(path, &["url", "refresh", "timeout", "ca_file"])?;
    let mut spec = CloudflareSpec::default();
    if let Some(v) = table.get("url") {
        let path = table.key_path("url");
        let url = v.text(&path, "an http:// or https:// URL")?.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or("");
        if rest.is_empty() || url.contains(char::is_whitespace) {
            return Err(v.error(&path, format!("`{url}` is not an http:// or https:// URL")));
        }
        spec.url = url.to_string();
    }
    if let Some(v) = table.get("refresh") {
        let path = table.key_path("refresh");
        spec.refresh = duration(v, &path)?;
        if spec.refresh < MIN_CLOUDFLARE_REFRESH {
            return Err(v.error(&path, "refresh must be at least 1s"));
        }
    }
    if let Some(v) = table.get("timeout") {
        let path = table.key_path("timeout");
        spec.timeout = duration(v, &path)?;
        if spec.timeout.is_zero() {
            return Err(v.error(&path, "a timeout of 0 would fail every request"));
        }
    }
    if let Some(v) = table.get("ca_file") {
        spec.ca_file = Some(file_path(v, &table.key_path("ca_file"))?);
    }
    Ok(spec)
}

/// One allow rule. Ports are only parsed here; port 0, backwards ranges and
/// rules without ports or sets are the policy compiler's to refuse.
fn read_binding(v: Val, path: &str) -> Result<Binding, ConfigError> {
    let table = v.table(path, &["tcp", "udp", "from"])?;
    let mut binding = Binding::default();
    if let Some(v) = table.get("tcp") {
        binding.tcp = ports(v, &table.key_path("tcp"))?;
    }
    if let Some(v) = table.get("udp") {
        binding.udp = ports(v, &table.key_path("udp"))?;
    }
    if let Some(v) = table.get("from") {
        binding.from = names(v, &table.key_path("from"))?;
    }
    Ok(binding)
}

fn ports(v: Val, path: &str) -> Result<Vec<PortRange>, ConfigError> {
    v.list(path, "[80, 443, \"30000-32767\"]")?
        .into_iter()
        .map(|(path, item)| {
            let text = item.text(&path, "a port or a range like \"30000-32767\"")?;
            PortRange::from_str(text).map_err(|message| item.error(&path, message))
        })
        .collect()
}

/// Set names in `from` and `deny`. Whether they are defined is checked with
/// the whole policy.
fn names(v: Val, path: &str) -> Result<Vec<String>, ConfigError> {
    v.list(path, "[cloudflare, nodes]")?
        .into_iter()
        .map(|(path, item)| item.text(&path, "a set name").map(str::to_string))
        .collect()
}

fn fraction(v: Val, path: &str) -> Result<f64, ConfigError> {
    let text = v.text(path, "a number from 0 to 1")?;
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(v.error(
            path,
            format!(
                "`{text}` is not a fraction from 0 to 1 (0.5 refuses an update that removes more \
                 than half of a source's entries; 1 turns the check off)"
            ),
        )),
    }
}
