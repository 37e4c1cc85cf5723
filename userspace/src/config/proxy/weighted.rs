//! Weighted services and sticky cookies under `proxy.services`: a service
//! written with `weighted:` spreads requests over other services by weight
//! (Traefik's `TraefikService` `weighted`), and `sticky: { cookie: ... }` on
//! any service keeps a client on one endpoint or member (Traefik's
//! `sticky.cookie`). Members are checked once every service is read: each
//! names a service (or is a literal `host:port`), not every weight is 0, and
//! no weighted service reaches itself through its members.
use std::collections::{BTreeMap, BTreeSet};

use super::{entrypoints::count, routes::Services, targets::target, unknown, Place};
use crate::{
    config::{
        values::{boolean, suggest},
        yaml::Val,
        ConfigError,
    },
    proxy::{
        sticky::valid_cookie_name, SameSite, ServiceConfig, StickyConfig, WeightedMember,
        WeightedServiceConfig,
    },
};

/// Traefik's default member weight.
const DEFAULT_WEIGHT: usize = 1;
const MAX_WEIGHT: usize = 1_000_000;

/// A weighted service as read, with where each member is written.
pub(super) struct WeightedRead {
    pub config: WeightedServiceConfig,
    members: Vec<Place>,
}

pub(super) fn read_weighted(name: &str, v: Val, path: &str) -> Result<WeightedRead, ConfigError> {
    let table = v.table(path, &["weighted", "sticky"])?;
    let mut read = WeightedRead {
        config: WeightedServiceConfig {
            name: name.to_string(),
            members: Vec::new(),
            sticky: None,
        },
        members: Vec::new(),
    };
    if let Some(v) = table.get("sticky") {
        read.config.sticky = Some(read_sticky(name, v, &table.key_path("sticky"))?);
    }
    let list_path = table.key_path("weighted");
    let Some(list) = table.get("weighted") else {
        return Err(v.error(path, "`weighted` is missing"));
    };
    let example = "[{ service: v1, weight: 90 }, { service: v2, weight: 10 }]";
    for (path, item) in list.list(&list_path, example)? {
        let member = item.table(&path, &["service", "weight"])?;
        let Some(service) = member.get("service") else {
            return Err(item.error(&path, "this member has no `service`"));
        };
        let service_path = member.key_path("service");
        let service_name = service
            .text(&service_path, "a service name or host:port")?
            .trim();
        if read
            .config
            .members
            .iter()
            .any(|m| m.service == service_name)
        {
            return Err(service.error(
                &service_path,
                format!("service `{service_name}` is listed twice in `{name}`; give it one weight"),
            ));
        }
        let weight = match member.get("weight") {
            Some(v) => count(v, &member.key_path("weight"), 0, MAX_WEIGHT)?,
            None => DEFAULT_WEIGHT,
        };
        read.config.members.push(WeightedMember {
            service: service_name.to_string(),
            weight: weight as u32,
        });
        read.members.push(Place::of(service, &service_path));
    }
    if read.config.members.iter().all(|m| m.weight == 0) {
        let at = Place::of(list, &list_path);
        return Err(at.error(format!(
            "weighted service `{name}` has no member with a weight above 0: it could send \
             requests nowhere; give at least one member a weight"
        )));
    }
    Ok(read)
}

/// Resolves every member against the services read (a literal `host:port`
/// joins them), refuses cycles, and adds the weighted services to `services`.
pub(super) fn check_weighted(
    reads: Vec<WeightedRead>,
    services: &mut Services,
) -> Result<(), ConfigError> {
    let names: BTreeSet<String> = reads.iter().map(|r| r.config.name.clone()).collect();
    let mut places: BTreeMap<String, Vec<Place>> = BTreeMap::new();
    for mut read in reads {
        for (member, place) in read.config.members.iter_mut().zip(&read.members) {
            if names.contains(&member.service) || services.plain.contains_key(&member.service) {
                continue;
            }
            if !member.service.contains(':') {
                let known = services
                    .plain
                    .keys()
                    .chain(names.iter())
                    .filter(|k| !k.contains(':'));
                return Err(place.error(unknown(
                    "service",
                    &member.service,
                    known.map(String::as_str),
                    "it is neither a name under proxy.services nor a host:port",
                )));
            }
            let address = target(&member.service).map_err(|message| place.error(message))?;
            services
                .plain
                .entry(address.clone())
                .or_insert_with(|| ServiceConfig::for_target(&address));
            member.service = address;
        }
        places.insert(read.config.name.clone(), read.members);
        services
            .weighted
            .insert(read.config.name.clone(), read.config);
    }
    check_cycles(&services.weighted, &places)
}

/// A weighted service that reaches itself through its members would never
/// reach a plain service. The error points at the member closing the cycle.
fn check_cycles(
    weighted: &BTreeMap<String, WeightedServiceConfig>,
    places: &BTreeMap<String, Vec<Place>>,
) -> Result<(), ConfigError> {
    for start in weighted.keys() {
        // Depth first from each weighted service, keeping the trail.
        let mut stack: Vec<Vec<&str>> = vec![vec![start.as_str()]];
        while let Some(trail) = stack.pop() {
            let name = trail[trail.len() - 1];
            for (i, member) in weighted[name].members.iter().enumerate() {
                if !weighted.contains_key(&member.service) {
                    continue;
                }
                if member.service == *start {
                    let cycle = format!("{} -> {start}", trail.join(" -> "));
                    let at = &places[name][i];
                    return Err(at.error(format!(
                        "weighted service `{start}` reaches itself through its members \
                         ({cycle}); its requests would never reach a plain service"
                    )));
                }
                if !trail.contains(&member.service.as_str()) {
                    let mut next = trail.clone();
                    next.push(member.service.as_str());
                    stack.push(next);
                }
            }
        }
    }
    Ok(())
}

/// `sticky: { cookie: { name, secure, http_only, same_site, max_age, path } }`.
pub(super) fn read_sticky(service: &str, v: Val, path: &str) -> Result<StickyConfig, ConfigError> {
    let table = v.table(path, &["cookie"])?;
    let Some(cookie) = table.get("cookie") else {
        return Err(v.error(
            path,
            "`sticky` needs `cookie`, e.g. `sticky: { cookie: { name: lb, secure: true } }`",
        ));
    };
    let cookie_path = table.key_path("cookie");
    let fields = cookie.table(
        &cookie_path,
        &[
            "name",
            "secure",
            "http_only",
            "same_site",
            "max_age",
            "path",
        ],
    )?;
    let mut sticky = StickyConfig::for_service(service);
    let c = &mut sticky.cookie;
    if let Some(v) = fields.get("name") {
        let path = fields.key_path("name");
        let name = v.text(&path, "a cookie name")?.trim();
        if !valid_cookie_name(name) {
            return Err(v.error(
                &path,
                format!(
                    "`{name}` cannot be a cookie name: use letters, digits and `_-.!#$%&'*+^`|~`, \
                     no spaces, `=`, `;` or quotes"
                ),
            ));
        }
        c.name = name.to_string();
    }
    if let Some(v) = fields.get("secure") {
        c.secure = boolean(v, &fields.key_path("secure"))?;
    }
    if let Some(v) = fields.get("http_only") {
        c.http_only = boolean(v, &fields.key_path("http_only"))?;
    }
    if let Some(v) = fields.get("same_site") {
        let path = fields.key_path("same_site");
        let text = v.text(&path, "none, lax or strict")?.trim();
        c.same_site = Some(match text.to_ascii_lowercase().as_str() {
            "none" => SameSite::None,
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            _ => {
                return Err(v.error(
                    &path,
                    format!(
                        "`{text}` is not a SameSite value: use none, lax or strict{}",
                        suggest(text, &["none", "lax", "strict"])
                    ),
                ))
            }
        });
        if c.same_site == Some(SameSite::None) && !c.secure {
            return Err(v.error(
                &path,
                "browsers drop a `SameSite=None` cookie that is not `Secure`: set \
                 `secure: true` as well",
            ));
        }
    }
    if let Some(v) = fields.get("max_age") {
        let seconds = count(v, &fields.key_path("max_age"), 1, 400 * 24 * 3600)?;
        c.max_age = Some(seconds as u64);
    }
    if let Some(v) = fields.get("path") {
        let path = fields.key_path("path");
        let text = v.text(&path, "a path like /")?.trim();
        if !text.starts_with('/') || text.contains(|ch: char| ch == ';' || ch.is_control()) {
            return Err(v.error(
                &path,
                format!("`{text}` is not a cookie path: start with `/`, no `;`"),
            ));
        }
        c.path = text.to_string();
    }
    Ok(sticky)
}

/// Whether `v` is written as a weighted service (has a `weighted` key).
pub(super) fn is_weighted(v: Val) -> bool {
    match &v.node.value {
        crate::config::yaml::Value::Map(entries) => entries.iter().any(|e| e.key == "weighted"),
        _ => false,
    }
}
