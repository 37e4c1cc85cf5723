//! What each middleware kind is configured with, as the config reader
//! hands it over: plain data, already validated. The runtime side of each
//! kind lives in its own file of this module.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use ipnet::IpNet;

/// One named middleware under `proxy.middlewares`: exactly one kind.
#[derive(Clone, Debug, PartialEq)]
pub enum MiddlewareConfig {
    SecurityHeaders(SecurityHeadersConfig),
    RateLimit(RateLimitConfig),
    IpAllow(IpAllowConfig),
    BasicAuth(BasicAuthConfig),
    RedirectScheme(RedirectSchemeConfig),
    BodyLimit(BodyLimitConfig),
    StripPrefix(StripPrefixConfig),
    AddPrefix(AddPrefixConfig),
    Headers(HeadersConfig),
    Compress(CompressConfig),
}

impl MiddlewareConfig {
    /// The kind as written in the config file (and in the `kind` label).
    pub fn kind(&self) -> &'static str {
        match self {
            MiddlewareConfig::SecurityHeaders(_) => "security_headers",
            MiddlewareConfig::RateLimit(_) => "rate_limit",
            MiddlewareConfig::IpAllow(_) => "ip_allow",
            MiddlewareConfig::BasicAuth(_) => "basic_auth",
            MiddlewareConfig::RedirectScheme(_) => "redirect_scheme",
            MiddlewareConfig::BodyLimit(_) => "body_limit",
            MiddlewareConfig::StripPrefix(_) => "strip_prefix",
            MiddlewareConfig::AddPrefix(_) => "add_prefix",
            MiddlewareConfig::Headers(_) => "headers",
            MiddlewareConfig::Compress(_) => "compress",
        }
    }
}

/// Response headers that tell browsers how to treat the site. Every field
/// is opt-in: nothing is sent that the file does not ask for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityHeadersConfig {
    pub hsts: Option<HstsConfig>,
    /// `X-Content-Type-Options: nosniff`.
    pub content_type_nosniff: bool,
    /// `X-Frame-Options`: `DENY` or `SAMEORIGIN`.
    pub frame_options: Option<String>,
    /// A `frame-ancestors` directive, appended to the Content-Security-Policy
    /// (or making one of its own).
    pub frame_ancestors: Option<String>,
    pub referrer_policy: Option<String>,
    pub permissions_policy: Option<String>,
    pub content_security_policy: Option<String>,
    pub content_security_policy_report_only: Option<String>,
    pub cross_origin_opener_policy: Option<String>,
    pub cross_origin_resource_policy: Option<String>,
    /// Response headers to set (`Some`) or remove (`None`, written as an
    /// empty string, as in Traefik's `customResponseHeaders`).
    pub custom_response_headers: Vec<(String, Option<String>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HstsConfig {
    pub max_age: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

/// GCRA: `average` requests per `period`, up to `burst` at once, per client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub average: u32,
    /// Default 1s (as Traefik).
    pub period: Duration,
    /// Default 1 (as Traefik).
    pub burst: u32,
    /// IPv6 clients are grouped by this prefix length (e.g. 64); `None`
    /// keys every address on its own.
    pub ipv6_subnet: Option<u8>,
    /// Most client keys remembered; the least recently seen is forgotten
    /// first. Default 65536.
    pub max_keys: usize,
    /// Which address is the client. Default: the one the forwarded-header
    /// logic settled on.
    pub source: ClientSource,
    /// Keep the limit's state in Redis/Valkey, shared by every node, instead
    /// of in this process (Traefik 3.4's `rateLimit.redis`). `None`: local.
    pub store: Option<RedisStoreConfig>,
}

/// `rate_limit.store.redis`: where the shared limit lives and what to do
/// when it cannot be asked in time. Secrets are read from files, at build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `host:port`.
    pub address: String,
    /// Speak TLS to the store.
    pub tls: Option<RedisTlsConfig>,
    pub username_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    /// Database number. Default 0.
    pub db: i64,
    /// The budget per request for the store's answer; past it, `on_error`
    /// decides. Default 20ms.
    pub timeout: Duration,
    pub on_error: StoreFallback,
    /// Connections, each multiplexed; requests take them in turn. Default 4.
    pub pool: usize,
    /// Keys are this and the client's address. Default
    /// `xdpgate:rate_limit:<middleware>:`.
    pub key_prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisTlsConfig {
    /// A PEM bundle of the CAs trusted for the store's certificate; `None`:
    /// the system's roots.
    pub ca: Option<PathBuf>,
}

/// What a shared rate limit does when its store does not answer in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreFallback {
    /// Decide with this node's own limiter (the same quota, per node).
    #[default]
    Local,
    /// Let the request through.
    Allow,
    /// Refuse it with 429.
    Deny,
}

impl StoreFallback {
    /// Every fallback, in the order of their discriminants.
    pub const ALL: [StoreFallback; 3] = [
        StoreFallback::Local,
        StoreFallback::Allow,
        StoreFallback::Deny,
    ];

    /// The `outcome` label of `xdpgate_rate_limit_store_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            StoreFallback::Local => "local",
            StoreFallback::Allow => "allow",
            StoreFallback::Deny => "deny",
        }
    }
}

/// Which address a `rate_limit` or `ip_allow` judges. The config file only
/// has the default; the others carry Traefik's `ipStrategy` over exactly
/// (crate::ingress::traefik).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClientSource {
    /// The client as the forwarded-header logic settled it.
    #[default]
    Settled,
    /// The TCP peer, whoever it is (Traefik's default `RemoteAddr`).
    Peer,
    /// The `n`th address (1 = last) of `X-Forwarded-For` as it arrived from
    /// a trusted peer (empty from any other): Traefik's `ipStrategy.depth`.
    ForwardedDepth(usize),
    /// The last address of that `X-Forwarded-For` outside these ranges:
    /// Traefik's `ipStrategy.excludedIPs`.
    ForwardedExcluding(Vec<IpNet>),
}

/// Clients whose (real) IP is in one of `sets` or `cidrs` pass; the rest get 403.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpAllowConfig {
    pub sets: Vec<String>,
    pub cidrs: Vec<IpNet>,
    pub source: ClientSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuthConfig {
    /// An htpasswd file (bcrypt, `{SHA}`, `$apr1$`), re-read when it changes.
    /// Not read when `users` is given.
    pub users_file: PathBuf,
    /// The htpasswd lines themselves (from a Kubernetes Secret).
    pub users: Option<InlineUsers>,
    /// A request header that carries the authenticated user upstream
    /// (Traefik's `headerField`).
    pub user_header: Option<String>,
    /// Default `xdpgate`.
    pub realm: String,
    /// Remove `Authorization` before the request goes upstream.
    pub remove_header: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectSchemeConfig {
    /// `https` (default) or `http`.
    pub scheme: String,
    /// Port to put in the Location; `None` leaves the port out.
    pub port: Option<u16>,
    /// 301/308 when true, 302/307 when false (the 30x for GET and HEAD, the
    /// 3xx that keeps the method for the rest), as Traefik does.
    pub permanent: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyLimitConfig {
    pub max_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripPrefixConfig {
    /// Tried in order; the first that matches is removed.
    pub prefixes: Vec<String>,
    /// How a prefix matches. Our own `strip_prefix` matches whole path
    /// segments (`/api` strips `/api/x`, not `/apiv2`); a Traefik
    /// Middleware object's matches as plain text, as in Traefik.
    pub matching: PrefixMatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixMatch {
    /// Whole segments: the prefix is the path, or is followed by `/`.
    Segments,
    /// Traefik's: any string prefix of the path (`/api` on `/apiv2/x`
    /// leaves `/v2/x`); the rest gets a leading `/` if it lacks one.
    Text,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddPrefixConfig {
    pub prefix: String,
}

/// Request headers to set or remove before the request goes upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadersConfig {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// Response compression (gzip, br, zstd), negotiated per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompressConfig {
    /// Smaller responses (by their declared length) are sent as they are.
    /// Default 1024.
    pub min_bytes: u16,
}

/// htpasswd lines held in memory. Never printed, not even in a debug log.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineUsers(pub String);

impl std::fmt::Debug for InlineUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InlineUsers({} lines)", self.0.lines().count())
    }
}
