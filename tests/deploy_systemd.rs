//! The systemd unit in deploy/systemd: `systemd-analyze verify` accepts it
//! (on a copy whose ExecStart is the binary under test and whose config path
//! exists, so the check is about the unit and not about this host), and it
//! keeps the hardening docs/operations.md and deploy/systemd/README.md rely on:
//! the four capabilities and nothing more, a read-only system with the state
//! directory and bpffs writable, SIGTERM with a stop timeout above the proxy's
//! drain, SIGHUP for reload. Runs without root.
use std::{collections::BTreeMap, path::PathBuf, process::Command, time::Duration};

const UNIT: &str = "deploy/systemd/xdpgate.service";
const BINARY: &str = "/usr/local/bin/xdpgate";
const CONFIG: &str = "/etc/xdpgate/config.yaml";
/// `proxy.drain.accept_grace` + `proxy.drain.grace_timeout` defaults.
const DRAIN: Duration = Duration::from_secs(5 + 30);
const CAPABILITIES: [&str; 4] = [
    "CAP_BPF",
    "CAP_NET_ADMIN",
    "CAP_PERFMON",
    "CAP_NET_BIND_SERVICE",
];

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(UNIT)
}

fn unit_text() -> String {
    let path = unit_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(section, key) -> every value assigned`, in order, with continuation
/// lines joined and comments dropped.
type Directives = BTreeMap<(String, String), Vec<String>>;

fn parse_unit(text: &str) -> Directives {
    let mut directives = Directives::new();
    let mut section = String::new();
    let mut logical = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            logical.push_str(continued);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if let Some(name) = entry.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = entry
            .split_once('=')
            .unwrap_or_else(|| panic!("{UNIT}: not `Key=value`: {raw}"));
        assert!(!section.is_empty(), "{UNIT}: `{key}` outside a section");
        directives
            .entry((section.clone(), key.trim().to_string()))
            .or_default()
            .push(value.trim().to_string());
    }
    directives
}

/// The single value of `[section] key`; panics if it is missing or repeated.
fn single<'a>(directives: &'a Directives, section: &str, key: &str) -> &'a str {
    let values = directives
        .get(&(section.to_string(), key.to_string()))
        .unwrap_or_else(|| panic!("{UNIT}: [{section}] has no {key}="));
    assert_eq!(
        values.len(),
        1,
        "{UNIT}: [{section}] {key}= is set {values:?}"
    );
    &values[0]
}

/// A systemd time span as the unit would write it: `45s`, `1min 30s`,
/// `90` (seconds).
fn parse_timespan(value: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = value.trim();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("time span `{value}`"));
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "" | "s" | "sec" | "second" | "seconds" => number,
            "m" | "min" | "minute" | "minutes" => number * 60,
            "h" | "hr" | "hour" | "hours" => number * 3600,
            other => panic!("time span `{value}`: unit `{other}`"),
        };
        total += Duration::from_secs(seconds);
        rest = rest[unit_len..].trim_start();
    }
    total
}

fn on_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let test = "systemd_analyze_verify_accepts_the_unit";
    let Some(analyze) = on_path("systemd-analyze") else {
        println!("SKIP {test}: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    let text = unit_text();
    assert!(
        text.contains(&format!("ExecStart={BINARY} ")),
        "{UNIT}: ExecStart runs {BINARY}"
    );
    let dir = tempfile::Builder::new()
        .prefix("xdpgate-deploy-systemd-")
        .tempdir()
        .expect("temporary directory");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "# the embedded default\n").expect("write config.yaml");
    let copy = text
        .replace(BINARY, env!("CARGO_BIN_EXE_xdpgate-under-test"))
        .replace(CONFIG, config.to_str().expect("utf-8 path"));
    let unit = dir.path().join("xdpgate.service");
    std::fs::write(&unit, copy).expect("write the unit's copy");

    let output = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown or misspelt keys are only warnings (exit code 0), so any line
    // about the unit counts as a failure. Lines about other units on this
    // host are not the unit's problem.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("xdpgate") || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        output.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {UNIT} ({}):\n{stderr}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn the_unit_runs_the_daemon_with_four_capabilities_on_a_read_only_system() {
    let unit = parse_unit(&unit_text());
    let service = |key: &str| single(&unit, "Service", key);

    assert_eq!(
        service("ExecStart"),
        format!("{BINARY} run --config {CONFIG}")
    );
    assert_eq!(service("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(service("KillSignal"), "SIGTERM");
    assert_eq!(service("Restart"), "on-failure");
    let stop = parse_timespan(service("TimeoutStopSec"));
    assert!(
        stop > DRAIN,
        "TimeoutStopSec={stop:?} must exceed the drain (accept_grace + grace_timeout = {DRAIN:?}), \
         or systemd kills the daemon mid-drain"
    );

    // The state directory is the daemon's default state_dir.
    assert_eq!(service("StateDirectory"), "xdpgate");

    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let mut caps: Vec<&str> = service(key).split_whitespace().collect();
        caps.sort_unstable();
        let mut expected = CAPABILITIES.to_vec();
        expected.sort_unstable();
        assert_eq!(
            caps, expected,
            "{key}= has exactly the daemon's capabilities"
        );
    }
    // Root, on purpose: the bpffs pins need uid 0 or CAP_DAC_OVERRIDE.
    assert_eq!(service("User"), "root");

    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/sys/fs/bpf"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("LimitMEMLOCK", "infinity"),
    ] {
        assert_eq!(service(key), value, "[Service] {key}=");
    }
    let mut families: Vec<&str> = service("RestrictAddressFamilies")
        .split_whitespace()
        .collect();
    families.sort_unstable();
    assert_eq!(
        families,
        ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"],
        "RestrictAddressFamilies="
    );
    // It would make /sys, and with it the pins under /sys/fs/bpf, read-only.
    assert!(
        !unit.contains_key(&("Service".to_string(), "ProtectKernelTunables".to_string())),
        "ProtectKernelTunables= would make /sys/fs/bpf read-only"
    );
    assert_eq!(single(&unit, "Install", "WantedBy"), "multi-user.target");
}

#[test]
fn the_timespan_parser_reads_what_a_unit_may_write() {
    assert_eq!(parse_timespan("45s"), Duration::from_secs(45));
    assert_eq!(parse_timespan("45"), Duration::from_secs(45));
    assert_eq!(parse_timespan("1min 30s"), Duration::from_secs(90));
    assert_eq!(parse_timespan("1m30s"), Duration::from_secs(90));
}
