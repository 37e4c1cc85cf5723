//! One Traefik Middleware `spec` → xdpgate middleware configurations, with
//! Traefik's defaults and units (see docs/migrating.md for the table). A
//! field whose meaning xdpgate cannot give is a [`FieldError`] naming it.
use std::{collections::BTreeMap, time::Duration};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use sha1::{Digest as _, Sha1};

use super::fields::{duration, error, unsupported, FieldError, Fields};
use crate::{
    policy::parse_net,
    proxy::{
        AddPrefixConfig, BasicAuthConfig, BodyLimitConfig, ClientSource, CompressConfig,
        HeadersConfig, HstsConfig, InlineUsers, IpAllowConfig, MiddlewareConfig, PrefixMatch,
        RateLimitConfig, RedirectSchemeConfig, SecurityHeadersConfig, StripPrefixConfig,
    },
};

/// What one Middleware object comes to.
#[derive(Clone, Debug, PartialEq)]
pub enum Converted {
    /// xdpgate middlewares, in the order they run (none: Traefik's own
    /// "does nothing", e.g. `rateLimit.average: 0`).
    Layers(Vec<MiddlewareConfig>),
    /// A `chain`: other Middleware objects, `(namespace, name)`, in order.
    Chain(Vec<(Option<String>, String)>),
}

/// Looks a Secret up in the Middleware's namespace.
pub type SecretLookup<'a> = &'a dyn Fn(&str) -> Option<&'a Secret>;

const KINDS: [&str; 11] = [
    "headers",
    "rateLimit",
    "ipAllowList",
    "ipWhiteList",
    "basicAuth",
    "redirectScheme",
    "stripPrefix",
    "addPrefix",
    "compress",
    "buffering",
    "chain",
];

pub fn convert(spec: &Value, secret: SecretLookup<'_>) -> Result<Converted, FieldError> {
    let Some(map) = spec.as_object() else {
        return Err(error(
            "spec",
            "must be an object naming one middleware kind",
        ));
    };
    if let Some(other) = map.keys().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(unsupported(&format!("spec.{other}")));
    }
    let kinds: Vec<(&String, &Value)> = map.iter().collect();
    let (kind, body) = match kinds.as_slice() {
        [one] => *one,
        [] => return Err(error("spec", "names no middleware kind")),
        [(a, _), (b, _), ..] => {
            return Err(error(
                &format!("spec.{b}"),
                format!("a Middleware has one kind; this one also has `{a}`"),
            ))
        }
    };
    let path = format!("spec.{kind}");
    let one = |c: MiddlewareConfig| Ok(Converted::Layers(vec![c]));
    match kind.as_str() {
        "headers" => headers(body, &path).map(Converted::Layers),
        "rateLimit" => rate_limit(body, &path).map(|c| Converted::Layers(c.into_iter().collect())),
        "ipAllowList" | "ipWhiteList" => one(MiddlewareConfig::IpAllow(ip_allow(body, &path)?)),
        "basicAuth" => one(MiddlewareConfig::BasicAuth(basic_auth(
            body, &path, secret,
        )?)),
        "redirectScheme" => one(MiddlewareConfig::RedirectScheme(redirect_scheme(
            body, &path,
        )?)),
        "stripPrefix" => one(MiddlewareConfig::StripPrefix(strip_prefix(body, &path)?)),
        "addPrefix" => {
            let mut f = Fields::new(body, &path)?;
            let prefix = f.text("prefix")?.unwrap_or("");
            if !prefix.starts_with('/') {
                return Err(error(&f.path("prefix"), "must start with `/`"));
            }
            let prefix = prefix.to_string();
            f.finish()?;
            one(MiddlewareConfig::AddPrefix(AddPrefixConfig { prefix }))
        }
        "compress" => one(MiddlewareConfig::Compress(compress(body, &path)?)),
        "buffering" => buffering(body, &path).map(|c| Converted::Layers(c.into_iter().collect())),
        _ => chain(body, &path),
    }
}

fn headers(body: &Value, path: &str) -> Result<Vec<MiddlewareConfig>, FieldError> {
    let mut f = Fields::new(body, path)?;
    let mut security = SecurityHeadersConfig::default();
    let mut request = HeadersConfig::default();
    for (name, value) in f.string_map("customRequestHeaders")? {
        // Traefik: an empty value removes the header.
        if value.is_empty() {
            request.remove.push(name);
        } else {
            request.set.insert(name, value);
        }
    }
    for (name, value) in f.string_map("customResponseHeaders")? {
        let value = Some(value).filter(|v| !v.is_empty());
        security.custom_response_headers.push((name, value));
    }
    // Traefik sends HSTS on HTTPS only unless forceSTSHeader; browsers
    // ignore it over plain HTTP (RFC 6797), so both read the same.
    f.boolean("forceSTSHeader")?;
    let sts_seconds = f.integer("stsSeconds")?;
    let include_subdomains = f.boolean("stsIncludeSubdomains")?;
    let preload = f.boolean("stsPreload")?;
    match sts_seconds {
        Some(seconds) if seconds < 0 => {
            return Err(error(&f.path("stsSeconds"), "must not be negative"))
        }
        Some(seconds) if seconds > 0 => {
            security.hsts = Some(HstsConfig {
                max_age: seconds as u64,
                include_subdomains,
                preload,
            })
        }
        _ => {}
    }
    if f.boolean("frameDeny")? {
        security.frame_options = Some("DENY".to_string());
    }
    if let Some(value) = f.text("customFrameOptionsValue")? {
        let upper = value.trim().to_ascii_uppercase();
        if upper != "DENY" && upper != "SAMEORIGIN" {
            return Err(error(
                &f.path("customFrameOptionsValue"),
                format!("`{value}`: xdpgate sends only DENY or SAMEORIGIN"),
            ));
        }
        security.frame_options = Some(upper);
    }
    security.content_type_nosniff = f.boolean("contentTypeNosniff")?;
    let mut extra = |name: &str, value: &str| {
        security
            .custom_response_headers
            .push((name.to_string(), Some(value.to_string())));
    };
    if f.boolean("browserXssFilter")? {
        extra("X-XSS-Protection", "1; mode=block");
    }
    if let Some(value) = f.text("customBrowserXSSValue")? {
        extra("X-XSS-Protection", value);
    }
    if let Some(value) = f.text("publicKey")? {
        extra("Public-Key-Pins", value);
    }
    if let Some(value) = f.text("featurePolicy")? {
        extra("Feature-Policy", value);
    }
    let text = |f: &mut Fields, name: &'static str| -> Result<Option<String>, FieldError> {
        Ok(f.text(name)?.filter(|v| !v.is_empty()).map(String::from))
    };
    security.content_security_policy = text(&mut f, "contentSecurityPolicy")?;
    security.content_security_policy_report_only = text(&mut f, "contentSecurityPolicyReportOnly")?;
    security.referrer_policy = text(&mut f, "referrerPolicy")?;
    security.permissions_policy = text(&mut f, "permissionsPolicy")?;
    if f.boolean("isDevelopment")? {
        // It turns HSTS and the host checks off: not what production asked.
        return Err(unsupported(&f.path("isDevelopment")));
    }
    f.finish()?;
    let mut layers = Vec::new();
    if security != SecurityHeadersConfig::default() {
        layers.push(MiddlewareConfig::SecurityHeaders(security));
    }
    if request != HeadersConfig::default() {
        layers.push(MiddlewareConfig::Headers(request));
    }
    Ok(layers)
}

/// Traefik's `ipStrategy` (absent: the TCP peer, `RemoteAddr`), and its
/// `ipv6Subnet`.
fn ip_strategy(body: Option<&Value>, path: &str) -> Result<(ClientSource, Option<u8>), FieldError> {
    let Some(body) = body else {
        return Ok((ClientSource::Peer, None));
    };
    let mut f = Fields::new(body, path)?;
    let depth = f.integer("depth")?.unwrap_or(0);
    if depth < 0 {
        return Err(error(&f.path("depth"), "must not be negative"));
    }
    let excluded = f.strings("excludedIPs")?;
    let subnet = match f.integer("ipv6Subnet")? {
        Some(bits) if (1..=128).contains(&bits) => Some(bits as u8),
        Some(_) => return Err(error(&f.path("ipv6Subnet"), "must be 1 to 128")),
        None => None,
    };
    let excluded_path = f.path("excludedIPs");
    f.finish()?;
    // Depth wins over excludedIPs, as in Traefik.
    let source = if depth > 0 {
        ClientSource::ForwardedDepth(depth as usize)
    } else if !excluded.is_empty() {
        if subnet.is_some() {
            return Err(error(
                &format!("{path}.ipv6Subnet"),
                "Traefik ignores it with excludedIPs; remove it",
            ));
        }
        ClientSource::ForwardedExcluding(nets(&excluded, &excluded_path)?)
    } else {
        ClientSource::Peer
    };
    Ok((source, subnet))
}

fn nets(items: &[String], path: &str) -> Result<Vec<IpNet>, FieldError> {
    items
        .iter()
        .enumerate()
        .map(|(i, text)| parse_net(text.trim()).map_err(|m| error(&format!("{path}[{i}]"), m)))
        .collect()
}

fn rate_limit(body: &Value, path: &str) -> Result<Option<MiddlewareConfig>, FieldError> {
    let mut f = Fields::new(body, path)?;
    let average = f.integer("average")?.unwrap_or(0);
    let burst = f.integer("burst")?.unwrap_or(1);
    let period = match f.get("period") {
        Some(v) => duration(v, &f.path("period"))?,
        None => Duration::from_secs(1),
    };
    let criterion_path = f.path("sourceCriterion");
    let criterion = f.get("sourceCriterion");
    if f.get("redis").is_some() {
        return Err(unsupported(&f.path("redis")));
    }
    f.finish()?;
    let (source, ipv6_subnet) = match criterion {
        None => (ClientSource::Peer, None),
        Some(body) => {
            let mut c = Fields::new(body, &criterion_path)?;
            if c.boolean("requestHost")? {
                return Err(unsupported(&c.path("requestHost")));
            }
            if c.text("requestHeaderName")?.is_some_and(|h| !h.is_empty()) {
                return Err(unsupported(&c.path("requestHeaderName")));
            }
            let strategy_path = c.path("ipStrategy");
            let strategy = c.get("ipStrategy");
            c.finish()?;
            ip_strategy(strategy, &strategy_path)?
        }
    };
    if average < 0 || burst < 0 {
        let field = if average < 0 { "average" } else { "burst" };
        return Err(error(&format!("{path}.{field}"), "must not be negative"));
    }
    if average == 0 {
        // Traefik: "0 means no rate limiting".
        return Ok(None);
    }
    let average =
        u32::try_from(average).map_err(|_| error(&format!("{path}.average"), "too large"))?;
    if period.is_zero() || (period / average).is_zero() {
        return Err(error(
            &format!("{path}.period"),
            "is too short for the average (under a nanosecond a request)",
        ));
    }
    Ok(Some(MiddlewareConfig::RateLimit(RateLimitConfig {
        average,
        period,
        // Traefik: a burst under 1 is 1.
        burst: u32::try_from(burst.max(1)).unwrap_or(u32::MAX),
        ipv6_subnet,
        max_keys: 65_536,
        source,
        // `redis` was refused above: its credentials come inline or from a
        // Secret, and ours come from files (`proxy.middlewares`).
        store: None,
    })))
}

fn ip_allow(body: &Value, path: &str) -> Result<IpAllowConfig, FieldError> {
    let mut f = Fields::new(body, path)?;
    let ranges = f.strings("sourceRange")?;
    let range_path = f.path("sourceRange");
    let strategy_path = f.path("ipStrategy");
    let strategy = f.get("ipStrategy");
    match f.integer("rejectStatusCode")? {
        None | Some(0) | Some(403) => {}
        Some(_) => return Err(unsupported(&f.path("rejectStatusCode"))),
    }
    f.finish()?;
    if ranges.is_empty() {
        return Err(error(&range_path, "is empty: the list would admit nobody"));
    }
    let (source, subnet) = ip_strategy(strategy, &strategy_path)?;
    if subnet.is_some() {
        return Err(unsupported(&format!("{strategy_path}.ipv6Subnet")));
    }
    Ok(IpAllowConfig {
        sets: Vec::new(),
        cidrs: nets(&ranges, &range_path)?,
        source,
    })
}

fn basic_auth(
    body: &Value,
    path: &str,
    lookup: SecretLookup<'_>,
) -> Result<BasicAuthConfig, FieldError> {
    let mut f = Fields::new(body, path)?;
    let secret_path = f.path("secret");
    let name = f.text("secret")?.unwrap_or("").to_string();
    let realm = f
        .text("realm")?
        .filter(|r| !r.is_empty())
        .unwrap_or("traefik");
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        return Err(error(
            &f.path("realm"),
            "must not hold `\"`, `\\` or control characters",
        ));
    }
    let realm = realm.to_string();
    let remove_header = f.boolean("removeHeader")?;
    let user_header = f
        .text("headerField")?
        .filter(|h| !h.is_empty())
        .map(String::from);
    if let Some(header) = &user_header {
        if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(error(&f.path("headerField"), "is not a header name"));
        }
    }
    f.finish()?;
    if name.is_empty() {
        return Err(error(&secret_path, "names no Secret"));
    }
    let secret = lookup(&name).ok_or_else(|| {
        error(
            &secret_path,
            format!("Secret `{name}` does not exist (or cannot be read)"),
        )
    })?;
    let users =
        secret_users(secret).map_err(|m| error(&secret_path, format!("Secret `{name}`: {m}")))?;
    Ok(BasicAuthConfig {
        users_file: Default::default(),
        users: Some(InlineUsers(users)),
        user_header,
        realm,
        remove_header,
    })
}

/// The htpasswd lines of a Secret, as Traefik reads them: a
/// `kubernetes.io/basic-auth` Secret's `username` and `password` (hashed
/// here, `{SHA}`), or the one key of any other Secret, one user a line.
/// Messages never quote the content.
fn secret_users(secret: &Secret) -> Result<String, String> {
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.as_bytes().to_vec());
    }
    if secret.type_.as_deref() == Some("kubernetes.io/basic-auth") {
        let (Some(user), Some(password)) = (data.get("username"), data.get("password")) else {
            return Err("must contain both username and password keys".to_string());
        };
        let user = String::from_utf8(user.clone()).map_err(|_| "username is not UTF-8")?;
        let hash = STANDARD.encode(Sha1::digest(password));
        return Ok(format!("{user}:{{SHA}}{hash}\n"));
    }
    if data.len() != 1 {
        return Err(format!(
            "has {} keys; Traefik reads a Secret with exactly one (e.g. `users`)",
            data.len()
        ));
    }
    let text = data
        .into_values()
        .next()
        .map(String::from_utf8)
        .and_then(Result::ok)
        .ok_or("the users are not UTF-8 text")?;
    if text.lines().all(|l| l.trim().is_empty()) {
        return Err("does not contain any credentials".to_string());
    }
    Ok(text)
}

fn redirect_scheme(body: &Value, path: &str) -> Result<RedirectSchemeConfig, FieldError> {
    let mut f = Fields::new(body, path)?;
    let scheme = f.text("scheme")?.unwrap_or("").to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(error(&f.path("scheme"), "must be https or http"));
    }
    let port = match f.get("port") {
        None => None,
        Some(v) => {
            let text = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            Some(
                text.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        error(&f.path("port"), format!("`{text}` is not a port number"))
                    })?,
            )
        }
    };
    let permanent = f.boolean("permanent")?;
    f.finish()?;
    Ok(RedirectSchemeConfig {
        scheme,
        port,
        permanent,
    })
}

fn strip_prefix(body: &Value, path: &str) -> Result<StripPrefixConfig, FieldError> {
    let mut f = Fields::new(body, path)?;
    let prefixes = f.strings("prefixes")?;
    if f.get("forceSlash").is_some_and(|v| v != &Value::Bool(true)) {
        return Err(unsupported(&f.path("forceSlash")));
    }
    let prefixes_path = f.path("prefixes");
    f.finish()?;
    if prefixes.is_empty() {
        return Err(error(&prefixes_path, "is empty"));
    }
    if let Some((i, _)) = prefixes
        .iter()
        .enumerate()
        .find(|(_, p)| !p.starts_with('/'))
    {
        return Err(error(
            &format!("{prefixes_path}[{i}]"),
            "must start with `/`",
        ));
    }
    // Traefik strips plain text: `/api` on `/apiv2/x` leaves `/v2/x`.
    // `forceSlash` (deprecated) changes nothing we can see: both give `/`
    // for an emptied path.
    Ok(StripPrefixConfig {
        prefixes,
        matching: PrefixMatch::Text,
    })
}

fn compress(body: &Value, path: &str) -> Result<CompressConfig, FieldError> {
    let mut f = Fields::new(body, path)?;
    let min = f.integer("minResponseBodyBytes")?.unwrap_or(1024);
    let min_bytes = u16::try_from(min)
        .map_err(|_| error(&f.path("minResponseBodyBytes"), "xdpgate takes 0 to 65535"))?;
    for name in [
        "excludedContentTypes",
        "includedContentTypes",
        "defaultEncoding",
    ] {
        let name: &'static str = name;
        if f.get(name).is_some() {
            return Err(unsupported(&f.path(name)));
        }
    }
    let mut encodings = f.strings("encodings")?;
    encodings.sort();
    if !encodings.is_empty() && encodings != ["br", "gzip", "zstd"] {
        return Err(error(
            &f.path("encodings"),
            "xdpgate always offers gzip, br and zstd; another list is not supported",
        ));
    }
    f.finish()?;
    Ok(CompressConfig { min_bytes })
}

fn buffering(body: &Value, path: &str) -> Result<Option<MiddlewareConfig>, FieldError> {
    let mut f = Fields::new(body, path)?;
    let max = f.integer("maxRequestBodyBytes")?.unwrap_or(0);
    // Where Traefik keeps a buffered body; xdpgate streams it.
    f.integer("memRequestBodyBytes")?;
    f.integer("memResponseBodyBytes")?;
    if f.integer("maxResponseBodyBytes")?.unwrap_or(0) != 0 {
        return Err(unsupported(&f.path("maxResponseBodyBytes")));
    }
    if f.text("retryExpression")?.is_some_and(|e| !e.is_empty()) {
        return Err(unsupported(&f.path("retryExpression")));
    }
    if max < 0 {
        return Err(error(
            &f.path("maxRequestBodyBytes"),
            "must not be negative",
        ));
    }
    f.finish()?;
    Ok((max > 0).then_some({
        MiddlewareConfig::BodyLimit(BodyLimitConfig {
            max_bytes: max as u64,
        })
    }))
}

fn chain(body: &Value, path: &str) -> Result<Converted, FieldError> {
    let mut f = Fields::new(body, path)?;
    let list_path = f.path("middlewares");
    let items = match f.get("middlewares") {
        Some(Value::Array(items)) => items.clone(),
        None => Vec::new(),
        Some(_) => return Err(error(&list_path, "must be a list")),
    };
    f.finish()?;
    let mut refs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{list_path}[{i}]");
        let mut r = Fields::new(item, &at)?;
        let name = r.text("name")?.unwrap_or("").to_string();
        let namespace = r
            .text("namespace")?
            .filter(|n| !n.is_empty())
            .map(String::from);
        r.finish()?;
        if name.is_empty() {
            return Err(error(&at, "names no middleware"));
        }
        if name.contains('@') {
            return Err(error(
                &format!("{at}.name"),
                "references to other providers are not supported",
            ));
        }
        refs.push((namespace, name));
    }
    if refs.is_empty() {
        return Err(error(&list_path, "is empty"));
    }
    Ok(Converted::Chain(refs))
}
