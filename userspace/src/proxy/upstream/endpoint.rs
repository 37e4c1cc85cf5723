//! One upstream address: its pooled connections (HTTP/1.1 keep-alive, or a
//! single multiplexed h2c connection), the exchange of one request on them
//! with the response-header timeout, and its passive ejection after a failed
//! connect. Whether to try another address is decided a level up; this
//! level reports whether the request left at all.
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::{http1, http2, TrySendError},
    Request, Response, StatusCode,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, sync::watch};

use super::{EndpointState, ProxyBody, UpstreamError};
use crate::proxy::config::ServiceConfig;

/// h2c connections are pinged while streams are open, so a backend that
/// vanished mid-stream (a long gRPC call) is noticed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

pub(super) struct Endpoint {
    pub(super) address: SocketAddr,
    ejected_until: Mutex<Option<Instant>>,
    http1: Mutex<Vec<Http1Conn>>,
    http2: Mutex<Option<Http2Conn>>,
    /// One h2c connect at a time, so concurrent requests share it.
    http2_connecting: tokio::sync::Mutex<()>,
}

/// A pooled HTTP/1.1 connection. It goes back in the pool as soon as its
/// response head arrived and becomes ready again once that response's body
/// has been read; checking out picks only ready ones.
struct Http1Conn {
    sender: http1::SendRequest<WatchedBody>,
    /// When the sweep first saw it ready (idle); `None` while busy.
    ready_since: Option<Instant>,
}

struct Http2Conn {
    sender: http2::SendRequest<WatchedBody>,
    id: u64,
    last_used: Instant,
}

/// A request that got no response, and the request itself if it was never
/// written (then it can go to another endpoint as it is).
pub(super) struct Failure {
    pub(super) error: UpstreamError,
    pub(super) unsent: Option<Request<ProxyBody>>,
}

enum Exchange {
    /// The connection closed before the request was written.
    Unsent(Request<ProxyBody>, hyper::Error),
    Failed(UpstreamError),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Endpoint {
    pub(super) fn new(address: SocketAddr) -> Endpoint {
        Endpoint {
            address,
            ejected_until: Mutex::new(None),
            http1: Mutex::new(Vec::new()),
            http2: Mutex::new(None),
            http2_connecting: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn ejected_until(&self, now: Instant) -> Option<Instant> {
        lock(&self.ejected_until).filter(|until| *until > now)
    }

    pub(super) fn state(&self, now: Instant) -> EndpointState {
        let http1 = lock(&self.http1)
            .iter()
            .filter(|c| c.sender.is_ready() && !c.sender.is_closed())
            .count();
        let http2 = lock(&self.http2)
            .as_ref()
            .is_some_and(|c| !c.sender.is_closed());
        EndpointState {
            address: self.address,
            ejected_until: self.ejected_until(now),
            idle_connections: http1 + usize::from(http2),
        }
    }

    /// Closes connections idle for `idle_timeout` and forgets closed ones.
    pub(super) fn sweep(&self, now: Instant, idle_timeout: Duration) {
        lock(&self.http1).retain_mut(|conn| conn.keep(now, idle_timeout));
        let mut http2 = lock(&self.http2);
        let stale = http2.as_ref().is_some_and(|conn| {
            conn.sender.is_closed() || now.duration_since(conn.last_used) >= idle_timeout
        });
        if stale {
            // Streams still open on it finish: hyper shuts an h2 connection
            // down gracefully once its last handle is gone.
            *http2 = None;
        }
    }

    pub(super) async fn send(
        &self,
        config: &ServiceConfig,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Failure> {
        if config.h2c {
            self.send_http2(config, request).await
        } else {
            self.send_http1(config, request).await
        }
    }

    async fn send_http1(
        &self,
        config: &ServiceConfig,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Failure> {
        loop {
            let pooled = self.checkout_http1(Instant::now(), config.idle_timeout);
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => match self.connect_http1(config).await {
                    Ok(sender) => sender,
                    Err(error) => return Err(failed_unsent(error, request)),
                },
            };
            let (watched, progress) = WatchedBody::wrap(request);
            let sent = sender.try_send_request(watched);
            match self.exchange(config, sent, progress).await {
                Ok(response) => {
                    // An upgraded connection belongs to the caller now.
                    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                        self.checkin_http1(sender, config.max_idle_connections);
                    }
                    return Ok(response);
                }
                // A pooled connection the upstream closed while it sat idle:
                // not this endpoint's failure, try another connection.
                Err(Exchange::Unsent(back, _)) if reused => request = back,
                Err(Exchange::Unsent(back, source)) => {
                    return Err(failed_unsent(self.protocol(config, source), back))
                }
                Err(Exchange::Failed(error)) => {
                    return Err(Failure {
                        error,
                        unsent: None,
                    })
                }
            }
        }
    }

    async fn send_http2(
        &self,
        config: &ServiceConfig,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Failure> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (mut sender, id, reused) = match self.http2_sender(config).await {
                Ok(found) => found,
                Err(error) => return Err(failed_unsent(error, request)),
            };
            let (watched, progress) = WatchedBody::wrap(request);
            let sent = sender.try_send_request(watched);
            match self.exchange(config, sent, progress).await {
                Ok(response) => return Ok(response),
                Err(Exchange::Unsent(back, _)) if reused && attempts < 3 => {
                    self.forget_http2(id);
                    request = back;
                }
                Err(Exchange::Unsent(back, source)) => {
                    self.forget_http2(id);
                    return Err(failed_unsent(self.protocol(config, source), back));
                }
                Err(Exchange::Failed(error)) => {
                    return Err(Failure {
                        error,
                        unsent: None,
                    })
                }
            }
        }
    }

    /// Waits for the response head, allowing `response_header_timeout` from
    /// the moment the request (body included) has been written.
    async fn exchange<F>(
        &self,
        config: &ServiceConfig,
        sent: F,
        progress: Option<watch::Receiver<BodyProgress>>,
    ) -> Result<Response<Incoming>, Exchange>
    where
        F: Future<Output = Result<Response<Incoming>, TrySendError<Request<WatchedBody>>>>,
    {
        let written = progress.clone();
        let header_deadline = async move {
            if let Some(mut written) = written {
                // An error means the body was dropped: written or abandoned.
                let _ = written.wait_for(|p| *p != BodyProgress::Sending).await;
            }
            tokio::time::sleep(config.response_header_timeout).await;
        };
        let outcome = tokio::select! {
            biased;
            outcome = sent => outcome,
            () = header_deadline => {
                return Err(Exchange::Failed(UpstreamError::ResponseTimeout {
                    service: config.name.clone(),
                    endpoint: self.address,
                    timeout: config.response_header_timeout,
                }));
            }
        };
        let mut failed = match outcome {
            Ok(response) => return Ok(response),
            Err(failed) => failed,
        };
        if let Some(request) = failed.take_message() {
            let request = request.map(WatchedBody::into_inner);
            return Err(Exchange::Unsent(request, failed.into_error()));
        }
        let source = failed.into_error();
        let body_failed = progress.is_some_and(|p| *p.borrow() == BodyProgress::Failed);
        Err(Exchange::Failed(if body_failed || source.is_user() {
            UpstreamError::Request {
                service: config.name.clone(),
                endpoint: self.address,
                source,
            }
        } else {
            self.protocol(config, source)
        }))
    }

    fn protocol(&self, config: &ServiceConfig, source: hyper::Error) -> UpstreamError {
        UpstreamError::Protocol {
            service: config.name.clone(),
            endpoint: self.address,
            source,
        }
    }

    /// The most recently used ready connection, dropping closed and expired
    /// ones on the way.
    fn checkout_http1(
        &self,
        now: Instant,
        idle_timeout: Duration,
    ) -> Option<http1::SendRequest<WatchedBody>> {
        // The newest ready connection; closed ones met on the way are
        // dropped. The whole pool is swept by the maintenance task
        // (`sweep`), not here: a scan of every pooled connection on every
        // request cost more than the request's own bookkeeping.
        let mut pool = lock(&self.http1);
        loop {
            let index = pool
                .iter()
                .rposition(|conn| conn.sender.is_ready() || conn.sender.is_closed())?;
            let mut conn = pool.swap_remove(index);
            if conn.keep(now, idle_timeout) {
                return Some(conn.sender);
            }
        }
    }

    /// Keeps the connection for reuse, idle or finishing a response, up to
    /// `max_pooled` per endpoint; past that it closes after this exchange.
    fn checkin_http1(&self, sender: http1::SendRequest<WatchedBody>, max_pooled: usize) {
        let mut pool = lock(&self.http1);
        if pool.len() < max_pooled && !sender.is_closed() {
            pool.push(Http1Conn {
                sender,
                ready_since: None,
            });
        }
    }

    async fn connect_http1(
        &self,
        config: &ServiceConfig,
    ) -> Result<http1::SendRequest<WatchedBody>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let io = self.connect_tcp(config, deadline).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| self.protocol(config, source))?;
        let address = self.address;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%address, "upstream connection ended: {error}");
            }
        });
        Ok(sender)
    }

    /// The shared h2c connection, made if there is none open. Waiting for
    /// another request's connect counts against this one's connect timeout.
    async fn http2_sender(
        &self,
        config: &ServiceConfig,
    ) -> Result<(http2::SendRequest<WatchedBody>, u64, bool), UpstreamError> {
        if let Some((sender, id)) = self.open_http2() {
            return Ok((sender, id, true));
        }
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let gate = tokio::time::timeout_at(deadline, self.http2_connecting.lock());
        let Ok(_gate) = gate.await else {
            return Err(UpstreamError::ConnectTimeout {
                service: config.name.clone(),
                endpoint: self.address,
                timeout: config.connect_timeout,
            });
        };
        if let Some((sender, id)) = self.open_http2() {
            return Ok((sender, id, true));
        }
        let io = self.connect_tcp(config, deadline).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .handshake(io)
            .await
            .map_err(|source| self.protocol(config, source))?;
        let address = self.address;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%address, "upstream h2c connection ended: {error}");
            }
        });
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        *lock(&self.http2) = Some(Http2Conn {
            sender: sender.clone(),
            id,
            last_used: Instant::now(),
        });
        Ok((sender, id, false))
    }

    fn open_http2(&self) -> Option<(http2::SendRequest<WatchedBody>, u64)> {
        let mut slot = lock(&self.http2);
        match slot.as_mut() {
            Some(conn) if !conn.sender.is_closed() => {
                conn.last_used = Instant::now();
                Some((conn.sender.clone(), conn.id))
            }
            _ => {
                *slot = None;
                None
            }
        }
    }

    fn forget_http2(&self, id: u64) {
        let mut slot = lock(&self.http2);
        if slot.as_ref().is_some_and(|conn| conn.id == id) {
            *slot = None;
        }
    }

    /// A TCP connection with `TCP_NODELAY`. A refusal or timeout ejects the
    /// endpoint; a success re-admits it.
    async fn connect_tcp(
        &self,
        config: &ServiceConfig,
        deadline: tokio::time::Instant,
    ) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let connecting = tokio::time::timeout_at(deadline, TcpStream::connect(self.address));
        let stream = match connecting.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                self.eject(config);
                return Err(UpstreamError::Connect {
                    service: config.name.clone(),
                    endpoint: self.address,
                    source,
                });
            }
            Err(_) => {
                self.eject(config);
                return Err(UpstreamError::ConnectTimeout {
                    service: config.name.clone(),
                    endpoint: self.address,
                    timeout: config.connect_timeout,
                });
            }
        };
        self.readmit(config);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(endpoint = %self.address, "setting TCP_NODELAY failed: {error}");
        }
        Ok(TokioIo::new(stream))
    }

    fn eject(&self, config: &ServiceConfig) {
        let now = Instant::now();
        let previous = lock(&self.ejected_until).replace(now + config.eject_for);
        if previous.is_none_or(|until| until <= now) {
            tracing::warn!(
                service = %config.name,
                endpoint = %self.address,
                "connect failed; leaving the endpoint out for {:?}",
                config.eject_for
            );
        }
    }

    fn readmit(&self, config: &ServiceConfig) {
        if lock(&self.ejected_until).take().is_some() {
            tracing::info!(service = %config.name, endpoint = %self.address, "endpoint connects again");
        }
    }
}

impl Http1Conn {
    /// Whether the pool keeps this connection: not if it closed or has been
    /// idle for `idle_timeout`.
    fn keep(&mut self, now: Instant, idle_timeout: Duration) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        if !self.sender.is_ready() {
            self.ready_since = None;
            return true;
        }
        let since = *self.ready_since.get_or_insert(now);
        now.duration_since(since) < idle_timeout
    }
}

fn failed_unsent(error: UpstreamError, request: Request<ProxyBody>) -> Failure {
    Failure {
        error,
        unsent: Some(request),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyProgress {
    Sending,
    Done,
    Failed,
}

/// A request body that reports when it has been sent in full (which starts
/// the response-header clock) or failed (which makes the failure the
/// client's, not the upstream's).
struct WatchedBody {
    inner: ProxyBody,
    progress: Option<watch::Sender<BodyProgress>>,
}

impl WatchedBody {
    /// The request with its body watched, and the watch; none for a request
    /// without a body (most), which is sent in full with its head.
    fn wrap(
        request: Request<ProxyBody>,
    ) -> (Request<WatchedBody>, Option<watch::Receiver<BodyProgress>>) {
        let (sender, receiver) = if request.body().is_end_stream() {
            (None, None)
        } else {
            let (sender, receiver) = watch::channel(BodyProgress::Sending);
            (Some(sender), Some(receiver))
        };
        let request = request.map(|inner| WatchedBody {
            inner,
            progress: sender,
        });
        (request, receiver)
    }

    fn into_inner(self) -> ProxyBody {
        self.inner
    }

    fn finish(&mut self, how: BodyProgress) {
        if let Some(progress) = self.progress.take() {
            progress.send_replace(how);
        }
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(BodyProgress::Done),
            Poll::Ready(Some(Err(_))) => self.finish(BodyProgress::Failed),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                self.finish(BodyProgress::Done)
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
