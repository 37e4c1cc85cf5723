//! `xdpgate status`: the kernel's state through the pins and the daemon's
//! last status file, with every problem that makes the node degraded.
use std::{io::Write as _, path::Path, time::Duration};

use anyhow::Result;
use serde_json::json;

use super::{print_json, Exit, Locations};
use xdpgate_common::Control;

use crate::{
    filter::{self, pins::LinkState, PinnedFilter},
    status::{readiness, unix_now, DaemonStatus},
};

/// The daemon's last status, if it left one, and whether it still runs.
pub(super) fn daemon_status(state_dir: &Path) -> Option<(DaemonStatus, bool)> {
    let status = DaemonStatus::read_from(state_dir).ok()?;
    let running = process_is_xdpgate(status.pid);
    Some((status, running))
}

/// Whether `pid` is a live xdpgate process (not another program that reused
/// the pid, and not a zombie waiting to be reaped).
fn process_is_xdpgate(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": comm may contain spaces, so split at the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
    let state = tail.split_whitespace().next().unwrap_or("");
    comm.starts_with("xdpgate") && state != "Z" && state != "X"
}

fn ago(unix: u64) -> String {
    if unix == 0 {
        return "never".to_string();
    }
    let secs = unix_now().saturating_sub(unix);
    let text = humantime::format_duration(Duration::from_secs(secs)).to_string();
    let first = text.split(' ').take(2).collect::<Vec<_>>().join(" ");
    format!("{first} ago")
}

/// `xdpgate status`: what is in force, what the daemon last said, and
/// every problem found, as text or JSON. Degraded when there is a problem.
pub(super) fn status(locations: &Locations, json: bool) -> Result<Exit> {
    let pinned = PinnedFilter::open(&locations.pin_dir)?;
    let control = pinned.control()?;
    let links = pinned.links();
    let daemon = daemon_status(&locations.state_dir);
    let problems = problems(locations, &control, &links, daemon.as_ref());
    let exit = if problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Degraded
    };
    let warnings = tunnel_warnings(&links, daemon.as_ref().map(|(s, _)| s));
    let view = View {
        control: &control,
        links: &links,
        daemon: daemon.as_ref(),
        problems: &problems,
        warnings: &warnings,
    };
    if json {
        print_json(&view.json());
    } else {
        let _ = std::io::stdout().write_all(view.text().as_bytes());
    }
    Ok(exit)
}

/// Everything `status` reports on.
struct View<'a> {
    control: &'a Control,
    links: &'a [LinkState],
    daemon: Option<&'a (DaemonStatus, bool)>,
    problems: &'a [String],
    warnings: &'a [String],
}

/// What makes the node degraded: no daemon, or one that stopped; a filter
/// not armed or not attached; refused updates; Ingress problems.
fn problems(
    locations: &Locations,
    control: &Control,
    links: &[LinkState],
    daemon: Option<&(DaemonStatus, bool)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match &daemon {
        None => problems.push(format!(
            "no daemon status in {} (the daemon never ran with this state directory)",
            locations.state_dir.display()
        )),
        Some((status, false)) => problems.push(format!(
            "the daemon (pid {}) is not running; the filter stays in force but sets are not refreshed",
            status.pid
        )),
        Some(_) => {}
    }
    match &daemon {
        // A running daemon's readiness is exactly what its /readyz says.
        Some((status, true)) => {
            let live: Vec<String> = links
                .iter()
                .filter(|l| l.live)
                .map(|l| l.interface.clone())
                .collect();
            if let Err(reasons) = readiness(status, control.armed(), &live) {
                problems.extend(reasons);
            }
        }
        _ if !control.armed() => {
            problems.push("the filter is not armed: it passes everything".to_string())
        }
        _ => {}
    }
    if links.is_empty() {
        problems.push("the filter is not attached to any interface".to_string());
    }
    for link in links.iter().filter(|l| !l.live) {
        problems.push(format!(
            "the link on {} is no longer attached",
            link.interface
        ));
    }
    if let Some((status, _)) = &daemon {
        for interface in &status.interfaces {
            if let Some(wanted) = &interface.wanted_mode {
                problems.push(crate::status::mode_differs(
                    &interface.name,
                    &interface.mode,
                    wanted,
                ));
            }
        }
        if let Some(error) = &status.policy.last_error {
            problems.push(format!("the last policy update was refused: {error}"));
        }
        if let Some(error) = &status.reloads.last_error {
            problems.push(format!(
                "the last config reload was refused, the previous config runs: {error}"
            ));
        }
        if let Some(ingress) = &status.ingress {
            for problem in &ingress.problems {
                problems.push(format!("ingress: {problem}"));
            }
            for conflict in &ingress.conflicts {
                problems.push(format!("ingress conflict: {conflict}"));
            }
        }
    }
    problems
}

impl View<'_> {
    fn json(&self) -> serde_json::Value {
        let (control, links, daemon) = (self.control, self.links, self.daemon);
        json!({
            "healthy": self.problems.is_empty(),
            "problems": self.problems,
            "warnings": self.warnings,
            "kernel": {
                "armed": control.armed(),
                "generation": control.generation,
                "active_slot": control.active_slot(),
                "abi_version": control.abi_version,
            },
            "links": links.iter().map(|l| json!({
                "interface": l.interface, "mode": l.mode.label(), "live": l.live, "program_id": l.program_id,
            })).collect::<Vec<_>>(),
            "daemon": daemon.map(|(s, running)| json!({"running": running, "status": s})),
        })
    }

    fn text(&self) -> String {
        let (control, links, daemon) = (self.control, self.links, self.daemon);
        let mut out = String::new();
        match daemon {
            Some((s, running)) => out.push_str(&format!(
                "daemon: xdpgate {}, pid {} {}, started {}, config {}\n",
                s.version,
                s.pid,
                if *running { "running" } else { "NOT RUNNING" },
                ago(s.started_at),
                s.config_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "embedded default".into()),
            )),
            None => out.push_str("daemon: no status found\n"),
        }
        out.push_str(&format!(
            "filter: {}, policy generation {}{}\n",
            if control.armed() {
                "armed"
            } else {
                "NOT ARMED"
            },
            control.generation,
            daemon
                .as_ref()
                .map(|(s, _)| format!(" (applied {})", ago(s.policy.applied_at)))
                .unwrap_or_default()
        ));
        out.push_str("interfaces:\n");
        for link in links {
            out.push_str(&format!(
                "  {:<16} {:<8} {}\n",
                link.interface,
                link.mode.label(),
                if link.live { "attached" } else { "DETACHED" }
            ));
        }
        if let Some((s, _)) = &daemon {
            out.push_str("sets:\n");
            for set in &s.sets {
                out.push_str(&format!(
                    "  {:<16} {:>7} prefixes  {}\n",
                    set.name,
                    set.size,
                    if set.loaded { "loaded" } else { "NOT LOADED" }
                ));
                for source in &set.sources {
                    out.push_str(&format!(
                    "      {:<10} {:<40} {} entries from {}, obtained {}, last refresh {}: {}\n",
                    source.kind,
                    source.origin,
                    source.entries,
                    source.from,
                    ago(source.obtained_at),
                    ago(source.last_attempt_at),
                    source.last_result
                ));
                }
            }
            out.push_str(&format!(
                "reloads: {} ok, {} refused{}\n",
                s.reloads.ok,
                s.reloads.failed,
                s.reloads
                    .last_error
                    .as_ref()
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            ));
        }
        for problem in self.problems {
            out.push_str(&format!("problem: {problem}\n"));
        }
        for warning in self.warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        out
    }
}

/// Warnings about tunnel devices beside the interfaces the filter is
/// attached to. They do not make the status degraded: a tunnel device may be
/// exactly what the operator wants (flannel's VXLAN, Calico's IPIP).
fn tunnel_warnings(
    links: &[filter::pins::LinkState],
    daemon: Option<&DaemonStatus>,
) -> Vec<String> {
    let interfaces: Vec<String> = links
        .iter()
        .filter(|l| l.live)
        .map(|l| l.interface.clone())
        .collect();
    if interfaces.is_empty() {
        return Vec::new();
    }
    let tunnels = daemon
        .map(|s| s.policy.tunnels.as_str())
        .filter(|t| !t.is_empty())
        .unwrap_or("pass");
    match crate::status::tunnel_devices() {
        Ok(devices) => crate::status::tunnel_warnings(&devices, &interfaces, tunnels),
        Err(why) => vec![format!("tunnel devices not checked: {why}")],
    }
}
