//! Upstream pools: where a routed request goes once the proxy knows its
//! service. One pool per service re-resolves the service's `host:port` every
//! `resolve_interval`, spreads requests round robin over the addresses it
//! got, keeps HTTP/1.1 keep-alive connections (or one multiplexed h2c
//! connection) per address, leaves out addresses that fail to connect for
//! `eject_for`, and retries a request on another address only where that
//! cannot run it twice. It does not route, rewrite forwarded headers or
//! speak TLS to upstreams; the caller hands it a finished request.
//!
//! Connections are made with `hyper::client::conn` handshakes and pooled
//! here rather than through hyper-util's legacy `Client`, because the retry
//! rule needs what that client hides: whether a failed request was written
//! at all (`try_send_request` hands back a request that never left, and the
//! pool knows whether the connection was fresh or reused), which endpoint a
//! failure belongs to (for ejection and the error), and how many idle
//! connections each endpoint holds (for `endpoints()`). A request is retried
//! on another endpoint only when it was never sent (connect failure, or a
//! connection that closed before the request was written) or when it is
//! idempotent and bodiless, so that it can be rebuilt from its head. A
//! response timeout is never retried: the upstream got the request and is
//! slow, and a second copy would only add to its load.
//!
//! Ejection is a hint, not an outage: when every resolved endpoint is
//! ejected they are still tried (the one whose ejection ends first leads),
//! and only a service with no address at all answers `NoEndpoint` (503).
mod endpoint;
mod resolve;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use hyper::{body::Incoming, header, http, Method, Request, Response, StatusCode, Version};
use tokio::sync::watch;

use super::config::ServiceConfig;
use endpoint::{Endpoint, Failure};
pub use resolve::{Resolve, SystemResolver};

/// Request bodies handed to an upstream.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// Attempts per request, each on a different endpoint: the first try and at
/// most two retries.
const MAX_ATTEMPTS: usize = 3;

/// The pools of every configured service.
pub struct Upstreams {
    services: BTreeMap<String, Arc<Upstream>>,
    resolver: Arc<dyn Resolve>,
    released: AtomicBool,
}

impl Upstreams {
    /// One pool per service, each with a background task that re-resolves
    /// the service's target every `resolve_interval` with the system
    /// resolver, keeping the last good address list when resolution fails.
    ///
    /// # Panics
    /// Outside a tokio runtime (the tasks are spawned on the current one).
    pub fn new(services: &BTreeMap<String, ServiceConfig>) -> Upstreams {
        Upstreams::with_resolver(services, Arc::new(SystemResolver))
    }

    /// As [`Upstreams::new`], with names resolved by `resolver`.
    pub fn with_resolver(
        services: &BTreeMap<String, ServiceConfig>,
        resolver: Arc<dyn Resolve>,
    ) -> Upstreams {
        let services = services
            .iter()
            .map(|(name, config)| {
                let upstream = Upstream::new(config.clone(), resolver.clone());
                (name.clone(), upstream)
            })
            .collect();
        Upstreams::holding(services, resolver)
    }

    /// For a configuration reload: a new set of pools that shares the pools
    /// (resolved endpoints, idle connections, ejections) of services whose
    /// configuration is unchanged and starts the others. `self` keeps
    /// serving the requests it has until it is dropped.
    pub fn rebuild(&self, services: &BTreeMap<String, ServiceConfig>) -> Upstreams {
        let services = services
            .iter()
            .map(|(name, config)| {
                let upstream = match self.services.get(name) {
                    Some(old) if old.config == *config => old.clone(),
                    _ => Upstream::new(config.clone(), self.resolver.clone()),
                };
                (name.clone(), upstream)
            })
            .collect();
        Upstreams::holding(services, self.resolver.clone())
    }

    fn holding(services: BTreeMap<String, Arc<Upstream>>, resolver: Arc<dyn Resolve>) -> Self {
        for upstream in services.values() {
            upstream.hold();
        }
        Upstreams {
            services,
            resolver,
            released: AtomicBool::new(false),
        }
    }

    pub fn get(&self, service: &str) -> Option<Arc<Upstream>> {
        self.services.get(service).cloned()
    }

    /// Stops the background tasks of the pools no other `Upstreams` (from
    /// `rebuild`) still uses. Requests keep working on the addresses last
    /// resolved. Also done on drop; a second call does nothing.
    pub fn shutdown(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            for upstream in self.services.values() {
                upstream.release();
            }
        }
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.services.iter()).finish()
    }
}

/// One service's pool.
pub struct Upstream {
    config: ServiceConfig,
    resolver: Arc<dyn Resolve>,
    /// The last good resolution, in the resolver's order.
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Becomes true once the first resolution has finished, good or not, so
    /// that requests arriving at start-up wait for it instead of failing.
    resolved: watch::Sender<bool>,
    resolve_failing: AtomicBool,
    next: AtomicUsize,
    maintenance: Mutex<Maintenance>,
}

/// Who keeps this pool's background task running.
#[derive(Default)]
struct Maintenance {
    holders: usize,
    task: Option<tokio::task::AbortHandle>,
}

/// What `Upstream::endpoints` reports of one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointState {
    pub address: SocketAddr,
    /// Set while the endpoint is left out after a failed connect.
    pub ejected_until: Option<Instant>,
    /// Open connections ready for a request (HTTP/1.1 keep-alive, or the
    /// one h2c connection).
    pub idle_connections: usize,
}

/// Why an upstream gave no response. Each variant names the service and,
/// where one was tried, the endpoint; `status` is what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("service `{service}`: no upstream address (its target resolved to nothing)")]
    NoEndpoint { service: String },
    #[error("service `{service}`: connecting to {endpoint} failed: {source}")]
    Connect {
        service: String,
        endpoint: SocketAddr,
        source: std::io::Error,
    },
    #[error("service `{service}`: connecting to {endpoint} timed out after {timeout:?}")]
    ConnectTimeout {
        service: String,
        endpoint: SocketAddr,
        timeout: Duration,
    },
    #[error("service `{service}`: {endpoint} sent no response head within {timeout:?}")]
    ResponseTimeout {
        service: String,
        endpoint: SocketAddr,
        timeout: Duration,
    },
    #[error("service `{service}`: the exchange with {endpoint} broke: {source}")]
    Protocol {
        service: String,
        endpoint: SocketAddr,
        source: hyper::Error,
    },
    /// The client's side failed: its request body broke off (or hyper
    /// refused the request as given) while it was being forwarded. Not the
    /// upstream's fault, so neither retried nor a 5xx.
    #[error("service `{service}`: the request could not be forwarded to {endpoint}: {source}")]
    Request {
        service: String,
        endpoint: SocketAddr,
        source: hyper::Error,
    },
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::NoEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Connect { .. } | UpstreamError::Protocol { .. } => {
                StatusCode::BAD_GATEWAY
            }
            UpstreamError::ConnectTimeout { .. } | UpstreamError::ResponseTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            UpstreamError::Request { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::NoEndpoint { .. } => "no_endpoint",
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::ConnectTimeout { .. } => "connect_timeout",
            UpstreamError::ResponseTimeout { .. } => "response_timeout",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::Request { .. } => "request",
        }
    }

    /// Whether an idempotent, bodiless request that failed this way may be
    /// sent again elsewhere.
    fn allows_replay(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::Protocol { .. }
        )
    }
}

impl Upstream {
    fn new(config: ServiceConfig, resolver: Arc<dyn Resolve>) -> Arc<Upstream> {
        Arc::new(Upstream {
            config,
            resolver,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            resolved: watch::Sender::new(false),
            resolve_failing: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            maintenance: Mutex::new(Maintenance::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The addresses last resolved, in resolver order.
    pub fn endpoints(&self) -> Vec<EndpointState> {
        let now = Instant::now();
        self.endpoints
            .load()
            .iter()
            .map(|endpoint| endpoint.state(now))
            .collect()
    }

    /// Sends `request` to one endpoint, round robin over those not ejected,
    /// on a pooled connection when one is idle, and returns the response head
    /// (its body streams) with the endpoint that answered. Bodies are never
    /// buffered. The request's version and target are adapted to the
    /// upstream: HTTP/1.1 in origin form, or HTTP/2 with `:authority` taken
    /// from `Host`. A `101 Switching Protocols` response leaves its
    /// connection out of the pool, so `hyper::upgrade::on` works on it.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, SocketAddr), UpstreamError> {
        self.send_preferring(request, None).await
    }

    /// As [`Upstream::send`], trying `preferred` first when it is one of
    /// this pool's endpoints and not ejected (a sticky session); any other
    /// address is ignored, so a client cannot steer a request off the pool.
    /// Retries go round robin as usual.
    pub async fn send_preferring(
        &self,
        request: Request<ProxyBody>,
        preferred: Option<SocketAddr>,
    ) -> Result<(Response<Incoming>, SocketAddr), UpstreamError> {
        let mut candidates = self.candidates().await?;
        if let Some(preferred) = preferred {
            let now = Instant::now();
            let found = candidates.iter().position(|endpoint| {
                endpoint.address == preferred && endpoint.ejected_until(now).is_none()
            });
            if let Some(index) = found {
                let endpoint = candidates.remove(index);
                candidates.insert(0, endpoint);
            }
        }
        let (mut head, body) = request.into_parts();
        adapt_head(&mut head, &self.config);
        // A copy of the head to send again elsewhere, only when there is
        // an elsewhere: cloning the header map costs every request.
        let replay =
            (candidates.len() > 1 && is_replayable(&head.method, &body)).then(|| head.clone());
        let mut pending = Some(Request::from_parts(head, body));
        let mut last_error = None;
        for endpoint in candidates.iter().take(MAX_ATTEMPTS) {
            let Some(request) = pending.take().or_else(|| replay.as_ref().map(rebuild)) else {
                break;
            };
            match endpoint.send(&self.config, request).await {
                Ok(response) => return Ok((response, endpoint.address)),
                Err(Failure { error, unsent }) => {
                    let again = unsent.is_some() || (replay.is_some() && error.allows_replay());
                    tracing::debug!(service = %self.config.name, retry = again, "{error}");
                    pending = unsent;
                    last_error = Some(error);
                    if !again {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| self.no_endpoint()))
    }

    /// Every endpoint in the order to try them: the admitted ones round robin,
    /// then the ejected ones, soonest re-admission first.
    async fn candidates(&self) -> Result<Vec<Arc<Endpoint>>, UpstreamError> {
        let mut all = self.endpoints.load_full();
        if all.is_empty() && !*self.resolved.borrow() {
            let mut resolved = self.resolved.subscribe();
            let first = resolved.wait_for(|done| *done);
            let _ = tokio::time::timeout(self.config.connect_timeout, first).await;
            all = self.endpoints.load_full();
        }
        if all.is_empty() {
            return Err(self.no_endpoint());
        }
        let now = Instant::now();
        let (mut admitted, mut ejected): (Vec<_>, Vec<_>) = all
            .iter()
            .map(|endpoint| (endpoint.ejected_until(now), endpoint.clone()))
            .partition(|(until, _)| until.is_none());
        if !admitted.is_empty() {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % admitted.len();
            admitted.rotate_left(start);
        }
        ejected.sort_by_key(|(until, _)| *until);
        Ok(admitted
            .into_iter()
            .chain(ejected)
            .map(|(_, endpoint)| endpoint)
            .collect())
    }

    fn no_endpoint(&self) -> UpstreamError {
        UpstreamError::NoEndpoint {
            service: self.config.name.clone(),
        }
    }

    fn lock_maintenance(&self) -> MutexGuard<'_, Maintenance> {
        self.maintenance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One more `Upstreams` uses this pool; starts its task if it has none.
    fn hold(self: &Arc<Self>) {
        let mut maintenance = self.lock_maintenance();
        maintenance.holders += 1;
        if maintenance.task.is_none() {
            let task = resolve::maintain(Arc::downgrade(self), self.config.clone());
            maintenance.task = Some(tokio::spawn(task).abort_handle());
        }
    }

    /// One `Upstreams` let go; the last one stops the task.
    fn release(&self) {
        let mut maintenance = self.lock_maintenance();
        maintenance.holders = maintenance.holders.saturating_sub(1);
        if maintenance.holders == 0 {
            if let Some(task) = maintenance.task.take() {
                task.abort();
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.lock_maintenance().task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("service", &self.config.name)
            .field("target", &self.config.target)
            .field("endpoints", &self.endpoints())
            .finish()
    }
}

/// GET, HEAD, OPTIONS, PUT, DELETE and TRACE with no body can be sent twice
/// without changing the outcome, and rebuilt from their head alone.
fn is_replayable(method: &Method, body: &ProxyBody) -> bool {
    use hyper::body::Body;
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    idempotent && (body.is_end_stream() || body.size_hint().exact() == Some(0))
}

fn rebuild(head: &http::request::Parts) -> Request<ProxyBody> {
    let body = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    Request::from_parts(head.clone(), body)
}

/// Puts the request in the shape the upstream's protocol wants: HTTP/1.1
/// in origin form with a `Host`, or HTTP/2 with an absolute `http://` URI
/// whose authority comes from the request (`Host`, or its own URI).
fn adapt_head(head: &mut http::request::Parts, config: &ServiceConfig) {
    let authority = head
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            let host = head.headers.get(header::HOST)?;
            host.to_str().ok().map(str::to_string)
        })
        .unwrap_or_else(|| config.target.clone());
    if head.method == Method::CONNECT {
        return;
    }
    let path = head
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    if config.h2c {
        head.version = Version::HTTP_2;
        if let Ok(uri) = format!("http://{authority}{path}").parse() {
            head.uri = uri;
        }
    } else {
        head.version = Version::HTTP_11;
        if head.uri.authority().is_some() {
            if let Ok(uri) = path.parse() {
                head.uri = uri;
            }
        }
        if !head.headers.contains_key(header::HOST) {
            if let Ok(value) = header::HeaderValue::from_str(&authority) {
                head.headers.insert(header::HOST, value);
            }
        }
    }
}
