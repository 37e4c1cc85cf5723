//! `proxy.middlewares`: each name maps to exactly one kind
//! (`security_headers`, `rate_limit`, `ip_allow`, `basic_auth`,
//! `redirect_scheme`, `body_limit`, `strip_prefix`, `add_prefix`, `headers`,
//! `compress`)
//! and its settings. Values are checked here (header names and values,
//! policy keywords, sets that exist, numbers in range) so the proxy can
//! build each middleware without surprises; files (htpasswd) are the
//! proxy's to read.
use std::{collections::BTreeMap, str::FromStr};

use hyper::header::{HeaderName, HeaderValue};

use super::{check_name, rate_limit_store::read_store, targets::route_path, unknown};
use crate::{
    config::{
        values::{boolean, duration, file_path, suggest},
        yaml::Val,
        ConfigError,
    },
    policy::parse_net,
    proxy::{
        AddPrefixConfig, BasicAuthConfig, BodyLimitConfig, ClientSource, CompressConfig,
        HeadersConfig, HstsConfig, IpAllowConfig, MiddlewareConfig, PrefixMatch, RateLimitConfig,
        RedirectSchemeConfig, SecurityHeadersConfig, StripPrefixConfig,
    },
    sets::SetSpec,
};

const KINDS: [&str; 10] = [
    "security_headers",
    "rate_limit",
    "ip_allow",
    "basic_auth",
    "redirect_scheme",
    "body_limit",
    "strip_prefix",
    "add_prefix",
    "headers",
    "compress",
];

/// Keys in rate-limit buckets are at most this many, whatever the file says
/// (about 100 bytes each).
const MAX_RATE_LIMIT_KEYS: u64 = 10_000_000;

pub(super) fn read_middlewares(
    v: Val,
    path: &str,
    sets: &[SetSpec],
) -> Result<BTreeMap<String, MiddlewareConfig>, ConfigError> {
    let table = v.named_table(path)?;
    let mut middlewares = BTreeMap::new();
    for (name, key_line, v) in table.entries() {
        let path = table.key_path(name);
        check_name("middleware", name, &path, key_line)?;
        let kinds = v.table(&path, &KINDS)?;
        let entries: Vec<_> = kinds.entries().collect();
        let (kind, _, settings) = match entries.as_slice() {
            [one] => *one,
            [] => {
                return Err(v.error(
                    &path,
                    format!(
                        "middleware `{name}` has no kind: give exactly one of {}",
                        KINDS.join(", ")
                    ),
                ))
            }
            [(first, ..), (second, line, _), ..] => {
                return Err(ConfigError::new(
                    &kinds.key_path(second),
                    Some(*line),
                    format!(
                        "middleware `{name}` has two kinds, `{first}` and `{second}`: a \
                         middleware does one thing; define two and list both on the route"
                    ),
                ))
            }
        };
        let path = kinds.key_path(kind);
        let config = match kind {
            "security_headers" => {
                MiddlewareConfig::SecurityHeaders(read_security_headers(settings, &path)?)
            }
            "rate_limit" => MiddlewareConfig::RateLimit(read_rate_limit(settings, &path, name)?),
            "ip_allow" => MiddlewareConfig::IpAllow(read_ip_allow(settings, &path, sets)?),
            "basic_auth" => MiddlewareConfig::BasicAuth(read_basic_auth(settings, &path)?),
            "redirect_scheme" => {
                MiddlewareConfig::RedirectScheme(read_redirect_scheme(settings, &path)?)
            }
            "body_limit" => MiddlewareConfig::BodyLimit(read_body_limit(settings, &path)?),
            "strip_prefix" => MiddlewareConfig::StripPrefix(read_strip_prefix(settings, &path)?),
            "add_prefix" => MiddlewareConfig::AddPrefix(read_add_prefix(settings, &path)?),
            "compress" => MiddlewareConfig::Compress(read_compress(settings, &path)?),
            _ => MiddlewareConfig::Headers(read_headers(settings, &path)?),
        };
        middlewares.insert(name.to_string(), config);
    }
    Ok(middlewares)
}

/// A route's `middlewares`: names defined under `proxy.middlewares`, none
/// twice.
pub(super) fn route_middlewares(
    v: Val,
    path: &str,
    defined: &BTreeMap<String, MiddlewareConfig>,
) -> Result<Vec<String>, ConfigError> {
    let mut names: Vec<String> = Vec::new();
    for (path, item) in v.list(path, "[headers, ratelimit]")? {
        let name = item.text(&path, "a middleware name")?.trim();
        if !defined.contains_key(name) {
            return Err(item.error(
                &path,
                unknown(
                    "middleware",
                    name,
                    defined.keys().map(String::as_str),
                    "it is not defined under proxy.middlewares",
                ),
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(item.error(&path, format!("middleware `{name}` is listed twice")));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

// ---- security_headers and headers ----

fn read_security_headers(v: Val, path: &str) -> Result<SecurityHeadersConfig, ConfigError> {
    let table = v.table(
        path,
        &[
            "hsts",
            "content_type_nosniff",
            "frame_options",
            "frame_ancestors",
            "referrer_policy",
            "permissions_policy",
            "content_security_policy",
            "content_security_policy_report_only",
            "cross_origin_opener_policy",
            "cross_origin_resource_policy",
            "custom_response_headers",
        ],
    )?;
    let mut config = SecurityHeadersConfig::default();
    if let Some(v) = table.get("hsts") {
        config.hsts = Some(read_hsts(v, &table.key_path("hsts"))?);
    }
    if let Some(v) = table.get("content_type_nosniff") {
        config.content_type_nosniff = boolean(v, &table.key_path("content_type_nosniff"))?;
    }
    if let Some(v) = table.get("frame_options") {
        let path = table.key_path("frame_options");
        config.frame_options = Some(keyword(v, &path, &["DENY", "SAMEORIGIN"], true)?);
    }
    if let Some(v) = table.get("referrer_policy") {
        const POLICIES: [&str; 8] = [
            "no-referrer",
            "no-referrer-when-downgrade",
            "origin",
            "origin-when-cross-origin",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin",
            "unsafe-url",
        ];
        let path = table.key_path("referrer_policy");
        let text = header_text(v, &path)?;
        // A list is allowed: browsers use the last policy they know.
        for policy in text.split(',').map(str::trim) {
            if !POLICIES.contains(&policy) {
                return Err(v.error(
                    &path,
                    format!(
                        "`{policy}` is not a referrer policy{}",
                        suggest(policy, &POLICIES)
                    ),
                ));
            }
        }
        config.referrer_policy = Some(text);
    }
    if let Some(v) = table.get("cross_origin_opener_policy") {
        let path = table.key_path("cross_origin_opener_policy");
        let known = [
            "same-origin",
            "same-origin-allow-popups",
            "noopener-allow-popups",
            "unsafe-none",
        ];
        config.cross_origin_opener_policy = Some(keyword(v, &path, &known, false)?);
    }
    if let Some(v) = table.get("cross_origin_resource_policy") {
        let path = table.key_path("cross_origin_resource_policy");
        let known = ["same-site", "same-origin", "cross-origin"];
        config.cross_origin_resource_policy = Some(keyword(v, &path, &known, false)?);
    }
    let free_text = [
        ("frame_ancestors", &mut config.frame_ancestors),
        ("permissions_policy", &mut config.permissions_policy),
        (
            "content_security_policy",
            &mut config.content_security_policy,
        ),
        (
            "content_security_policy_report_only",
            &mut config.content_security_policy_report_only,
        ),
    ];
    for (key, field) in free_text {
        if let Some(v) = table.get(key) {
            *field = Some(header_text(v, &table.key_path(key))?);
        }
    }
    if let Some(v) = table.get("custom_response_headers") {
        let path = table.key_path("custom_response_headers");
        let headers = v.named_table(&path)?;
        for (name, key_line, v) in headers.entries() {
            let path = headers.key_path(name);
            check_header_name(name, &path, key_line)?;
            let value = match &v.node.value {
                crate::config::yaml::Value::Null => None,
                _ => Some(header_text(v, &path)?).filter(|t| !t.is_empty()),
            };
            config
                .custom_response_headers
                .push((name.to_string(), value));
        }
    }
    Ok(config)
}

fn read_hsts(v: Val, path: &str) -> Result<HstsConfig, ConfigError> {
    let table = v.table(path, &["max_age", "include_subdomains", "preload"])?;
    let Some(max_age) = table.get("max_age") else {
        return Err(v.error(
            path,
            "hsts needs `max_age` (seconds), e.g. `{ max_age: 63072000 }` for two years",
        ));
    };
    let mut hsts = HstsConfig {
        max_age: whole(max_age, &table.key_path("max_age"), 0, u64::from(u32::MAX))?,
        include_subdomains: false,
        preload: false,
    };
    if let Some(v) = table.get("include_subdomains") {
        hsts.include_subdomains = boolean(v, &table.key_path("include_subdomains"))?;
    }
    if let Some(v) = table.get("preload") {
        hsts.preload = boolean(v, &table.key_path("preload"))?;
    }
    Ok(hsts)
}

fn read_headers(v: Val, path: &str) -> Result<HeadersConfig, ConfigError> {
    let table = v.table(path, &["set", "remove"])?;
    let mut config = HeadersConfig::default();
    if let Some(v) = table.get("set") {
        let set = v.named_table(&table.key_path("set"))?;
        for (name, key_line, v) in set.entries() {
            let path = set.key_path(name);
            check_header_name(name, &path, key_line)?;
            config.set.insert(name.to_string(), header_text(v, &path)?);
        }
    }
    if let Some(v) = table.get("remove") {
        for (path, item) in v.list(&table.key_path("remove"), "[X-Debug]")? {
            let name = item.text(&path, "a header name")?.trim();
            check_header_name(name, &path, item.line)?;
            config.remove.push(name.to_string());
        }
    }
    if config.set.is_empty() && config.remove.is_empty() {
        return Err(v.error(
            path,
            "headers does nothing: give `set: { X-Name: value }` or `remove: [X-Name]`",
        ));
    }
    Ok(config)
}

fn check_header_name(name: &str, path: &str, line: usize) -> Result<(), ConfigError> {
    HeaderName::from_str(name).map(|_| ()).map_err(|_| {
        ConfigError::new(
            path,
            Some(line),
            format!("`{name}` is not an HTTP header name"),
        )
    })
}

/// Text that can be sent as a header value.
fn header_text(v: Val, path: &str) -> Result<String, ConfigError> {
    let text = v.text(path, "text")?.trim();
    HeaderValue::from_str(text)
        .map_err(|_| v.error(path, "this cannot be sent in a header (control characters)"))?;
    Ok(text.to_string())
}

/// One of `known`; `upper` keywords are matched in any case and written in
/// upper case, the others must be written as listed.
fn keyword(v: Val, path: &str, known: &[&str], upper: bool) -> Result<String, ConfigError> {
    let text = v.text(path, &known.join(" or "))?.trim();
    let wanted = if upper {
        text.to_ascii_uppercase()
    } else {
        text.to_string()
    };
    if known.contains(&wanted.as_str()) {
        return Ok(wanted);
    }
    Err(v.error(
        path,
        format!(
            "`{text}` is not one of {}{}",
            known.join(", "),
            suggest(&wanted, known)
        ),
    ))
}

// ---- rate_limit and ip_allow ----

fn read_rate_limit(v: Val, path: &str, name: &str) -> Result<RateLimitConfig, ConfigError> {
    let table = v.table(
        path,
        &[
            "average",
            "period",
            "burst",
            "ipv6_subnet",
            "max_keys",
            "store",
        ],
    )?;
    let Some(average) = table.get("average") else {
        return Err(v.error(
            path,
            "rate_limit needs `average` (requests per period), e.g. \
             `{ average: 100, period: 1m, burst: 200 }`",
        ));
    };
    let mut config = RateLimitConfig {
        average: whole(average, &table.key_path("average"), 1, u64::from(u32::MAX))? as u32,
        period: std::time::Duration::from_secs(1),
        burst: 1,
        ipv6_subnet: None,
        max_keys: 65_536,
        source: ClientSource::Settled,
        store: None,
    };
    if let Some(v) = table.get("period") {
        let path = table.key_path("period");
        config.period = duration(v, &path)?;
        if (config.period / config.average).is_zero() {
            return Err(v.error(
                &path,
                "the period is too short for the average: each request would get less \
                 than a nanosecond",
            ));
        }
    }
    if let Some(v) = table.get("burst") {
        config.burst = whole(v, &table.key_path("burst"), 1, u64::from(u32::MAX))? as u32;
    }
    if let Some(v) = table.get("ipv6_subnet") {
        config.ipv6_subnet = Some(whole(v, &table.key_path("ipv6_subnet"), 1, 128)? as u8);
    }
    if let Some(v) = table.get("max_keys") {
        config.max_keys = whole(v, &table.key_path("max_keys"), 16, MAX_RATE_LIMIT_KEYS)? as usize;
    }
    if let Some(v) = table.get("store") {
        config.store = read_store(v, &table.key_path("store"), name)?;
    }
    Ok(config)
}

fn read_ip_allow(v: Val, path: &str, sets: &[SetSpec]) -> Result<IpAllowConfig, ConfigError> {
    let table = v.table(path, &["sets", "cidrs"])?;
    let mut config = IpAllowConfig::default();
    if let Some(v) = table.get("sets") {
        for (path, item) in v.list(&table.key_path("sets"), "[admins]")? {
            let name = item.text(&path, "a set name")?.trim();
            if !sets.iter().any(|set| set.name == name) {
                return Err(item.error(
                    &path,
                    unknown(
                        "set",
                        name,
                        sets.iter().map(|s| s.name.as_str()),
                        "it is not defined under filter.sets",
                    ),
                ));
            }
            if config.sets.iter().any(|s| s == name) {
                return Err(item.error(&path, format!("set `{name}` is listed twice")));
            }
            config.sets.push(name.to_string());
        }
    }
    if let Some(v) = table.get("cidrs") {
        for (path, item) in v.list(&table.key_path("cidrs"), "[192.0.2.0/24]")? {
            let text = item.text(&path, "an address or CIDR")?;
            config
                .cidrs
                .push(parse_net(text).map_err(|message| item.error(&path, message))?);
        }
    }
    if config.sets.is_empty() && config.cidrs.is_empty() {
        return Err(v.error(
            path,
            "ip_allow admits nobody: give `sets: [admins]` and/or `cidrs: [192.0.2.0/24]`",
        ));
    }
    Ok(config)
}

// ---- basic_auth, redirect_scheme, body_limit, prefixes ----

fn read_basic_auth(v: Val, path: &str) -> Result<BasicAuthConfig, ConfigError> {
    let table = v.table(path, &["users_file", "realm", "remove_header"])?;
    let Some(file) = table.get("users_file") else {
        return Err(v.error(
            path,
            "basic_auth needs `users_file`, an htpasswd file (e.g. made with `htpasswd -B`)",
        ));
    };
    let mut config = BasicAuthConfig {
        users_file: file_path(file, &table.key_path("users_file"))?,
        users: None,
        user_header: None,
        realm: "xdpgate".to_string(),
        remove_header: false,
    };
    if let Some(v) = table.get("realm") {
        let path = table.key_path("realm");
        let realm = header_text(v, &path)?;
        if realm.is_empty() || realm.contains(['"', '\\']) {
            return Err(v.error(&path, "a realm is non-empty text without `\"` or `\\`"));
        }
        config.realm = realm;
    }
    if let Some(v) = table.get("remove_header") {
        config.remove_header = boolean(v, &table.key_path("remove_header"))?;
    }
    Ok(config)
}

fn read_redirect_scheme(v: Val, path: &str) -> Result<RedirectSchemeConfig, ConfigError> {
    let table = v.table(path, &["scheme", "port", "permanent"])?;
    let mut config = RedirectSchemeConfig {
        scheme: "https".to_string(),
        port: None,
        permanent: false,
    };
    if let Some(v) = table.get("scheme") {
        config.scheme = keyword(v, &table.key_path("scheme"), &["https", "http"], false)?;
    }
    if let Some(v) = table.get("port") {
        config.port = Some(whole(v, &table.key_path("port"), 1, 65535)? as u16);
    }
    if let Some(v) = table.get("permanent") {
        config.permanent = boolean(v, &table.key_path("permanent"))?;
    }
    Ok(config)
}

fn read_body_limit(v: Val, path: &str) -> Result<BodyLimitConfig, ConfigError> {
    let table = v.table(path, &["max_bytes"])?;
    let Some(max) = table.get("max_bytes") else {
        return Err(v.error(
            path,
            "body_limit needs `max_bytes`, e.g. `10MiB` or 1048576",
        ));
    };
    let path = table.key_path("max_bytes");
    let text = max.text(&path, "a size like 10MiB")?;
    let max_bytes = byte_size(text).map_err(|message| max.error(&path, message))?;
    Ok(BodyLimitConfig { max_bytes })
}

/// `1048576`, `512KiB`, `10MiB`, `1GiB`, `10MB` (powers of 1000), `64k`.
fn byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 1048576, 512KiB or 10MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "m" | "M" | "MiB" => 1 << 20,
        "g" | "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{other}` is not a size unit: use B, KiB, MiB, GiB, KB, MB or GB{}",
                suggest(other, &["B", "KiB", "MiB", "GiB", "KB", "MB", "GB"])
            ))
        }
    };
    let bytes = number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes == 0 {
        return Err("a limit of 0 bytes would refuse every body; give a size".into());
    }
    Ok(bytes)
}

fn read_strip_prefix(v: Val, path: &str) -> Result<StripPrefixConfig, ConfigError> {
    let table = v.table(path, &["prefixes"])?;
    let mut prefixes = Vec::new();
    if let Some(v) = table.get("prefixes") {
        for (path, item) in v.list(&table.key_path("prefixes"), "[/api]")? {
            let text = item.text(&path, "a path prefix like /api")?;
            prefixes.push(route_path(text.trim()).map_err(|m| item.error(&path, m))?);
        }
    }
    if prefixes.is_empty() {
        return Err(v.error(path, "strip_prefix needs `prefixes`, e.g. `[/api]`"));
    }
    Ok(StripPrefixConfig {
        prefixes,
        matching: PrefixMatch::Segments,
    })
}

fn read_add_prefix(v: Val, path: &str) -> Result<AddPrefixConfig, ConfigError> {
    let table = v.table(path, &["prefix"])?;
    let Some(prefix) = table.get("prefix") else {
        return Err(v.error(path, "add_prefix needs `prefix`, e.g. `/backend`"));
    };
    let path = table.key_path("prefix");
    let text = prefix.text(&path, "a path prefix like /backend")?;
    Ok(AddPrefixConfig {
        prefix: route_path(text.trim()).map_err(|m| prefix.error(&path, m))?,
    })
}

fn read_compress(v: Val, path: &str) -> Result<CompressConfig, ConfigError> {
    let table = v.table(path, &["min_bytes"])?;
    let mut config = CompressConfig { min_bytes: 1024 };
    if let Some(v) = table.get("min_bytes") {
        config.min_bytes = whole(v, &table.key_path("min_bytes"), 0, u64::from(u16::MAX))? as u16;
    }
    Ok(config)
}

/// A whole number in `min..=max`.
fn whole(v: Val, path: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let text = v.text(path, "a whole number")?;
    match text.trim().replace('_', "").parse::<u64>() {
        Ok(n) if n < min => Err(v.error(path, format!("{n} is too small: use at least {min}"))),
        Ok(n) if n > max => Err(v.error(path, format!("{n} is too large: use at most {max}"))),
        Ok(n) => Ok(n),
        Err(_) => Err(v.error(path, format!("`{text}` is not a whole number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::byte_size;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(byte_size("1048576"), Ok(1 << 20));
        assert_eq!(byte_size("10MiB"), Ok(10 << 20));
        assert_eq!(byte_size("10 MB"), Ok(10_000_000));
        assert_eq!(byte_size("64k"), Ok(65536));
        assert!(byte_size("0").unwrap_err().contains("0 bytes"));
        assert!(byte_size("10Mb").unwrap_err().contains("did you mean"));
        assert!(byte_size("lots").is_err());
    }
}
