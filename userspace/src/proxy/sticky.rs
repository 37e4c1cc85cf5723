//! The sticky-session cookie: its default name, the token it carries, and
//! reading and writing it. The token is a truncated SHA-1 of the service and
//! the endpoint address (or the weighted member's name), so the cookie never
//! shows an internal address in clear, and every node derives the same token
//! for the same endpoint (no shared secret to distribute). A token is only
//! ever looked up among the endpoints or members currently in the pool: a
//! forged or stale cookie matches nothing, and the request is balanced as if
//! it had none (and is given a fresh cookie).
//!
//! Not here: choosing among members (`balance`) or endpoints (`upstream`).
use std::net::SocketAddr;

use hyper::header::{self, HeaderMap, HeaderValue};
use sha1::{Digest, Sha1};

use super::config::StickyCookie;

/// Hex digits in a token: 64 bits, plenty to tell endpoints apart.
const TOKEN_LEN: usize = 16;

fn hex_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part);
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(40), |mut hex, byte| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Traefik's scheme: `_` and the first six hex digits of a SHA-1 of the
/// service name.
pub fn default_cookie_name(service: &str) -> String {
    let digest = hex_digest(&[b"xdpgate-sticky-name", service.as_bytes()]);
    format!("_{}", &digest[..6])
}

/// The token naming `endpoint` of `service`.
pub fn endpoint_token(service: &str, endpoint: SocketAddr) -> String {
    let address = endpoint.to_string();
    let digest = hex_digest(&[
        b"xdpgate-sticky-endpoint",
        service.as_bytes(),
        address.as_bytes(),
    ]);
    digest[..TOKEN_LEN].to_string()
}

/// The token naming member `member` of weighted service `service`.
pub fn member_token(service: &str, member: &str) -> String {
    let digest = hex_digest(&[
        b"xdpgate-sticky-member",
        service.as_bytes(),
        member.as_bytes(),
    ]);
    digest[..TOKEN_LEN].to_string()
}

/// The value of cookie `name` in the request's `Cookie` headers, if it has
/// the shape of a token (anything else is ignored, never echoed anywhere).
pub fn token_in(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| {
            value.len() == TOKEN_LEN
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .map(str::to_string)
}

/// The `Set-Cookie` value that gives the client `token`.
pub fn set_cookie(cookie: &StickyCookie, token: &str) -> Option<HeaderValue> {
    let mut text = format!("{}={token}; Path={}", cookie.name, cookie.path);
    if let Some(max_age) = cookie.max_age {
        text.push_str(&format!("; Max-Age={max_age}"));
    }
    if cookie.secure {
        text.push_str("; Secure");
    }
    if cookie.http_only {
        text.push_str("; HttpOnly");
    }
    if let Some(same_site) = cookie.same_site {
        text.push_str("; SameSite=");
        text.push_str(same_site.as_str());
    }
    HeaderValue::from_str(&text).ok()
}

/// Whether `name` may be a cookie name (an RFC 6265 token).
pub fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Endpoint stickiness for one request to a service with `sticky` set: the
/// endpoint the client's cookie names, if it is in the pool and admitted.
#[derive(Clone, Debug, Default)]
pub struct EndpointSticky {
    /// The token the client sent, valid or not for this pool.
    sent: Option<String>,
    /// The endpoint it names, when that one is usable now.
    pub preferred: Option<SocketAddr>,
}

impl EndpointSticky {
    /// Reads the cookie of `upstream` (which must have `sticky`) and looks
    /// its token up among the endpoints currently admitted.
    pub fn read(upstream: &super::upstream::Upstream, headers: &HeaderMap) -> EndpointSticky {
        let Some(sticky) = &upstream.config().sticky else {
            return EndpointSticky::default();
        };
        let sent = token_in(headers, &sticky.cookie.name);
        let preferred = sent.as_deref().and_then(|token| {
            upstream
                .endpoints()
                .into_iter()
                .filter(|state| state.ejected_until.is_none())
                .map(|state| state.address)
                .find(|address| endpoint_token(upstream.name(), *address) == token)
        });
        EndpointSticky { sent, preferred }
    }

    /// The cookie to set after `answered` served the request: none when the
    /// client already holds the token for it.
    pub fn cookie_for(
        &self,
        upstream: &super::upstream::Upstream,
        answered: SocketAddr,
    ) -> Option<HeaderValue> {
        let sticky = upstream.config().sticky.as_ref()?;
        let token = endpoint_token(upstream.name(), answered);
        if self.sent.as_deref() == Some(token.as_str()) {
            return None;
        }
        set_cookie(&sticky.cookie, &token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::config::{SameSite, StickyConfig};

    fn headers(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        headers
    }

    #[test]
    fn tokens_hide_the_address_and_differ_per_endpoint_and_service() {
        let a: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let b: SocketAddr = "10.1.2.4:8080".parse().unwrap();
        let token = endpoint_token("api", a);
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(!token.contains("10.1.2.3") && !token.contains("8080"));
        assert_eq!(
            token,
            endpoint_token("api", a),
            "stable across calls (and nodes)"
        );
        assert_ne!(token, endpoint_token("api", b));
        assert_ne!(token, endpoint_token("web", a));
        assert_ne!(member_token("canary", "v1"), member_token("canary", "v2"));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_malformed_values_are_ignored() {
        let token = endpoint_token("api", "10.0.0.1:80".parse().unwrap());
        let found = token_in(&headers(&format!("a=1; lb={token}; b=2")), "lb");
        assert_eq!(found.as_deref(), Some(token.as_str()));
        assert_eq!(token_in(&headers(&format!("xlb={token}")), "lb"), None);
        for bad in [
            "10.0.0.1:80",
            "",
            "ABCDEF0123456789",
            "0123456789abcdef0",
            "zz",
        ] {
            assert_eq!(
                token_in(&headers(&format!("lb={bad}")), "lb"),
                None,
                "{bad}"
            );
        }
        let mut two = HeaderMap::new();
        two.append(header::COOKIE, HeaderValue::from_static("a=1"));
        two.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("lb={token}")).unwrap(),
        );
        assert_eq!(token_in(&two, "lb").as_deref(), Some(token.as_str()));
    }

    #[test]
    fn set_cookie_carries_the_traefik_attributes() {
        let mut sticky = StickyConfig::for_service("api");
        assert!(sticky.cookie.name.starts_with('_') && sticky.cookie.name.len() == 7);
        assert_eq!(
            set_cookie(&sticky.cookie, "0123456789abcdef").unwrap(),
            format!("{}=0123456789abcdef; Path=/", sticky.cookie.name)
        );
        sticky.cookie.name = "lb".into();
        sticky.cookie.secure = true;
        sticky.cookie.http_only = true;
        sticky.cookie.same_site = Some(SameSite::Strict);
        sticky.cookie.max_age = Some(3600);
        assert_eq!(
            set_cookie(&sticky.cookie, "0123456789abcdef").unwrap(),
            "lb=0123456789abcdef; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn cookie_names_are_tokens() {
        assert!(valid_cookie_name("_3f2a1b"));
        assert!(valid_cookie_name("lb-session"));
        for bad in ["", "a b", "a;b", "a=b", "é"] {
            assert!(!valid_cookie_name(bad), "{bad}");
        }
    }
}
