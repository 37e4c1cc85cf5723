//! Choosing the route for a request, with Kubernetes Ingress semantics: hosts
//! exact (`api.example.com`) or wildcard over exactly one label
//! (`*.example.com`), paths `Exact` or element-wise `Prefix`, and a fixed
//! precedence among the routes that match. The table is built once from the
//! configuration and only read afterwards; a reload builds a new one. It does
//! not normalise paths (no percent-decoding, no `..` resolution): it compares
//! the path the client sent, as Ingress controllers do.
use std::{borrow::Cow, collections::HashMap, sync::Arc};

use super::{
    config::{PathType, RouteConfig},
    route_rules::{RequestFacts, RouteActions, RouteConditions},
};

/// One routing rule, as configured (host normalised to lower case, without a
/// trailing dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Shared: the request's metrics and access log carry it.
    pub name: Arc<str>,
    pub service: Arc<str>,
    pub host: Option<String>,
    pub path: String,
    pub path_type: PathType,
    /// Empty: every entrypoint.
    pub entrypoints: Vec<String>,
    pub conditions: RouteConditions,
    pub actions: RouteActions,
}

impl Route {
    fn serves(&self, entrypoint: &str) -> bool {
        self.entrypoints.is_empty() || self.entrypoints.iter().any(|e| e == entrypoint)
    }
}

/// A route with its path rule prepared for matching.
#[derive(Debug)]
struct Entry {
    route: Route,
    rule: PathRule,
}

#[derive(Debug)]
enum PathRule {
    Exact(String),
    /// The rule's path without its trailing slash: `/` becomes ``, which is
    /// an element-wise prefix of every path.
    Prefix(String),
}

impl PathRule {
    fn new(path: &str, path_type: PathType) -> PathRule {
        match path_type {
            PathType::Exact => PathRule::Exact(path.to_string()),
            PathType::Prefix => PathRule::Prefix(path.trim_end_matches('/').to_string()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Exact(rule) => path == rule,
            // Element-wise: the rule's elements are the request's first ones,
            // so the request continues after the rule with a `/` or not at all.
            PathRule::Prefix(rule) => {
                path.starts_with(rule.as_str())
                    && matches!(path.as_bytes().get(rule.len()), None | Some(b'/'))
            }
        }
    }

    /// Sorts the more specific rule first: any `Exact` before any `Prefix`,
    /// then the prefix with more path elements, then the longer one in bytes.
    /// (Two prefixes that match one path are prefixes of each other, so
    /// this is also the Gateway API's "most characters".)
    fn precedence_key(&self) -> (u8, std::cmp::Reverse<(usize, usize)>) {
        match self {
            PathRule::Exact(_) => (0, std::cmp::Reverse((0, 0))),
            PathRule::Prefix(rule) => (
                1,
                std::cmp::Reverse((rule.matches('/').count(), rule.len())),
            ),
        }
    }
}

/// Every route of a configuration, grouped by host for lookup. Immutable once
/// built.
#[derive(Debug, Default)]
pub struct RouteTable {
    entries: Vec<Entry>,
    /// Indices into `entries`, each list in precedence order.
    exact_hosts: HashMap<String, Vec<usize>>,
    /// Keyed by what follows `*.`: `*.example.com` is under `example.com`.
    wildcard_hosts: HashMap<String, Vec<usize>>,
    any_host: Vec<usize>,
    default: Option<Route>,
}

impl RouteTable {
    /// Routes in config order; `default_service` is used (as a Route named
    /// "default") when nothing matches.
    pub fn new(routes: &[RouteConfig], default_service: Option<&str>) -> RouteTable {
        let mut table = RouteTable {
            default: default_service.map(|service| Route {
                name: "default".into(),
                service: service.into(),
                host: None,
                path: "/".to_string(),
                path_type: PathType::Prefix,
                entrypoints: Vec::new(),
                conditions: RouteConditions::default(),
                actions: RouteActions::default(),
            }),
            ..RouteTable::default()
        };
        for (index, config) in routes.iter().enumerate() {
            let host = config
                .host
                .as_deref()
                .map(|h| normalize_host(h).into_owned())
                .filter(|h| !h.is_empty());
            let group = match host.as_deref() {
                None => &mut table.any_host,
                Some(h) => match h.strip_prefix("*.") {
                    Some(parent) => table.wildcard_hosts.entry(parent.to_string()).or_default(),
                    None => table.exact_hosts.entry(h.to_string()).or_default(),
                },
            };
            group.push(index);
            table.entries.push(Entry {
                route: Route {
                    name: config.name.as_str().into(),
                    service: config.service.as_str().into(),
                    host,
                    path: config.path.clone(),
                    path_type: config.path_type,
                    entrypoints: config.entrypoints.clone(),
                    conditions: config.conditions.clone(),
                    actions: config.actions.clone(),
                },
                rule: PathRule::new(&config.path, config.path_type),
            });
        }
        let entries = &table.entries;
        let groups = table
            .exact_hosts
            .values_mut()
            .chain(table.wildcard_hosts.values_mut())
            .chain(std::iter::once(&mut table.any_host));
        for group in groups {
            // Stable: equal keys keep config order.
            group.sort_by_key(|&i| {
                let entry = &entries[i];
                (
                    entry.rule.precedence_key(),
                    entry.route.conditions.precedence_key(),
                )
            });
        }
        table
    }

    /// The route for a request on `entrypoint` with Host/:authority `host`
    /// (may carry a port, any case, may be absent) and `path` (no query),
    /// as if it were a GET without headers or query.
    pub fn find(&self, entrypoint: &str, host: Option<&str>, path: &str) -> Option<&Route> {
        self.find_request(entrypoint, host, path, &RequestFacts::get())
    }

    /// The route for a request, its method, headers and query included.
    ///
    /// Among the routes that match, an exact host beats a wildcard host
    /// (a longer wildcard beats a shorter one), which beats a route without
    /// a host; then an `Exact` path beats a `Prefix`; then the longer prefix
    /// (in elements, then bytes); then a route with a method condition, then
    /// the one with more header conditions, then more query conditions;
    /// then the route configured first.
    pub fn find_request(
        &self,
        entrypoint: &str,
        host: Option<&str>,
        path: &str,
        facts: &RequestFacts,
    ) -> Option<&Route> {
        let path = if path.is_empty() { "/" } else { path };
        let host = host.map(normalize_host).filter(|h| !h.is_empty());
        let first_match = |group: Option<&Vec<usize>>, deep: bool| {
            group?
                .iter()
                .map(|&i| &self.entries[i])
                .find(|e| {
                    (!deep || e.route.conditions.deep_wildcard)
                        && e.route.serves(entrypoint)
                        && e.rule.matches(path)
                        && e.route.conditions.matches(facts)
                })
                .map(|e| &e.route)
        };
        let by_host = host.as_deref().and_then(|host| {
            first_match(self.exact_hosts.get(host), false).or_else(|| {
                if host.starts_with('.') || host.contains("..") {
                    return None;
                }
                // The longest wildcard first; past the first label only
                // the routes whose wildcards go deeper (Gateway API).
                host.match_indices('.').enumerate().find_map(|(n, (i, _))| {
                    if i == 0 {
                        return None;
                    }
                    first_match(self.wildcard_hosts.get(&host[i + 1..]), n > 0)
                })
            })
        });
        by_host
            .or_else(|| first_match(Some(&self.any_host), false))
            .or(self.default.as_ref())
    }

    /// The configured routes, in config order (without the default).
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.entries.iter().map(|e| &e.route)
    }

    /// The route used when nothing matches, if a default service is set.
    pub fn default_route(&self) -> Option<&Route> {
        self.default.as_ref()
    }
}

/// Lower case, without a port and without a trailing dot. IPv6 literals lose
/// their brackets (`[::1]:443` -> `::1`); a bare IPv6 address (more than one
/// colon) is taken whole, so the config may spell a host either way.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else if host.bytes().filter(|&b| b == b':').count() == 1 {
        host.split_once(':').map_or(host, |(name, _)| name)
    } else {
        host
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, path: &str, path_type: PathType) -> RouteConfig {
        RouteConfig {
            name: name.to_string(),
            host: host.map(str::to_string),
            path: path.to_string(),
            path_type,
            service: format!("{name}-svc:80"),
            entrypoints: Vec::new(),
            middlewares: Vec::new(),
            conditions: Default::default(),
            actions: Default::default(),
        }
    }

    fn prefix(name: &str, host: Option<&str>, path: &str) -> RouteConfig {
        route(name, host, path, PathType::Prefix)
    }

    fn exact(name: &str, host: Option<&str>, path: &str) -> RouteConfig {
        route(name, host, path, PathType::Exact)
    }

    fn found<'a>(table: &'a RouteTable, host: Option<&str>, path: &str) -> Option<&'a str> {
        table.find("websecure", host, path).map(|r| &*r.name)
    }

    /// The Ingress objects of kubernetes-sigs/ingress-controller-conformance
    /// (features/path_rules.feature and features/host_rules.feature), one
    /// route per path rule, in the same order.
    fn conformance_table() -> RouteTable {
        RouteTable::new(
            &[
                // path_rules.feature
                exact("foo-exact", Some("exact-path-rules"), "/foo"),
                prefix("foo-prefix", Some("prefix-path-rules"), "/foo"),
                prefix(
                    "aaa-slash-bbb-prefix",
                    Some("prefix-path-rules"),
                    "/aaa/bbb",
                ),
                prefix("aaa-prefix", Some("prefix-path-rules"), "/aaa"),
                prefix("mixed-foo-prefix", Some("mixed-path-rules"), "/foo"),
                exact("mixed-foo-exact", Some("mixed-path-rules"), "/foo"),
                prefix(
                    "aaa-slash-bbb-slash-prefix",
                    Some("trailing-slash-path-rules"),
                    "/aaa/bbb/",
                ),
                exact(
                    "foo-slash-exact",
                    Some("trailing-slash-path-rules"),
                    "/foo/",
                ),
                // host_rules.feature
                prefix("wildcard-foo-com", Some("*.foo.com"), "/"),
                prefix("foo-bar-com", Some("foo.bar.com"), "/"),
            ],
            None,
        )
    }

    #[test]
    fn ingress_conformance_path_and_host_rules() {
        let table = conformance_table();
        // (host, path, expected route; None = 404)
        let cases: &[(&str, &str, Option<&str>)] = &[
            // exact /foo matches request /foo
            ("exact-path-rules", "/foo", Some("foo-exact")),
            // exact /foo does not match request /foo/
            ("exact-path-rules", "/foo/", None),
            // exact /foo does not match request /FOO
            ("exact-path-rules", "/FOO", None),
            // exact /foo does not match request /bar
            ("exact-path-rules", "/bar", None),
            // prefix /foo matches request /foo
            ("prefix-path-rules", "/foo", Some("foo-prefix")),
            // prefix /foo matches request /foo/
            ("prefix-path-rules", "/foo/", Some("foo-prefix")),
            // prefix /foo does not match request /FOO
            ("prefix-path-rules", "/FOO", None),
            // prefix /aaa/bbb matches request /aaa/bbb (longest wins)
            (
                "prefix-path-rules",
                "/aaa/bbb",
                Some("aaa-slash-bbb-prefix"),
            ),
            // prefix /aaa/bbb matches request /aaa/bbb/ccc
            (
                "prefix-path-rules",
                "/aaa/bbb/ccc",
                Some("aaa-slash-bbb-prefix"),
            ),
            // prefix /aaa matches request /aaa/ccc
            ("prefix-path-rules", "/aaa/ccc", Some("aaa-prefix")),
            // prefix /aaa does not match request /aaaccc
            ("prefix-path-rules", "/aaaccc", None),
            // element-wise: /aaa/bbb does not match /aaa/bbbxyz, /aaa does
            ("prefix-path-rules", "/aaa/bbbxyz", Some("aaa-prefix")),
            // mixed rules on one path: Exact is preferred
            ("mixed-path-rules", "/foo", Some("mixed-foo-exact")),
            ("mixed-path-rules", "/foo/", Some("mixed-foo-prefix")),
            // prefix /aaa/bbb/ matches request /aaa/bbb and /aaa/bbb/
            (
                "trailing-slash-path-rules",
                "/aaa/bbb",
                Some("aaa-slash-bbb-slash-prefix"),
            ),
            (
                "trailing-slash-path-rules",
                "/aaa/bbb/",
                Some("aaa-slash-bbb-slash-prefix"),
            ),
            // exact /foo/ does not match request /foo
            ("trailing-slash-path-rules", "/foo", None),
            (
                "trailing-slash-path-rules",
                "/foo/",
                Some("foo-slash-exact"),
            ),
            // host foo.bar.com matches request foo.bar.com
            ("foo.bar.com", "/", Some("foo-bar-com")),
            // host foo.bar.com does not match request subdomain.bar.com
            ("subdomain.bar.com", "/", None),
            // wildcard: matches on shared suffix
            ("bar.foo.com", "/", Some("wildcard-foo-com")),
            // wildcard covers a single label only
            ("baz.bar.foo.com", "/", None),
            ("foo.com", "/", None),
        ];
        for &(host, path, want) in cases {
            assert_eq!(found(&table, Some(host), path), want, "http://{host}{path}");
        }
    }

    #[test]
    fn kubernetes_docs_path_matching_examples() {
        // https://kubernetes.io/docs/concepts/services-networking/ingress/#examples
        // (rules, request path, matches?)
        let cases: &[(&[RouteConfig], &str, Option<&str>)] = &[
            (&[prefix("p", None, "/")], "/anything/at/all", Some("p")),
            (&[exact("e", None, "/foo")], "/foo", Some("e")),
            (&[exact("e", None, "/foo")], "/bar", None),
            (&[exact("e", None, "/foo")], "/foo/", None),
            (&[exact("e", None, "/foo/")], "/foo", None),
            (&[prefix("p", None, "/foo")], "/foo", Some("p")),
            (&[prefix("p", None, "/foo")], "/foo/", Some("p")),
            (&[prefix("p", None, "/foo/")], "/foo", Some("p")),
            (&[prefix("p", None, "/foo/")], "/foo/", Some("p")),
            (&[prefix("p", None, "/aaa/bb")], "/aaa/bbb", None),
            (&[prefix("p", None, "/aaa/bbb")], "/aaa/bbb", Some("p")),
            (&[prefix("p", None, "/aaa/bbb/")], "/aaa/bbb", Some("p")),
            (&[prefix("p", None, "/aaa/bbb")], "/aaa/bbb/", Some("p")),
            (&[prefix("p", None, "/aaa/bbb")], "/aaa/bbb/ccc", Some("p")),
            (&[prefix("p", None, "/aaa/bbb")], "/aaa/bbbxyz", None),
            (
                &[prefix("root", None, "/"), prefix("aaa", None, "/aaa")],
                "/aaa/ccc",
                Some("aaa"),
            ),
            (
                &[
                    prefix("aaa", None, "/aaa"),
                    prefix("aaa-bbb", None, "/aaa/bbb"),
                ],
                "/aaa/bbb",
                Some("aaa-bbb"),
            ),
            (
                &[
                    prefix("aaa", None, "/aaa"),
                    prefix("aaa-bbb", None, "/aaa/bbb"),
                ],
                "/aaa/ccc",
                Some("aaa"),
            ),
            (&[prefix("p", None, "/aaa")], "/ccc", None),
            (
                &[prefix("p", None, "/foo"), exact("e", None, "/foo")],
                "/foo",
                Some("e"),
            ),
            (
                &[
                    prefix("foo", None, "/foo"),
                    prefix("foo-bar", None, "/foo/bar"),
                ],
                "/foo/bar/baz",
                Some("foo-bar"),
            ),
        ];
        for (routes, path, want) in cases {
            let table = RouteTable::new(routes, None);
            assert_eq!(found(&table, None, path), *want, "{routes:?} <- {path}");
        }
    }

    #[test]
    fn host_ignores_case_port_and_trailing_dot() {
        let table = RouteTable::new(
            &[
                prefix("api", Some("API.Example.com"), "/"),
                prefix("v6", Some("[2001:db8::1]"), "/"),
                prefix("loopback", Some("::1"), "/"),
            ],
            None,
        );
        for host in [
            "api.example.com",
            "API.EXAMPLE.COM",
            "api.example.com:443",
            "Api.Example.Com:8443",
            "api.example.com.",
            "api.example.com.:443",
        ] {
            assert_eq!(found(&table, Some(host), "/x"), Some("api"), "{host}");
        }
        assert_eq!(found(&table, Some("[2001:DB8::1]:443"), "/"), Some("v6"));
        assert_eq!(found(&table, Some("[2001:db8::1]"), "/"), Some("v6"));
        assert_eq!(found(&table, Some("[::1]:443"), "/"), Some("loopback"));
        assert_eq!(found(&table, Some("example.com"), "/"), None);
        assert_eq!(found(&table, None, "/"), None);
    }

    #[test]
    fn wildcard_covers_exactly_one_label_and_loses_to_exact_host() {
        let table = RouteTable::new(
            &[
                prefix("wild", Some("*.example.com"), "/"),
                prefix("api", Some("api.example.com"), "/"),
            ],
            None,
        );
        assert_eq!(found(&table, Some("api.example.com"), "/"), Some("api"));
        assert_eq!(
            found(&table, Some("WWW.example.com:443"), "/"),
            Some("wild")
        );
        assert_eq!(found(&table, Some("a.b.example.com"), "/"), None);
        assert_eq!(found(&table, Some("example.com"), "/"), None);
        assert_eq!(found(&table, Some(".example.com"), "/"), None);
        assert_eq!(found(&table, Some("example.com.evil.net"), "/"), None);
    }

    #[test]
    fn host_precedence_falls_through_to_less_specific_hosts() {
        let table = RouteTable::new(
            &[
                prefix("any", None, "/"),
                prefix("wild", Some("*.example.com"), "/static"),
                prefix("api", Some("api.example.com"), "/v1"),
            ],
            None,
        );
        // A host match beats a longer path on a less specific host...
        assert_eq!(found(&table, Some("api.example.com"), "/v1/x"), Some("api"));
        // ...and a route whose path does not match is no match at all.
        assert_eq!(
            found(&table, Some("api.example.com"), "/static/a.css"),
            Some("wild")
        );
        assert_eq!(found(&table, Some("api.example.com"), "/v2"), Some("any"));
        assert_eq!(found(&table, Some("other.net"), "/v1"), Some("any"));
        assert_eq!(found(&table, None, "/v1"), Some("any"));
    }

    #[test]
    fn equal_rules_go_to_the_route_configured_first() {
        let table = RouteTable::new(
            &[
                prefix("first", Some("example.com"), "/foo/"),
                prefix("second", Some("example.com"), "/foo"),
                exact("exact-first", Some("example.com"), "/bar"),
                exact("exact-second", Some("example.com"), "/bar"),
            ],
            None,
        );
        assert_eq!(found(&table, Some("example.com"), "/foo/x"), Some("first"));
        assert_eq!(
            found(&table, Some("example.com"), "/bar"),
            Some("exact-first")
        );
    }

    #[test]
    fn default_service_catches_what_matches_nothing() {
        let table = RouteTable::new(
            &[prefix("api", Some("api.example.com"), "/api")],
            Some("fallback:8080"),
        );
        let route = table
            .find("web", Some("unknown.example.com"), "/")
            .expect("default route");
        assert_eq!(&*route.name, "default");
        assert_eq!(&*route.service, "fallback:8080");
        assert_eq!(
            found(&table, Some("api.example.com"), "/other"),
            Some("default")
        );
        assert_eq!(found(&table, None, ""), Some("default"));
        assert_eq!(
            found(&table, Some("api.example.com"), "/api/x"),
            Some("api")
        );

        let without = RouteTable::new(&[], None);
        assert_eq!(without.find("web", Some("example.com"), "/"), None);
    }

    #[test]
    fn routes_serve_only_their_entrypoints() {
        let mut internal = prefix("internal", Some("example.com"), "/");
        internal.entrypoints = vec!["internal".to_string()];
        let public = prefix("public", None, "/");
        let table = RouteTable::new(&[internal, public], None);
        let on = |entrypoint| {
            table
                .find(entrypoint, Some("example.com"), "/")
                .map(|r| &*r.name)
        };
        assert_eq!(on("internal"), Some("internal"));
        assert_eq!(on("websecure"), Some("public"));
    }

    #[test]
    fn empty_request_path_is_root() {
        let table = RouteTable::new(&[exact("root", None, "/")], None);
        assert_eq!(found(&table, None, ""), Some("root"));
        assert_eq!(found(&table, None, "/"), Some("root"));
        assert_eq!(found(&table, None, "/x"), None);
    }

    // The table is shared by every connection task.
    const _: fn() = || {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RouteTable>();
    };
}
