//! Checks the policy a config describes with the policy compiler itself, so
//! a file is refused for exactly the reasons the daemon would refuse it later,
//! and points each compiler error back at the key and line at fault.
//!
//! Set contents are not known yet (files and Cloudflare's API are read by the
//! daemon), so every set stands in with one placeholder prefix: whatever the
//! compiler says then is about the shape of the policy, not about its data.
use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::{Config, ConfigError, FilterConfig};
use crate::policy::{compile, PolicyError, Tunnels};

/// TEST-NET-1 (RFC 5737): any non-empty content will do.
const PLACEHOLDER: IpNet = IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24));

/// Compiles the policy with placeholder contents; `lines` maps key paths to
/// lines (see [`super::yaml::index_lines`]).
pub(super) fn check_policy(
    config: &Config,
    lines: &BTreeMap<String, usize>,
) -> Result<(), ConfigError> {
    let contents: BTreeMap<String, Vec<IpNet>> = config
        .filter
        .sets
        .iter()
        .map(|set| (set.name.clone(), vec![PLACEHOLDER]))
        .collect();
    match compile(&config.policy_spec(&contents)) {
        Ok(_) => Ok(()),
        Err(error) => {
            let (key, message) = locate(&error, &config.filter, lines);
            let line = lines.get(&key).copied();
            Err(ConfigError::new(&key, line, message))
        }
    }
}

/// The key path of the culprit of `error` and what to say about it there.
fn locate(
    error: &PolicyError,
    filter: &FilterConfig,
    lines: &BTreeMap<String, usize>,
) -> (String, String) {
    // The compiler names allow rules "allow rule N", counting from 1.
    let rule = |place: &str| -> Option<usize> {
        place
            .strip_prefix("allow rule ")?
            .parse::<usize>()
            .ok()?
            .checked_sub(1)
            .filter(|i| *i < filter.allow.len())
    };
    let from_entry = |i: usize, set: &str| match filter.allow[i].from.iter().position(|s| s == set)
    {
        Some(j) => format!("filter.allow[{i}].from[{j}]"),
        None => format!("filter.allow[{i}].from"),
    };
    // The first range of rule `i` that `bad` picks out, tcp before udp as the
    // compiler checks them.
    let port_entry = |i: usize, bad: &dyn Fn(&crate::policy::PortRange) -> bool| {
        let binding = &filter.allow[i];
        let found = [("tcp", &binding.tcp), ("udp", &binding.udp)]
            .into_iter()
            .find_map(|(proto, ranges)| ranges.iter().position(bad).map(|j| (proto, j)));
        match found {
            Some((proto, j)) => format!("filter.allow[{i}].{proto}[{j}]"),
            None => format!("filter.allow[{i}]"),
        }
    };

    let tunnel_entry = |set: &str| match &filter.tunnels {
        Tunnels::From(sets) => match sets.iter().position(|s| s == set) {
            Some(j) => format!("filter.tunnels.from[{j}]"),
            None => "filter.tunnels".to_string(),
        },
        Tunnels::Pass => "filter.tunnels".to_string(),
    };

    match error {
        PolicyError::UnknownSet {
            set,
            place,
            suggestion,
        } => {
            let key = match rule(place) {
                Some(i) => from_entry(i, set),
                None if place == "tunnels" => tunnel_entry(set),
                None => match filter.deny.iter().position(|s| s == set) {
                    Some(j) => format!("filter.deny[{j}]"),
                    None => "filter".to_string(),
                },
            };
            let hint = match suggestion {
                Some(near) => format!(" (did you mean `{near}`?)"),
                None => ": it is not defined under filter.sets".to_string(),
            };
            (key, format!("unknown set `{set}`{hint}"))
        }
        PolicyError::PortZero { place } => match rule(place) {
            Some(i) => (
                port_entry(i, &|r| r.first == 0),
                "port 0 is not a destination port a connection can use".to_string(),
            ),
            None => ("filter.allow".to_string(), error.to_string()),
        },
        PolicyError::BackwardsRange { place, range } => match rule(place) {
            Some(i) => (
                port_entry(i, &|r| r == range),
                format!(
                    "port range {}-{} runs backwards; write {}-{}",
                    range.first, range.last, range.last, range.first
                ),
            ),
            None => ("filter.allow".to_string(), error.to_string()),
        },
        PolicyError::NoPorts { place } => match rule(place) {
            Some(i) => (
                format!("filter.allow[{i}]"),
                "this rule lists no tcp or udp ports".to_string(),
            ),
            None => ("filter.allow".to_string(), error.to_string()),
        },
        PolicyError::NoSets { place } => match rule(place) {
            // At `from: []` if it is written, else at the rule.
            Some(i) => (
                Some(format!("filter.allow[{i}].from"))
                    .filter(|key| lines.contains_key(key))
                    .unwrap_or_else(|| format!("filter.allow[{i}]")),
                "this rule allows no set (`from` is empty): it would drop every connection \
                 attempt to its ports"
                    .to_string(),
            ),
            None => ("filter.allow".to_string(), error.to_string()),
        },
        PolicyError::DeniedAndAllowed { set, place } if place == "tunnels" => (
            tunnel_entry(set),
            format!(
                "set `{set}` is also in filter.deny; the deny always wins, so it can never send \
                 tunnels: remove one of them"
            ),
        ),
        PolicyError::DeniedAndAllowed { set, place } => match rule(place) {
            Some(i) => (
                from_entry(i, set),
                format!(
                    "set `{set}` is also in filter.deny; the deny always wins, so this allow can \
                     never match: remove one of them"
                ),
            ),
            None => ("filter.allow".to_string(), error.to_string()),
        },
        PolicyError::EmptyBoundSet { set, place } => match rule(place) {
            Some(i) => (from_entry(i, set), error.to_string()),
            None => ("filter.allow".to_string(), error.to_string()),
        },
        PolicyError::TooManySets { .. } => ("filter.sets".to_string(), error.to_string()),
        PolicyError::EmptyPolicy => (
            "filter".to_string(),
            "the policy binds no port and denies no set: there is nothing to enforce \
             (add an `allow` rule)"
                .to_string(),
        ),
    }
}
