//! Weighted services: which service a routed request goes to when its route
//! names a weighted one (canaries, Gateway API weighted backends). A smooth
//! weighted round robin (nginx's) spreads requests in the configured
//! proportion, interleaved and deterministic: 90/10 gives exactly 9 of every
//! 10 requests to the first member. With `sticky`, a client holding the
//! cookie of a member still in the service keeps going there; anyone else is
//! balanced and given the cookie. Members may themselves be weighted (the
//! config reader refuses cycles); the walk ends at a plain service.
//!
//! Not here: choosing an endpoint inside the chosen service (`upstream`).
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use hyper::header::{HeaderMap, HeaderValue};

use super::{config::WeightedServiceConfig, sticky};

/// The nesting the walk follows at most; the config reader refuses cycles,
/// this only bounds a configuration built some other way.
const MAX_DEPTH: usize = 16;

/// One balancer per weighted service of the configuration.
#[derive(Debug, Default)]
pub struct Balancers {
    weighted: HashMap<String, Weighted>,
}

/// Where a request goes: a plain service, and the cookies to set on its
/// response for the weighted services it passed through.
#[derive(Debug, PartialEq)]
pub struct Choice {
    pub service: Arc<str>,
    pub cookies: Vec<HeaderValue>,
}

impl Balancers {
    pub fn new(weighted: &BTreeMap<String, WeightedServiceConfig>) -> Balancers {
        Balancers {
            weighted: weighted
                .iter()
                .map(|(name, config)| (name.clone(), Weighted::new(config.clone())))
                .collect(),
        }
    }

    /// The plain service for a request to `service` with `headers`;
    /// `service` itself when it is not weighted.
    pub fn choose(&self, service: &Arc<str>, headers: &HeaderMap) -> Choice {
        let mut choice = Choice {
            service: service.clone(),
            cookies: Vec::new(),
        };
        for _ in 0..MAX_DEPTH {
            let Some(weighted) = self.weighted.get(&*choice.service) else {
                break;
            };
            let (member, cookie) = weighted.choose(headers);
            choice.cookies.extend(cookie);
            choice.service = member.into();
        }
        choice
    }
}

#[derive(Debug)]
struct Weighted {
    config: WeightedServiceConfig,
    /// Each member's sticky token, in member order.
    tokens: Vec<String>,
    /// The smooth round robin's current weights, in member order.
    current: Mutex<Vec<i64>>,
}

impl Weighted {
    fn new(config: WeightedServiceConfig) -> Weighted {
        let tokens = config
            .members
            .iter()
            .map(|m| sticky::member_token(&config.name, &m.service))
            .collect();
        let current = Mutex::new(vec![0; config.members.len()]);
        Weighted {
            config,
            tokens,
            current,
        }
    }

    /// The member for this request, and the cookie to set, if any.
    fn choose(&self, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
        let Some(sticky) = &self.config.sticky else {
            return (self.next_member(), None);
        };
        let sent = sticky::token_in(headers, &sticky.cookie.name);
        let held = sent.as_deref().and_then(|token| {
            self.tokens
                .iter()
                .position(|t| t == token)
                .filter(|&i| self.config.members[i].weight > 0)
        });
        if let Some(index) = held {
            return (self.config.members[index].service.clone(), None);
        }
        let member = self.next_member();
        let index = self
            .config
            .members
            .iter()
            .position(|m| m.service == member)
            .unwrap_or(0);
        let cookie = sticky::set_cookie(&sticky.cookie, &self.tokens[index]);
        (member, cookie)
    }

    /// nginx's smooth weighted round robin: every member gains its weight,
    /// the one with the most goes and pays back the total.
    fn next_member(&self) -> String {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let members = &self.config.members;
        let total: i64 = members.iter().map(|m| i64::from(m.weight)).sum();
        let mut best: Option<usize> = None;
        for (i, member) in members.iter().enumerate() {
            if member.weight == 0 {
                continue;
            }
            current[i] += i64::from(member.weight);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let Some(best) = best else {
            // All weights zero: the config reader refuses it; go to the first.
            return members
                .first()
                .map(|m| m.service.clone())
                .unwrap_or_default();
        };
        current[best] -= total;
        members[best].service.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::config::{StickyConfig, WeightedMember};
    use hyper::header;

    fn weighted(name: &str, members: &[(&str, u32)], sticky: bool) -> WeightedServiceConfig {
        WeightedServiceConfig {
            name: name.to_string(),
            members: members
                .iter()
                .map(|(service, weight)| WeightedMember {
                    service: service.to_string(),
                    weight: *weight,
                })
                .collect(),
            sticky: sticky.then(|| StickyConfig::for_service(name)),
        }
    }

    fn balancers(list: &[WeightedServiceConfig]) -> Balancers {
        Balancers::new(&list.iter().map(|w| (w.name.clone(), w.clone())).collect())
    }

    #[test]
    fn smooth_round_robin_interleaves_in_proportion() {
        let b = balancers(&[weighted("canary", &[("a", 5), ("b", 1), ("c", 1)], false)]);
        let none = HeaderMap::new();
        let seq: Vec<String> = (0..7)
            .map(|_| b.choose(&Arc::from("canary"), &none).service.to_string())
            .collect();
        // nginx's documented sequence for 5/1/1.
        assert_eq!(seq, ["a", "a", "b", "a", "c", "a", "a"]);
        let b = balancers(&[weighted(
            "canary",
            &[("v1", 90), ("v2", 10), ("off", 0)],
            false,
        )]);
        let mut counts = BTreeMap::new();
        for _ in 0..2000 {
            *counts
                .entry(b.choose(&Arc::from("canary"), &none).service.to_string())
                .or_insert(0) += 1;
        }
        assert_eq!(
            counts,
            BTreeMap::from([("v1".into(), 1800), ("v2".into(), 200)])
        );
    }

    #[test]
    fn nested_weighted_services_end_at_a_plain_one() {
        let b = balancers(&[
            weighted("outer", &[("inner", 1)], false),
            weighted("inner", &[("plain", 1)], false),
        ]);
        assert_eq!(
            b.choose(&Arc::from("outer"), &HeaderMap::new())
                .service
                .as_ref(),
            "plain"
        );
        assert_eq!(
            b.choose(&Arc::from("plain"), &HeaderMap::new())
                .service
                .as_ref(),
            "plain"
        );
    }

    #[test]
    fn a_sticky_member_is_kept_and_an_unknown_cookie_is_replaced() {
        let b = balancers(&[weighted("canary", &[("v1", 1), ("v2", 1)], true)]);
        let first = b.choose(&Arc::from("canary"), &HeaderMap::new());
        assert_eq!(first.cookies.len(), 1, "a new client gets the cookie");
        let cookie = first.cookies[0].to_str().unwrap();
        let pair = cookie.split(';').next().unwrap().to_string();
        let mut with = HeaderMap::new();
        with.insert(header::COOKIE, HeaderValue::from_str(&pair).unwrap());
        for _ in 0..10 {
            let again = b.choose(&Arc::from("canary"), &with);
            assert_eq!(again.service, first.service, "held on the member");
            assert!(again.cookies.is_empty(), "no new cookie while it holds");
        }
        let name = pair.split('=').next().unwrap();
        let mut forged = HeaderMap::new();
        let text = format!("{name}=00000000deadbeef");
        forged.insert(header::COOKIE, HeaderValue::from_str(&text).unwrap());
        let replaced = b.choose(&Arc::from("canary"), &forged);
        assert_eq!(
            replaced.cookies.len(),
            1,
            "a cookie naming no member is replaced"
        );
    }
}
