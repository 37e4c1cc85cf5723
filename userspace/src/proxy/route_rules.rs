//! What a route may ask beyond host and path, for the Gateway API's
//! HTTPRoute: conditions on the method, headers and query parameters
//! ([`RouteConditions`]), and what the route does to a request it took
//! ([`RouteActions`]): header edits both ways, a redirect answer, a path or
//! host rewrite. Routes from the config file and from Ingresses leave both
//! empty, which changes nothing. Weighted backends are weighted services
//! (`proxy/balance.rs`), not a route's business.
use hyper::{
    header::{HeaderMap, HeaderName, HeaderValue},
    Method,
};

/// Conditions a request must meet, on top of host and path. Empty: none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteConditions {
    /// The method, upper case; `None` takes any.
    pub method: Option<String>,
    /// `(lower-case name, value)`: the request carries the header with
    /// exactly this value.
    pub headers: Vec<(String, String)>,
    /// `(name, value)`: the query has the parameter (its first occurrence)
    /// with exactly this value, both percent-decoded.
    pub query: Vec<(String, String)>,
    /// The route's `*.example.com` host also covers deeper names
    /// (`a.b.example.com`), as in the Gateway API; Ingress wildcards cover
    /// exactly one label.
    pub deep_wildcard: bool,
}

/// What the conditions look at in a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// A GET without headers or query (what a bare host/path lookup means).
    pub fn get() -> RequestFacts<'static> {
        static EMPTY: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        RequestFacts {
            method: &Method::GET,
            headers: EMPTY.get_or_init(HeaderMap::new),
            query: None,
        }
    }

    pub fn of<B>(request: &hyper::Request<B>) -> RequestFacts<'_> {
        RequestFacts {
            method: request.method(),
            headers: request.headers(),
            query: request.uri().query(),
        }
    }
}

impl RouteConditions {
    pub fn matches(&self, facts: &RequestFacts) -> bool {
        if let Some(method) = &self.method {
            if facts.method.as_str() != method {
                return false;
            }
        }
        let header_ok = |(name, value): &(String, String)| {
            facts
                .headers
                .get_all(name.as_str())
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes())
        };
        if !self.headers.iter().all(header_ok) {
            return false;
        }
        if self.query.is_empty() {
            return true;
        }
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(facts.query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        self.query.iter().all(|(name, value)| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .is_some_and(|(_, v)| v == value)
        })
    }

    /// The tie-breakers after the path, as the Gateway API orders them:
    /// a method match first, then more header matches, then more query
    /// parameter matches. Smaller sorts first.
    pub fn precedence_key(&self) -> (bool, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
        (
            self.method.is_none(),
            std::cmp::Reverse(self.headers.len()),
            std::cmp::Reverse(self.query.len()),
        )
    }
}

/// Header edits: set (replace), add (append), remove; names lower case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Names and values were checked by whoever built the edits; one that
    /// does not parse is skipped.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let parse = |name: &str, value: &str| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        };
        for (name, value) in &self.set {
            if let Some((name, value)) = parse(name, value) {
                headers.insert(name, value);
            }
        }
        for (name, value) in &self.add {
            if let Some((name, value)) = parse(name, value) {
                // The Gateway API appends to an existing value with a comma.
                let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
                    Some(old) => {
                        HeaderValue::from_str(&format!("{old},{}", value.to_str().unwrap_or("")))
                            .unwrap_or(value)
                    }
                    None => value,
                };
                headers.insert(name, joined);
            }
        }
        for name in &self.remove {
            headers.remove(name.as_str());
        }
    }
}

/// A new path: the whole of it, or the part the route's prefix matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathChange {
    Full(String),
    /// `matched` is the route's prefix (element-wise, as routed).
    Prefix {
        matched: String,
        replacement: String,
    },
}

impl PathChange {
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathChange::Full(path) => path.clone(),
            PathChange::Prefix {
                matched,
                replacement,
            } => {
                let matched = matched.trim_end_matches('/');
                let rest = path.strip_prefix(matched).unwrap_or(path);
                let replacement = replacement.trim_end_matches('/');
                let joined = format!("{replacement}{rest}");
                if joined.is_empty() {
                    "/".to_string()
                } else if joined.starts_with('/') {
                    joined
                } else {
                    format!("/{joined}")
                }
            }
        }
    }
}

/// Answer with a redirect instead of forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectAction {
    /// `None`: the request's scheme.
    pub scheme: Option<String>,
    /// `None`: the request's host.
    pub hostname: Option<String>,
    /// `None`: the scheme's well-known port when a scheme is given, else
    /// `listener_port`.
    pub port: Option<u16>,
    pub listener_port: u16,
    pub path: Option<PathChange>,
    /// 301 or 302.
    pub status: u16,
}

impl RedirectAction {
    /// The `Location` for a request that arrived over `scheme` for `host`
    /// (without port) with `path` and `query`.
    pub fn location(&self, scheme: &str, host: &str, path: &str, query: Option<&str>) -> String {
        let scheme_out = self.scheme.as_deref().unwrap_or(scheme);
        let port = match (self.port, &self.scheme) {
            (Some(port), _) => port,
            (None, Some(given)) => well_known(given),
            (None, None) => self.listener_port,
        };
        let host = self.hostname.as_deref().unwrap_or(host);
        let port = if port == well_known(scheme_out) {
            String::new()
        } else {
            format!(":{port}")
        };
        let path = self
            .path
            .as_ref()
            .map_or_else(|| path.to_string(), |change| change.apply(path));
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("{scheme_out}://{host}{port}{path}{query}")
    }
}

fn well_known(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

/// Change the request before it goes upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewriteAction {
    /// The Host the upstream sees.
    pub hostname: Option<String>,
    pub path: Option<PathChange>,
}

/// What a route does besides forwarding to its service. Empty: nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteActions {
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub redirect: Option<RedirectAction>,
    pub rewrite: RewriteAction,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_need_every_header_and_query_parameter_and_the_method() {
        let conditions = RouteConditions {
            method: Some("POST".into()),
            headers: vec![("x-version".into(), "2".into())],
            query: vec![("tier".into(), "gold plus".into())],
            deep_wildcard: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert("X-Version", HeaderValue::from_static("2"));
        let facts = |method: &'static Method, query: Option<&'static str>, headers| RequestFacts {
            method,
            headers,
            query,
        };
        assert!(conditions.matches(&facts(&Method::POST, Some("a=1&tier=gold+plus"), &headers)));
        assert!(conditions.matches(&facts(
            &Method::POST,
            Some("tier=gold%20plus&tier=x"),
            &headers
        )));
        // Only the first occurrence of a parameter counts.
        assert!(!conditions.matches(&facts(
            &Method::POST,
            Some("tier=x&tier=gold+plus"),
            &headers
        )));
        assert!(!conditions.matches(&facts(&Method::GET, Some("tier=gold+plus"), &headers)));
        assert!(!conditions.matches(&facts(&Method::POST, None, &headers)));
        let empty = HeaderMap::new();
        assert!(!conditions.matches(&facts(&Method::POST, Some("tier=gold+plus"), &empty)));
        assert!(RouteConditions::default().matches(&RequestFacts::get()));
    }

    #[test]
    fn prefix_replacement_keeps_what_follows_the_matched_prefix() {
        let change = |matched: &str, replacement: &str| PathChange::Prefix {
            matched: matched.into(),
            replacement: replacement.into(),
        };
        assert_eq!(change("/foo", "/xyz").apply("/foo/bar"), "/xyz/bar");
        assert_eq!(change("/foo", "/").apply("/foo/bar"), "/bar");
        assert_eq!(change("/foo", "/").apply("/foo"), "/");
        assert_eq!(change("/foo/", "/xyz/").apply("/foo"), "/xyz");
        assert_eq!(change("/", "/app").apply("/x"), "/app/x");
        assert_eq!(PathChange::Full("/one".into()).apply("/a/b"), "/one");
    }

    #[test]
    fn redirect_ports_follow_the_scheme_or_the_listener() {
        let mut redirect = RedirectAction {
            scheme: Some("https".into()),
            hostname: None,
            port: None,
            listener_port: 8080,
            path: None,
            status: 301,
        };
        assert_eq!(
            redirect.location("http", "a.example", "/x", Some("q=1")),
            "https://a.example/x?q=1"
        );
        redirect.scheme = None;
        redirect.hostname = Some("b.example".into());
        assert_eq!(
            redirect.location("http", "a.example", "/x", None),
            "http://b.example:8080/x"
        );
        redirect.port = Some(80);
        assert_eq!(
            redirect.location("http", "a", "/", None),
            "http://b.example/"
        );
    }

    #[test]
    fn header_edits_set_add_and_remove() {
        let edits = HeaderEdits {
            set: vec![("x-set".into(), "new".into())],
            add: vec![
                ("x-add".into(), "two".into()),
                ("x-fresh".into(), "1".into()),
            ],
            remove: vec!["x-gone".into()],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-set", HeaderValue::from_static("old"));
        headers.insert("x-add", HeaderValue::from_static("one"));
        headers.insert("x-gone", HeaderValue::from_static("bye"));
        edits.apply(&mut headers);
        assert_eq!(headers["x-set"], "new");
        assert_eq!(headers["x-add"], "one,two");
        assert_eq!(headers["x-fresh"], "1");
        assert!(headers.get("x-gone").is_none());
    }
}
