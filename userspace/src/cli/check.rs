//! `xdpgate check`: what the live kernel policy does with a connection
//! attempt from one address, and why, in the set names the daemon used.
use std::{io::Write as _, net::IpAddr};

use anyhow::Result;
use serde_json::json;
use xdpgate_common::{Reason, SetMask};

use super::{print_json, set_names_for, Exit, Locations};
use crate::filter::{
    pins::{Explanation, Transport},
    PinnedFilter,
};

fn mask_names(mask: SetMask, names: &[String]) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            names
                .get(bit)
                .cloned()
                .unwrap_or_else(|| format!("set#{bit}"))
        })
        .collect()
}

pub(super) fn check(
    locations: &Locations,
    address: IpAddr,
    transport: Option<Transport>,
    json: bool,
) -> Result<Exit> {
    let pinned = PinnedFilter::open(&locations.pin_dir)?;
    let explanation = pinned.explain(address, transport)?;
    let names = set_names_for(&locations.state_dir, explanation.generation);
    let member_of = explanation
        .matched
        .map(|(_, mask)| mask_names(mask, &names))
        .unwrap_or_default();
    let denied_by = mask_names(explanation.denied_by, &names);
    let verdict = explanation.port.map(|(_, _, reason)| reason);
    let dropped = verdict
        .map(Reason::is_drop)
        .unwrap_or(explanation.denied_by != 0 && explanation.armed);
    let why = verdict_reason(&explanation, &names, &denied_by);
    if json {
        print_json(&json!({
            "source": explanation.source.to_string(),
            "armed": explanation.armed,
            "generation": explanation.generation,
            "matched_prefix": explanation.matched.map(|(net, _)| net.to_string()),
            "member_of": member_of,
            "denied_by": denied_by,
            "transport": explanation.port.map(|(t, _, _)| match t {
                Transport::Tcp(p) => json!({"protocol": "tcp", "port": p}),
                Transport::Udp(p) => json!({"protocol": "udp", "port": p}),
            }),
            "action": if dropped { "drop" } else { "pass" },
            "reason": verdict.map(Reason::label),
            "why": why,
        }));
    } else {
        let mut out = format!(
            "{}: {}\n",
            explanation.source,
            match explanation.matched {
                Some((net, _)) => format!("in {} via {net}", member_of.join(", ")),
                None => "in no set".to_string(),
            }
        );
        out.push_str(&format!(
            "verdict: {}{} ({why})\n",
            if dropped { "DROP" } else { "PASS" },
            verdict
                .map(|r| format!(" [{}]", r.label()))
                .unwrap_or_default()
        ));
        let _ = std::io::stdout().write_all(out.as_bytes());
    }
    Ok(if dropped { Exit::Dropped } else { Exit::Ok })
}

/// Why the verdict is what it is, in one sentence.
fn verdict_reason(explanation: &Explanation, names: &[String], denied_by: &[String]) -> String {
    match explanation.port {
        None if !explanation.armed => "the filter is not armed: it passes everything".to_string(),
        None if !denied_by.is_empty() => format!("it is in denied set(s) {}", denied_by.join(", ")),
        None => "no port given (--tcp or --udp); membership shown above".to_string(),
        Some((t, bound, reason)) => {
            let bound_names = mask_names(bound, names);
            match reason {
                Reason::PassUnarmed => "the filter is not armed: it passes everything".to_string(),
                Reason::DropDeny => format!("it is in denied set(s) {}", denied_by.join(", ")),
                Reason::PassUnboundPort => {
                    format!("{} is not protected: no rule binds it", transport_text(t))
                }
                Reason::PassMember => format!(
                    "{} is allowed from {}, and the source is a member",
                    transport_text(t),
                    bound_names.join(", ")
                ),
                _ => format!(
                    "{} is allowed only from {}, and the source is in none of them",
                    transport_text(t),
                    bound_names.join(", ")
                ),
            }
        }
    }
}

fn transport_text(t: Transport) -> String {
    match t {
        Transport::Tcp(p) => format!("a TCP SYN to port {p}"),
        Transport::Udp(p) => format!("a UDP datagram to port {p}"),
    }
}
