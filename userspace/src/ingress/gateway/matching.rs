//! The pieces of an HTTPRoute rule, each checked and turned into what the
//! proxy's routes hold: hostnames (a route's against its listener's), path,
//! header, query and method matches ([`RouteConditions`]), and filters
//! ([`RouteActions`]). What xdpgate cannot honour is an error naming the
//! field, with the Gateway API's reason: never a rule quietly weaker than
//! written.
use hyper::header::{HeaderName, HeaderValue};

use super::objects::{
    HeaderModifier, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, PathModifier, GROUP,
};
use crate::{
    config::route_path,
    ingress::Objects,
    proxy::{
        HeaderEdits, PathChange, PathType, RedirectAction, RewriteAction, RouteActions,
        RouteConditions,
    },
};

/// Why a rule is refused: the condition reason, and a message that names
/// the field.
pub type Refusal = (&'static str, String);

fn unsupported(message: String) -> Refusal {
    ("UnsupportedValue", message)
}

/// Whether a ReferenceGrant in `to_namespace` lets a `from_kind` in
/// `from_namespace` refer to the `to_kind` named `to_name`.
pub fn granted(
    objects: &Objects,
    from_kind: &str,
    from_namespace: &str,
    to_kind: &str,
    to_namespace: &str,
    to_name: &str,
) -> bool {
    objects
        .gateway
        .reference_grants
        .iter()
        .filter(|(key, _)| key.0 == to_namespace)
        .any(|(_, grant)| {
            let from = grant.spec.from.iter().any(|f| {
                f.kind == from_kind
                    && f.group.as_deref().unwrap_or("") == GROUP
                    && f.namespace.as_deref() == Some(from_namespace)
            });
            let to = grant.spec.to.iter().any(|t| {
                t.kind == to_kind
                    && t.group.as_deref().unwrap_or("").is_empty()
                    && t.name
                        .as_deref()
                        .is_none_or(|n| n.is_empty() || n == to_name)
            });
            from && to
        })
}

/// The hosts a route serves on a listener: each of its hostnames that the
/// listener's covers, as the more specific of the two; the listener's own
/// when the route names none. `None` in the result: any host.
pub fn hostnames(route: &[String], listener: Option<&str>) -> Vec<Option<String>> {
    let lower = |h: &str| h.trim().trim_end_matches('.').to_ascii_lowercase();
    let listener = listener.map(lower);
    if route.is_empty() {
        return vec![listener];
    }
    let mut out = Vec::new();
    for host in route.iter().map(|h| lower(h)) {
        let chosen = match &listener {
            None => Some(host.clone()),
            Some(l) if covers(l, &host) => Some(host.clone()),
            Some(l) if covers(&host, l) => Some(l.clone()),
            Some(_) => None,
        };
        if let Some(chosen) = chosen {
            if !out.contains(&Some(chosen.clone())) {
                out.push(Some(chosen));
            }
        }
    }
    out
}

/// Whether the pattern `wide` (exact or `*.suffix`) covers `narrow`
/// (exact or wildcard): `*.example.com` covers `a.example.com`,
/// `a.b.example.com` and `*.b.example.com`, not `example.com`.
fn covers(wide: &str, narrow: &str) -> bool {
    if wide == narrow {
        return true;
    }
    match wide.strip_prefix("*.") {
        Some(suffix) => {
            let narrow = narrow.strip_prefix("*.").unwrap_or(narrow);
            narrow.len() > suffix.len() && narrow.ends_with(&format!(".{suffix}"))
        }
        None => false,
    }
}

/// One match of a rule: path, path type and the other conditions.
pub fn path_and_conditions(
    m: &HttpRouteMatch,
    at: &str,
) -> Result<(String, PathType, RouteConditions), Refusal> {
    let (kind, value) = match &m.path {
        Some(path) => (
            path.kind.as_deref().unwrap_or("PathPrefix"),
            path.value.as_deref().unwrap_or("/"),
        ),
        None => ("PathPrefix", "/"),
    };
    let path_type = match kind {
        "Exact" => PathType::Exact,
        "PathPrefix" => PathType::Prefix,
        other => {
            return Err(unsupported(format!(
                "{at}.path.type `{other}` is not supported (Exact and PathPrefix are)"
            )))
        }
    };
    let path = route_path(value).map_err(|e| unsupported(format!("{at}.path.value: {e}")))?;
    let mut conditions = RouteConditions {
        deep_wildcard: true,
        ..RouteConditions::default()
    };
    if let Some(method) = &m.method {
        let method = method.trim().to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unsupported(format!(
                "{at}.method `{method}` is not a method"
            )));
        }
        conditions.method = Some(method);
    }
    for (h, header) in m.headers.iter().enumerate() {
        let at = format!("{at}.headers[{h}]");
        exact_only(header.kind.as_deref(), &at)?;
        let name = header.name.to_ascii_lowercase();
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            unsupported(format!("{at}.name `{}` is not a header name", header.name))
        })?;
        // The first match for a name counts (Gateway API).
        if !conditions.headers.iter().any(|(n, _)| *n == name) {
            conditions.headers.push((name, header.value.clone()));
        }
    }
    for (q, param) in m.query_params.iter().enumerate() {
        let at = format!("{at}.queryParams[{q}]");
        exact_only(param.kind.as_deref(), &at)?;
        if !conditions.query.iter().any(|(n, _)| *n == param.name) {
            conditions
                .query
                .push((param.name.clone(), param.value.clone()));
        }
    }
    Ok((path, path_type, conditions))
}

fn exact_only(kind: Option<&str>, at: &str) -> Result<(), Refusal> {
    match kind.unwrap_or("Exact") {
        "Exact" => Ok(()),
        other => Err(unsupported(format!(
            "{at}.type `{other}` is not supported (only Exact)"
        ))),
    }
}

/// The rule's filters as route actions, for one of its matches (`path`,
/// `path_type`: a prefix replacement replaces what that match matched) on a
/// listener's `port`.
pub fn actions(
    rule: &HttpRouteRule,
    at: &str,
    path: &str,
    path_type: PathType,
    port: u16,
) -> Result<RouteActions, Refusal> {
    let mut actions = RouteActions::default();
    let mut rewrites = false;
    for (f, filter) in rule.filters.iter().enumerate() {
        let at = format!("{at}.filters[{f}]");
        let missing = || unsupported(format!("{at}: type {} without its settings", filter.kind));
        match filter.kind.as_str() {
            "RequestHeaderModifier" => {
                let modifier = filter
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(missing)?;
                actions.request_headers =
                    header_edits(modifier, &format!("{at}.requestHeaderModifier"))?;
            }
            "ResponseHeaderModifier" => {
                let modifier = filter
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(missing)?;
                actions.response_headers =
                    header_edits(modifier, &format!("{at}.responseHeaderModifier"))?;
            }
            "RequestRedirect" => {
                actions.redirect = Some(redirect(filter, &at, path, path_type, port)?);
            }
            "URLRewrite" => {
                let rewrite = filter.url_rewrite.as_ref().ok_or_else(missing)?;
                rewrites = true;
                actions.rewrite = RewriteAction {
                    hostname: rewrite.hostname.clone().filter(|h| !h.is_empty()),
                    path: match &rewrite.path {
                        Some(m) => Some(path_change(
                            m,
                            &format!("{at}.urlRewrite.path"),
                            path,
                            path_type,
                        )?),
                        None => None,
                    },
                };
            }
            other => {
                return Err(unsupported(format!(
                    "{at}.type `{other}` is not supported (RequestHeaderModifier, \
                     ResponseHeaderModifier, RequestRedirect and URLRewrite are)"
                )))
            }
        }
    }
    if rewrites && actions.redirect.is_some() {
        return Err(unsupported(format!(
            "{at}.filters: RequestRedirect and URLRewrite cannot both be used in one rule"
        )));
    }
    Ok(actions)
}

fn header_edits(modifier: &HeaderModifier, at: &str) -> Result<HeaderEdits, Refusal> {
    let check = |name: &str, value: Option<&str>, at: String| -> Result<String, Refusal> {
        let lower = name.to_ascii_lowercase();
        HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| unsupported(format!("{at}: `{name}` is not a header name")))?;
        if let Some(value) = value {
            HeaderValue::from_str(value).map_err(|_| {
                unsupported(format!("{at}: the value of `{name}` is not a header value"))
            })?;
        }
        Ok(lower)
    };
    let mut edits = HeaderEdits::default();
    for (i, pair) in modifier.set.iter().enumerate() {
        let name = check(&pair.name, Some(&pair.value), format!("{at}.set[{i}]"))?;
        edits.set.push((name, pair.value.clone()));
    }
    for (i, pair) in modifier.add.iter().enumerate() {
        let name = check(&pair.name, Some(&pair.value), format!("{at}.add[{i}]"))?;
        edits.add.push((name, pair.value.clone()));
    }
    for (i, name) in modifier.remove.iter().enumerate() {
        edits
            .remove
            .push(check(name, None, format!("{at}.remove[{i}]"))?);
    }
    Ok(edits)
}

fn redirect(
    filter: &HttpRouteFilter,
    at: &str,
    path: &str,
    path_type: PathType,
    port: u16,
) -> Result<RedirectAction, Refusal> {
    let Some(redirect) = &filter.request_redirect else {
        return Err(unsupported(format!(
            "{at}: RequestRedirect without its settings"
        )));
    };
    let at = format!("{at}.requestRedirect");
    let scheme = match redirect.scheme.as_deref() {
        None => None,
        Some(s @ ("http" | "https")) => Some(s.to_string()),
        Some(other) => {
            return Err(unsupported(format!(
                "{at}.scheme `{other}` is not http or https"
            )))
        }
    };
    let status = match redirect.status_code.unwrap_or(302) {
        code @ (301 | 302) => code as u16,
        other => {
            return Err(unsupported(format!(
                "{at}.statusCode {other} is not supported (301 or 302)"
            )))
        }
    };
    let port_out = match redirect.port {
        None => None,
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| unsupported(format!("{at}.port {p} is not a port")))?,
        ),
    };
    Ok(RedirectAction {
        scheme,
        hostname: redirect.hostname.clone().filter(|h| !h.is_empty()),
        port: port_out,
        listener_port: port,
        path: match &redirect.path {
            Some(m) => Some(path_change(m, &format!("{at}.path"), path, path_type)?),
            None => None,
        },
        status,
    })
}

fn path_change(
    modifier: &PathModifier,
    at: &str,
    path: &str,
    path_type: PathType,
) -> Result<PathChange, Refusal> {
    match modifier.kind.as_str() {
        "ReplaceFullPath" => {
            let full = modifier.replace_full_path.as_deref().unwrap_or("/");
            Ok(PathChange::Full(route_path(full).map_err(|e| {
                unsupported(format!("{at}.replaceFullPath: {e}"))
            })?))
        }
        "ReplacePrefixMatch" => {
            if path_type != PathType::Prefix {
                return Err(unsupported(format!(
                    "{at}: ReplacePrefixMatch needs a PathPrefix match"
                )));
            }
            let replacement = modifier.replace_prefix_match.as_deref().unwrap_or("/");
            Ok(PathChange::Prefix {
                matched: path.to_string(),
                replacement: route_path(replacement)
                    .map_err(|e| unsupported(format!("{at}.replacePrefixMatch: {e}")))?,
            })
        }
        other => Err(unsupported(format!(
            "{at}.type `{other}` is not ReplaceFullPath or ReplacePrefixMatch"
        ))),
    }
}
