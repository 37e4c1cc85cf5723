//! `xdpgate sets`: the sets as the kernel holds them in the active policy
//! (their prefixes and the ports bound to them), read back through the pins.
use std::io::Write as _;

use anyhow::{bail, Result};
use serde_json::json;
use xdpgate_common::SetMask;

use super::{print_json, set_names_for, Exit, Locations};
use crate::filter::PinnedFilter;

pub(super) fn sets(locations: &Locations, only: Option<&str>, json: bool) -> Result<Exit> {
    let pinned = PinnedFilter::open(&locations.pin_dir)?;
    let control = pinned.control()?;
    let slot = control.active_slot();
    let names = set_names_for(&locations.state_dir, control.generation);
    if names.is_empty() {
        tracing::warn!(
            "no daemon status for generation {}; sets are shown by bit number",
            control.generation
        );
    }
    let prefixes = pinned.prefixes(slot)?;
    let (tcp, udp) = pinned.bound_ports(slot)?;
    let bits = prefixes.iter().fold(0, |acc, (_, m)| acc | m)
        | tcp.values().fold(0, |acc, m| acc | m)
        | udp.values().fold(0, |acc, m| acc | m);
    let mut listed = Vec::new();
    for bit in (0..64).filter(|b| bits & (1u64 << b) != 0) {
        let name = names
            .get(bit)
            .cloned()
            .unwrap_or_else(|| format!("set#{bit}"));
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let members: Vec<String> = prefixes
            .iter()
            .filter(|(_, m)| m & (1u64 << bit) != 0)
            .map(|(net, _)| net.to_string())
            .collect();
        let ports = |map: &std::collections::BTreeMap<u16, SetMask>| {
            map.iter()
                .filter(|(_, m)| *m & (1u64 << bit) != 0)
                .map(|(p, _)| *p)
                .collect::<Vec<u16>>()
        };
        listed.push((name, members, ports(&tcp), ports(&udp)));
    }
    if let Some(only) = only {
        if listed.is_empty() {
            bail!("the kernel's active policy has no set named `{only}`");
        }
    }
    if json {
        print_json(&json!({
            "generation": control.generation,
            "sets": listed.iter().map(|(name, members, tcp, udp)| json!({
                "name": name, "prefixes": members, "tcp_ports": tcp, "udp_ports": udp,
            })).collect::<Vec<_>>(),
        }));
    } else {
        let mut out = format!("policy generation {}\n", control.generation);
        for (name, members, tcp, udp) in &listed {
            out.push_str(&format!(
                "{name}: {} prefixes; tcp {}; udp {}\n",
                members.len(),
                ports_text(tcp),
                ports_text(udp)
            ));
            for member in members {
                out.push_str(&format!("  {member}\n"));
            }
        }
        let _ = std::io::stdout().write_all(out.as_bytes());
    }
    Ok(Exit::Ok)
}

/// `80,443,30000-32767`: consecutive ports folded into ranges.
fn ports_text(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "-".to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut start = ports[0];
    let mut end = ports[0];
    for &port in &ports[1..] {
        if port == end.wrapping_add(1) {
            end = port;
            continue;
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        start = port;
        end = port;
    }
    parts.push(if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    });
    parts.join(",")
}
