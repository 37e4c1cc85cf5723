//! `ip_allow`: the client IP (as the forwarded-header logic settled it) must
//! be in one of the named filter sets, as they are loaded now, or in one of
//! the listed CIDRs; anyone else gets 403. A set that has not loaded yet
//! admits nobody: the allowlist fails closed.
use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use hyper::{Request, StatusCode};

use super::{client_source, stack::Middleware, ClientSource, IpAllowConfig, Sets};
use crate::proxy::{forwarded::TrustedPeers, request::ProxyError, upstream::ProxyBody};

pub struct IpAllow {
    sets: Vec<String>,
    cidrs: TrustedPeers,
    /// Which address is judged (Traefik's `ipStrategy`).
    source: ClientSource,
    /// The filter sets as the proxy last received them.
    loaded: Arc<ArcSwap<Sets>>,
}

impl IpAllow {
    pub fn new(config: &IpAllowConfig, loaded: Arc<ArcSwap<Sets>>) -> Self {
        IpAllow {
            sets: config.sets.clone(),
            cidrs: TrustedPeers::new(config.cidrs.iter().copied()),
            source: config.source.clone(),
            loaded,
        }
    }

    pub fn allows(&self, client: IpAddr, sets: &Sets) -> bool {
        self.cidrs.contains(client)
            || self
                .sets
                .iter()
                .filter_map(|name| sets.get(name))
                .any(|set| set.contains(client))
    }
}

impl Middleware for IpAllow {
    async fn request(&self, request: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        // No address found by the source's strategy: nobody to admit.
        let client = client_source::resolve(&self.source, request)?;
        match client {
            Some(client) if self.allows(client, &self.loaded.load()) => Ok(()),
            _ => Err(ProxyError::policy(
                StatusCode::FORBIDDEN,
                "ip_allow",
                "forbidden",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_as_loaded_and_cidrs_admit_the_rest_do_not() {
        let allow = IpAllow::new(
            &IpAllowConfig {
                sets: vec!["admins".into(), "missing".into()],
                cidrs: vec!["192.0.2.0/24".parse().unwrap()],
                source: Default::default(),
            },
            Default::default(),
        );
        let mut sets = Sets::new();
        sets.insert(
            "admins".into(),
            TrustedPeers::new(["2001:db8::/64".parse().unwrap()]),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(allow.allows(ip("192.0.2.9"), &sets));
        assert!(allow.allows(ip("::ffff:192.0.2.9"), &sets), "mapped v4");
        assert!(allow.allows(ip("2001:db8::5"), &sets));
        assert!(!allow.allows(ip("2001:db8:1::5"), &sets));
        assert!(!allow.allows(ip("198.51.100.1"), &sets));
        // The set empties (or never loaded): its members are out.
        assert!(!allow.allows(ip("2001:db8::5"), &Sets::new()));
    }
}
