//! Which address a `rate_limit` or `ip_allow` judges ([`ClientSource`]).
//! The settled client and the TCP peer come from the connection; the two
//! `X-Forwarded-For` strategies read the header as Traefik's middlewares
//! see it: what a trusted peer sent, nothing from any other peer. The
//! forwarded-header logic has already appended the peer to the header by
//! the time middlewares run, so that last entry is left out again.
use std::net::IpAddr;

use hyper::{header::HeaderMap, Request};

use super::ClientSource;
use crate::proxy::{
    forwarded::TrustedPeers,
    request::{ClientIp, PeerIp, ProxyError},
};

/// The address a request is judged by. `Ok(None)`: the strategy finds none
/// (the header is too short, or every entry is excluded), as Traefik's
/// empty source. `Err`: the request did not pass the forwarded-header step,
/// which always runs before a route's stack.
pub fn resolve<B>(
    source: &ClientSource,
    request: &Request<B>,
) -> Result<Option<IpAddr>, ProxyError> {
    let extensions = request.extensions();
    let (Some(&ClientIp(client)), Some(&PeerIp(peer))) =
        (extensions.get::<ClientIp>(), extensions.get::<PeerIp>())
    else {
        return Err(ProxyError::internal(
            "client_source",
            "no client IP settled",
        ));
    };
    Ok(pick(source, client, peer, request.headers()))
}

fn pick(
    source: &ClientSource,
    client: IpAddr,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    match source {
        ClientSource::Settled => Some(client),
        ClientSource::Peer => Some(peer.to_canonical()),
        ClientSource::ForwardedDepth(depth) => {
            let entries = as_received(headers);
            let index = entries.len().checked_sub(*depth)?;
            parse(entries.get(index)?)
        }
        ClientSource::ForwardedExcluding(ranges) => {
            let excluded = TrustedPeers::new(ranges.iter().copied());
            as_received(headers)
                .iter()
                .rev()
                .filter(|entry| !entry.is_empty())
                .find(|entry| parse(entry).is_none_or(|ip| !excluded.contains(ip)))
                .and_then(|entry| parse(entry))
        }
    }
}

/// The `X-Forwarded-For` entries the trusted peer sent (without the peer
/// the proxy appended).
fn as_received(headers: &HeaderMap) -> Vec<String> {
    let joined: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|e| e.trim().to_string())
        .collect();
    match joined.split_last() {
        Some((_, before)) => before.to_vec(),
        None => Vec::new(),
    }
}

fn parse(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_strategy_picks_its_address() {
        let mut request = Request::new(());
        request.extensions_mut().insert(ClientIp(ip("203.0.113.5")));
        request.extensions_mut().insert(PeerIp(ip("173.245.48.10")));
        let mut headers = HeaderMap::new();
        // As forwarded: the client's chain, then the peer appended.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.5, 173.245.48.10"),
        );
        *request.headers_mut() = headers.clone();
        let pick = |s: ClientSource| resolve(&s, &request).unwrap();
        assert_eq!(pick(ClientSource::Settled), Some(ip("203.0.113.5")));
        assert_eq!(pick(ClientSource::Peer), Some(ip("173.245.48.10")));
        assert_eq!(
            pick(ClientSource::ForwardedDepth(1)),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            pick(ClientSource::ForwardedDepth(2)),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(pick(ClientSource::ForwardedDepth(3)), None, "too deep");
        let excluding = ClientSource::ForwardedExcluding(vec!["203.0.113.0/24".parse().unwrap()]);
        assert_eq!(pick(excluding), Some(ip("198.51.100.1")));
        let everything = ClientSource::ForwardedExcluding(vec!["0.0.0.0/0".parse().unwrap()]);
        assert_eq!(pick(everything), None);
        // An untrusted peer's request: only the peer is in the header.
        headers.insert("x-forwarded-for", HeaderValue::from_static("173.245.48.10"));
        *request.headers_mut() = headers;
        assert_eq!(
            resolve(&ClientSource::ForwardedDepth(1), &request).unwrap(),
            None
        );
        // A request that never passed the forwarded-header step is an
        // internal error, not an anonymous client.
        assert!(resolve(&ClientSource::Settled, &Request::new(())).is_err());
    }
}
