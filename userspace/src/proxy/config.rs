//! The proxy's configuration, as the `config` module reads it from the
//! `proxy:` section. Plain data with defaults; validation happens in
//! `config`, and every subsystem of the proxy takes what it needs from here.
use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

pub use super::middleware::config::*;
pub use super::request::path::{Encoded, PathParameters, PathPolicy};
pub use super::route_rules::{
    HeaderEdits, PathChange, RedirectAction, RewriteAction, RouteActions, RouteConditions,
};

#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// Names of filter sets whose members (as TCP peers) are believed when
    /// they send `X-Forwarded-*` or `CF-Connecting-IP`. Empty: nobody is.
    pub trusted: Vec<String>,
    /// Sorted by name.
    pub entrypoints: Vec<EntrypointConfig>,
    /// Upstream services by name; routes name one of these, or give a
    /// literal `host:port`, which gets a service with default settings named
    /// after it.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Services that spread requests over other services by weight
    /// (`proxy.services.<name>.weighted`), by name. A name is either here or
    /// in `services`, never both; routes may name either.
    pub weighted: BTreeMap<String, WeightedServiceConfig>,
    /// In file order.
    pub routes: Vec<RouteConfig>,
    /// Where requests go that match no route; `None` answers 404.
    pub default_service: Option<String>,
    pub drain: DrainConfig,
    pub access_log: AccessLogConfig,
    /// Middlewares by name; routes list the ones they use.
    pub middlewares: BTreeMap<String, MiddlewareConfig>,
    /// Kubernetes Ingress objects as an extra source of routes, services
    /// and certificates (`proxy.ingress`); `None` reads none.
    pub ingress: Option<IngressConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EntrypointConfig {
    pub name: String,
    /// One or more addresses; `[::]:443` also accepts IPv4 (dual stack).
    pub listen: Vec<SocketAddr>,
    /// Plain entrypoints only: answer every request with a redirect to this
    /// (TLS) entrypoint, keeping host, path and query.
    pub redirect: Option<RedirectConfig>,
    /// Present on TLS entrypoints.
    pub tls: Option<TlsConfig>,
    pub limits: Limits,
    /// What a request must look like before it is routed.
    pub requests: RequestPolicy,
}

/// An entrypoint's request policy: the path, header names, upgrades.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestPolicy {
    pub path: PathPolicy,
    pub underscore_headers: UnderscoreHeaders,
    /// `Upgrade` protocols forwarded, lower case. Default `websocket`;
    /// never `h2c` (the config reader refuses it).
    pub upgrades: Vec<String>,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        RequestPolicy {
            path: PathPolicy::default(),
            underscore_headers: UnderscoreHeaders::default(),
            upgrades: vec!["websocket".to_string()],
        }
    }
}

impl RequestPolicy {
    pub fn allows_upgrade(&self, protocol: &str) -> bool {
        self.upgrades
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(protocol))
    }
}

/// Header names with characters other than letters, digits and `-`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnderscoreHeaders {
    Keep,
    /// Removed before routing (nginx's default).
    #[default]
    Drop,
    /// 400.
    Reject,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RedirectConfig {
    /// The entrypoint name redirected to; its first listen port is used
    /// (omitted from the URL when it is 443).
    pub to: String,
    /// 301 or 308 (default; keeps the method and body).
    pub code: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TlsConfig {
    /// Certificate/key PEM pairs. The certificate for a handshake is chosen by
    /// SNI against each certificate's DNS names (exact, then wildcard); the
    /// first pair is the default for unknown or missing SNI. Empty: a
    /// self-signed certificate is generated at start (and logged as such).
    pub certs: Vec<CertPair>,
    /// Require a client certificate signed by one of these CAs (PEM bundle),
    /// as for Cloudflare Authenticated Origin Pulls. A client without a valid
    /// certificate fails the handshake and gets no HTTP response.
    pub client_ca: Option<PathBuf>,
    /// Oldest version accepted: TLS 1.2 (default) or 1.3.
    pub min_version: TlsVersion,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Per-entrypoint limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Time to read a whole request head, from its first byte (slowloris
    /// defence). Default 10s.
    pub header_read_timeout: Duration,
    /// Longest pause between two pieces of a request body; past it the
    /// client gets 408 and the connection is closed. Default 30s.
    pub body_read_timeout: Duration,
    /// Largest request head; larger gets 431. Default 32 KiB.
    pub max_header_bytes: usize,
    /// Idle keep-alive connections are closed after this. Default 60s.
    pub idle_timeout: Duration,
    /// Concurrent connections; more wait in the listen backlog. Default 10000.
    pub max_connections: usize,
    /// HTTP/2 concurrent streams per connection. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// TLS handshake must complete within this. Default 10s.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            h2_max_concurrent_streams: 100,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Envoy's default connection limit per upstream cluster. A pool smaller
/// than the concurrency the proxy sees makes every request beyond it open
/// and close a TCP connection to the upstream: with 64 (the first default),
/// HTTP/2 clients running 640 streams at once spent most of the proxy's time
/// in the kernel doing just that (docs/benchmarks).
pub const DEFAULT_MAX_IDLE_CONNECTIONS: usize = 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// `host:port`; the host is re-resolved every `resolve_interval`.
    pub target: String,
    /// Speak HTTP/2 without TLS (h2c) to the upstream, e.g. for gRPC.
    pub h2c: bool,
    /// Default 5s.
    pub connect_timeout: Duration,
    /// From the request sent to the response head received. Default 60s.
    pub response_header_timeout: Duration,
    /// Pooled idle upstream connections are closed after this. Default 90s.
    pub idle_timeout: Duration,
    /// Default 5s.
    pub resolve_interval: Duration,
    /// An endpoint that fails to connect is left out for this long. Default 10s.
    pub eject_for: Duration,
    /// HTTP/1.1 connections kept open per upstream address for reuse.
    /// Past it, a connection is closed after its exchange, so requests
    /// beyond this concurrency pay a new connection each. Default 1024.
    pub max_idle_connections: usize,
    /// A fixed list of endpoints that replaces resolving `target` (an
    /// Ingress backend read from EndpointSlices). `None`: resolve `target`.
    pub endpoints: Option<Vec<SocketAddr>>,
    /// Keep a client on one endpoint with a cookie (Traefik's
    /// `loadBalancer.sticky.cookie`). `None`: round robin for every request.
    pub sticky: Option<StickyConfig>,
}

impl ServiceConfig {
    /// A service with default settings for a literal `host:port`.
    pub fn for_target(target: &str) -> Self {
        ServiceConfig {
            name: target.to_string(),
            target: target.to_string(),
            h2c: false,
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            resolve_interval: Duration::from_secs(5),
            eject_for: Duration::from_secs(10),
            max_idle_connections: DEFAULT_MAX_IDLE_CONNECTIONS,
            endpoints: None,
            sticky: None,
        }
    }
}

/// A service that spreads requests over other services by weight, like
/// Traefik's `TraefikService` `weighted` (and Gateway API HTTPRoute weighted
/// `backendRefs`): a smooth weighted round robin, so 90/10 sends 9 of every
/// 10 requests to the first member, evenly interleaved, never at random.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedServiceConfig {
    pub name: String,
    /// In config order. A member names a service under `services` or
    /// another weighted service (no cycles). Weights may be 0 (the member
    /// gets nothing), but not all of them.
    pub members: Vec<WeightedMember>,
    /// Keep a client on one member with a cookie (Traefik's
    /// `weighted.sticky.cookie`).
    pub sticky: Option<StickyConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedMember {
    pub service: String,
    pub weight: u32,
}

/// Sticky sessions by cookie. The cookie's value is a hash that names an
/// endpoint (or member) currently in the pool; it never carries an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StickyConfig {
    pub cookie: StickyCookie,
}

/// Traefik's `sticky.cookie` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StickyCookie {
    /// Default: `_` and six hex digits of a hash of the service name, as
    /// Traefik derives its default (see [`StickyConfig::for_service`]).
    pub name: String,
    /// `Secure`: sent by the browser over HTTPS only. Default false.
    pub secure: bool,
    /// `HttpOnly`: hidden from scripts. Default false.
    pub http_only: bool,
    /// `SameSite`; `None` leaves the attribute out.
    pub same_site: Option<SameSite>,
    /// `Max-Age` in seconds; `None` makes a session cookie.
    pub max_age: Option<u64>,
    /// `Path`. Default `/`.
    pub path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

impl StickyConfig {
    /// The defaults for service `service`: its derived cookie name, no
    /// attributes but `Path=/`.
    pub fn for_service(service: &str) -> StickyConfig {
        StickyConfig {
            cookie: StickyCookie {
                name: super::sticky::default_cookie_name(service),
                secure: false,
                http_only: false,
                same_site: None,
                max_age: None,
                path: "/".to_string(),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathType {
    /// Element-wise prefix (Kubernetes Ingress `Prefix`): `/foo` matches
    /// `/foo` and `/foo/bar`, not `/foobar`.
    #[default]
    Prefix,
    /// The whole path, exactly (Ingress `Exact`).
    Exact,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// For logs and metrics (`router` label). Default `route-<n>` (1-based,
    /// file order).
    pub name: String,
    /// `api.example.com`, `*.example.com` (one label), or `None` for any host.
    pub host: Option<String>,
    /// Starts with `/`. Default `/`.
    pub path: String,
    pub path_type: PathType,
    /// A name in `services`, or a literal `host:port`.
    pub service: String,
    /// Entrypoints this route serves; empty = every entrypoint that does not
    /// redirect.
    pub entrypoints: Vec<String>,
    /// Names in `ProxyConfig::middlewares`, applied in this order.
    pub middlewares: Vec<String>,
    /// Method, header and query conditions (Gateway API routes only).
    pub conditions: RouteConditions,
    /// Header edits, redirect, rewrite (Gateway API routes only).
    pub actions: RouteActions,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DrainConfig {
    /// After SIGTERM, /readyz fails at once but new connections are still
    /// accepted for this long (so load balancers notice). Default 5s.
    pub accept_grace: Duration,
    /// Then in-flight requests get this long to finish. Default 30s.
    pub grace_timeout: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            accept_grace: Duration::from_secs(5),
            grace_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogConfig {
    /// One JSON line per request. Default on.
    pub enabled: bool,
    /// A file to append to; `None` writes to stdout.
    pub path: Option<PathBuf>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            path: None,
        }
    }
}

/// `proxy.ingress`.
#[derive(Clone, Debug, PartialEq)]
pub struct IngressConfig {
    /// Ingresses whose `spec.ingressClassName` (or legacy
    /// `kubernetes.io/ingress.class` annotation) is this are ours.
    pub class: String,
    /// Entrypoints the Ingress routes serve; empty = every one that does not
    /// redirect.
    pub entrypoints: Vec<String>,
    /// The TLS entrypoint that gets the certificates of `spec.tls`; default
    /// the first TLS entrypoint. `None`: there is none, `spec.tls` is reported.
    pub tls_entrypoint: Option<String>,
    /// Upstreams are the ready endpoints of the Service's EndpointSlices
    /// instead of its cluster DNS name.
    pub endpoint_slices: bool,
    /// A directory of YAML files holding Ingress, Secret and EndpointSlice
    /// objects.
    pub files: Option<PathBuf>,
    /// How often the files are looked at. Default 1s.
    pub poll_interval: Duration,
    /// Watch the API server.
    pub kubernetes: Option<KubernetesConfig>,
    /// An Ingress (or a Traefik `chain`) may name Traefik Middleware
    /// objects of other namespaces. Default false, as Traefik's
    /// `allowCrossNamespace`.
    pub allow_cross_namespace: bool,
    /// Also read the Gateway API (GatewayClass, Gateway, HTTPRoute,
    /// ReferenceGrant); `None`: not.
    pub gateway: Option<GatewayConfig>,
}

/// `proxy.ingress.gateway_api`: which GatewayClasses are ours, and the
/// entrypoints a Gateway's listeners can land on.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayConfig {
    /// A GatewayClass with this `spec.controllerName` is ours.
    pub controller_name: String,
    /// Every entrypoint, for mapping listeners onto them by port.
    pub entrypoints: Vec<GatewayEntrypoint>,
}

/// An entrypoint as a Gateway listener sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayEntrypoint {
    pub name: String,
    pub ports: Vec<u16>,
    pub tls: bool,
    /// It redirects every request (`redirect:`), so no route is served there.
    pub redirects: bool,
}

impl IngressConfig {
    pub fn new(class: &str) -> Self {
        IngressConfig {
            class: class.to_string(),
            entrypoints: Vec::new(),
            tls_entrypoint: None,
            endpoint_slices: false,
            files: None,
            poll_interval: Duration::from_secs(1),
            allow_cross_namespace: false,
            kubernetes: None,
            gateway: None,
        }
    }
}

/// `proxy.ingress.kubernetes`.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesConfig {
    /// A kubeconfig file; `None` uses the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces watched; empty = all.
    pub namespaces: Vec<String>,
    /// Every object is listed again this often, on top of the watch.
    pub resync: Duration,
    /// Without a kubeconfig: the directory holding the service account's
    /// `token`, `ca.crt` and `namespace` files.
    pub service_account_dir: PathBuf,
    /// What is written into `.status.loadBalancer.ingress` of our Ingresses.
    pub publish_status: PublishStatus,
}

/// Where the kubelet mounts a pod's service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `proxy.ingress.kubernetes.publish_status`: the addresses published in
/// the status of each Ingress of our class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishStatus {
    /// No status is written.
    Off,
    /// These IP addresses and host names, as given.
    Addresses(Vec<String>),
    /// The addresses of every Ready Node whose labels include `selector`:
    /// per Node, the first of `address_types` it has.
    Nodes {
        selector: BTreeMap<String, String>,
        address_types: Vec<String>,
    },
}

impl Default for PublishStatus {
    fn default() -> Self {
        PublishStatus::Nodes {
            selector: BTreeMap::new(),
            address_types: vec!["ExternalIP".to_string(), "InternalIP".to_string()],
        }
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            kubeconfig: None,
            namespaces: Vec::new(),
            resync: Duration::from_secs(300),
            service_account_dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
            publish_status: PublishStatus::default(),
        }
    }
}
