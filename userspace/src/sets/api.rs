//! The `cloudflare` source's refresh from Cloudflare's API (or a mirror of
//! it): a conditional GET of the JSON list on an interval, retried with
//! exponential backoff after a failure. Only fetching and decoding live here;
//! validation and bookkeeping are the source's.
use std::{error::Error as StdError, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{header, Request, StatusCode};
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use ipnet::IpNet;
use rustls_pki_types::{pem::PemObject as _, CertificateDer};
use serde::Deserialize;

use super::{
    parse::{normalise, parse_entry},
    source::Fetched,
    CloudflareSpec, SourceHandle,
};

/// Cloudflare's answer is about 1 KiB; anything this large is not it.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// The first retry after a failure comes no later than this.
const FIRST_RETRY: Duration = Duration::from_secs(30);

/// Refreshes the source now, then every `spec.refresh`, at once on
/// `refresh_now`, and after a failure with backoff. Returns when the source
/// is removed or the service is gone.
pub(crate) async fn refresh(source: SourceHandle, spec: CloudflareSpec) {
    if spec.url.starts_with("http://") {
        tracing::warn!(
            url = %spec.url,
            "fetching the Cloudflare list over plain HTTP: anyone on the path can change it"
        );
    }
    let mut requests = source.refresh_requests();
    let mut delay = Duration::ZERO;
    let mut backoff: Option<Duration> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            changed = requests.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        requests.borrow_and_update();
        let Some(etag) = source.etag() else { return };
        let fetched = fetch(&spec, etag.as_deref()).await;
        let failed = matches!(fetched, Fetched::Failed(_));
        if !source.apply(fetched).await {
            return;
        }
        backoff = failed.then(|| next_backoff(backoff, spec.refresh));
        delay = with_jitter(backoff.unwrap_or(spec.refresh), source.id());
    }
}

/// The wait before the next retry: `min(refresh, 30s)` after the first
/// failure, doubling up to `refresh`.
pub(crate) fn next_backoff(previous: Option<Duration>, refresh: Duration) -> Duration {
    match previous {
        None => refresh.min(FIRST_RETRY),
        Some(previous) => previous.saturating_mul(2).min(refresh),
    }
}

/// Up to 10% more, so that nodes started together do not ask together.
fn with_jitter(delay: Duration, salt: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let spread = (u64::from(nanos) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 1000;
    delay + delay.mul_f64(spread as f64 / 10_000.0)
}

/// One conditional GET of the list, bounded in time and size.
pub(crate) async fn fetch(spec: &CloudflareSpec, etag: Option<&str>) -> Fetched {
    match tokio::time::timeout(spec.timeout, fetch_unbounded(spec, etag)).await {
        Ok(fetched) => fetched,
        Err(_) => Fetched::Failed(format!(
            "no complete answer within {}",
            humantime::format_duration(spec.timeout)
        )),
    }
}

async fn fetch_unbounded(spec: &CloudflareSpec, etag: Option<&str>) -> Fetched {
    let client = match client(spec.ca_file.as_deref()) {
        Ok(client) => client,
        Err(reason) => return Fetched::Failed(reason),
    };
    let mut request = Request::get(spec.url.as_str())
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("xdpgate/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let request = match request.body(Empty::<Bytes>::new()) {
        Ok(request) => request,
        Err(e) => return Fetched::Failed(format!("invalid request to {}: {e}", spec.url)),
    };
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(e) => return Fetched::Failed(error_chain(&e)),
    };
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return Fetched::NotModified;
    }
    if !status.is_success() {
        return Fetched::Failed(format!("HTTP {status}"));
    }
    let header_etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => return Fetched::Failed(format!("reading the answer: {}", error_chain(&*e))),
    };
    decode(&body, header_etag)
}

type ApiClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTPS (or plain HTTP) client trusting the web roots, or only the
/// certificates in `ca_file`.
fn client(ca_file: Option<&Path>) -> Result<ApiClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let tls = match ca_file {
        None => builder.with_webpki_roots().with_no_client_auth(),
        Some(path) => builder
            .with_root_certificates(roots_from(path)?)
            .with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector))
}

fn roots_from(path: &Path) -> Result<rustls::RootCertStore, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {shown}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("ca_file {shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("ca_file {shown} holds no PEM certificate"));
    }
    Ok(roots)
}

#[derive(Deserialize)]
struct ApiResponse {
    success: bool,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
    result: Option<ApiResult>,
}

#[derive(Deserialize)]
struct ApiResult {
    #[serde(default)]
    ipv4_cidrs: Vec<String>,
    #[serde(default)]
    ipv6_cidrs: Vec<String>,
    etag: Option<String>,
}

/// Decodes a 2xx answer. The entity tag is the `ETag` header if there was
/// one, else `result.etag` made into a valid (quoted) entity tag.
pub(crate) fn decode(body: &[u8], header_etag: Option<String>) -> Fetched {
    let response: ApiResponse = match serde_json::from_slice(body) {
        Ok(response) => response,
        Err(e) => return Fetched::Failed(format!("malformed answer: {e}")),
    };
    if !response.success {
        let errors: Vec<String> = response.errors.iter().map(describe_api_error).collect();
        return Fetched::Failed(if errors.is_empty() {
            "the API answered success: false".to_string()
        } else {
            format!("the API answered success: false: {}", errors.join("; "))
        });
    }
    let Some(result) = response.result else {
        return Fetched::Failed("malformed answer: no `result`".to_string());
    };
    let mut prefixes: Vec<IpNet> = Vec::new();
    for (field, list) in [
        ("ipv4_cidrs", &result.ipv4_cidrs),
        ("ipv6_cidrs", &result.ipv6_cidrs),
    ] {
        for (i, text) in list.iter().enumerate() {
            match parse_entry(text.trim()) {
                Some(net) => prefixes.push(net),
                None => {
                    return Fetched::Failed(format!(
                        "{field}[{i}]: \"{text}\" is not an IP address or CIDR"
                    ))
                }
            }
        }
    }
    let etag = header_etag.or_else(|| result.etag.map(|tag| quote_etag(&tag)));
    Fetched::List {
        prefixes: normalise(prefixes),
        etag,
    }
}

/// `{"code":10000,"message":"Authentication error"}` as
/// `10000 Authentication error`.
fn describe_api_error(error: &serde_json::Value) -> String {
    match (
        error.get("code"),
        error.get("message").and_then(|m| m.as_str()),
    ) {
        (Some(code), Some(message)) => format!("{code} {message}"),
        (None, Some(message)) => message.to_string(),
        _ => error.to_string(),
    }
}

/// `If-None-Match` takes quoted entity tags; the JSON's `etag` is bare.
fn quote_etag(tag: &str) -> String {
    if tag.starts_with('"') || tag.starts_with("W/\"") {
        tag.to_string()
    } else {
        format!("\"{tag}\"")
    }
}

/// `client error (Connect): tcp connect error: Connection refused (os error
/// 111)`: hyper's top-level errors say little without their causes.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        normalise(list.iter().map(|s| s.parse::<IpNet>().unwrap()))
    }

    #[test]
    fn decodes_cloudflares_answer_and_prefers_the_etag_header() {
        let body = br#"{"result":{"ipv4_cidrs":["173.245.48.0/20","103.21.244.0/22"],
            "ipv6_cidrs":["2400:cb00::/32"],"etag":"38f79d050aa027e3be3865e495dcc9bc"},
            "success":true,"errors":[],"messages":[]}"#;
        assert_eq!(
            decode(body, None),
            Fetched::List {
                prefixes: nets(&["103.21.244.0/22", "173.245.48.0/20", "2400:cb00::/32"]),
                etag: Some("\"38f79d050aa027e3be3865e495dcc9bc\"".into()),
            }
        );
        let Fetched::List { etag, .. } = decode(body, Some("W/\"abc\"".into())) else {
            panic!("valid answer");
        };
        assert_eq!(etag.as_deref(), Some("W/\"abc\""));
    }

    #[test]
    fn names_what_is_wrong_with_a_bad_answer() {
        let failed = |body: &[u8]| match decode(body, None) {
            Fetched::Failed(reason) => reason,
            other => panic!("expected a failure, got {other:?}"),
        };
        assert!(failed(b"<html>").starts_with("malformed answer: "));
        assert_eq!(
            failed(
                br#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}]}"#
            ),
            "the API answered success: false: 10000 Authentication error"
        );
        assert_eq!(
            failed(br#"{"success":true,"result":{"ipv4_cidrs":["10.0.0.0/8","10.0.0.0/40"]}}"#),
            "ipv4_cidrs[1]: \"10.0.0.0/40\" is not an IP address or CIDR"
        );
        assert_eq!(
            failed(br#"{"success":true}"#),
            "malformed answer: no `result`"
        );
    }

    #[test]
    fn backoff_starts_at_the_smaller_of_refresh_and_30s_and_doubles_up_to_refresh() {
        let hour = Duration::from_secs(3600);
        let mut steps = vec![];
        let mut backoff = None;
        for _ in 0..9 {
            backoff = Some(next_backoff(backoff, hour));
            steps.push(backoff.unwrap().as_secs());
        }
        assert_eq!(steps, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        let short = Duration::from_millis(200);
        assert_eq!(next_backoff(None, short), short);
        assert_eq!(next_backoff(Some(short), short), short);
    }

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        let base = Duration::from_secs(100);
        for salt in 0..50 {
            let d = with_jitter(base, salt);
            assert!(d >= base && d <= base + Duration::from_secs(10), "{d:?}");
        }
    }
}
