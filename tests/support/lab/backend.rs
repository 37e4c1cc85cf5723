//! Upstream servers for the proxy tests, listening inside the server
//! namespace where the daemon can reach them: an HTTP/1.1 backend that says
//! who it is and echoes what it got (method, path, headers, body size) as
//! JSON, and on request delays its answer or streams a large body; a backend
//! that answers garbage; and a WebSocket echo server. Each runs on its own
//! tokio runtime; dropping it (or [`Backend::stop`]) closes its listener and
//! every connection, so the port refuses connections afterwards.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::{
    body::{Body, Frame, Incoming},
    header,
    server::conn::{http1, http2},
    service::service_fn,
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::net::{in_netns, runtime_for};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BackendBody = BoxBody<Bytes, BoxError>;

/// What a backend does with each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Echo,
    /// The echo backend speaking HTTP/2 without TLS (prior knowledge).
    EchoH2c,
    Garbage,
    WebSocket,
}

/// One upstream server in the server namespace.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests (or connections, for garbage and WebSocket) it has answered.
    served: Arc<AtomicU64>,
    /// TCP connections it has accepted.
    accepted: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Backend {
    /// The echo backend `name` on `addr` (in `server_ns`). It answers every
    /// request with a JSON object: `backend` (its name), `method`, `path`,
    /// `query`, `version`, `headers` (name to list of values) and
    /// `body_bytes` (the request body's size, read as it streams). Paths
    /// with a meaning:
    /// * `/delay/<ms>...`: waits that long before sending the response head;
    /// * `/bytes/<n>`: answers `n` bytes of `x`, streamed in 64 KiB chunks;
    /// * `/truncate/<n>`: announces `n` bytes, sends half and breaks off.
    pub fn echo(server_ns: &str, addr: SocketAddr, name: &str) -> Backend {
        Backend::start(server_ns, addr, name, Kind::Echo)
    }

    /// The echo backend over h2c (HTTP/2 without TLS), as gRPC servers
    /// speak it. A request that says `te: trailers` gets its JSON followed
    /// by the trailer `grpc-status: 0`.
    pub fn echo_h2c(server_ns: &str, addr: SocketAddr, name: &str) -> Backend {
        Backend::start(server_ns, addr, name, Kind::EchoH2c)
    }

    /// A backend that reads a request and answers bytes that are not HTTP.
    pub fn garbage(server_ns: &str, addr: SocketAddr) -> Backend {
        Backend::start(server_ns, addr, "garbage", Kind::Garbage)
    }

    /// A WebSocket server that echoes every text and binary message.
    pub fn websocket(server_ns: &str, addr: SocketAddr) -> Backend {
        Backend::start(server_ns, addr, "websocket", Kind::WebSocket)
    }

    fn start(server_ns: &str, addr: SocketAddr, name: &str, kind: Kind) -> Backend {
        let listener = in_netns(server_ns, || listen(addr))
            .unwrap_or_else(|e| panic!("bind backend `{name}` on {addr}: {e}"));
        let (runtime, listener) = runtime_for(listener, 2);
        let served = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let counters = (served.clone(), accepted.clone());
        runtime.spawn(accept(listener, name.to_string(), kind, counters));
        Backend {
            name: name.to_string(),
            addr,
            served,
            accepted,
            runtime: Some(runtime),
        }
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection; waits until they are closed.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A non-blocking listener with a backlog deep enough for a load run: the
/// proxy opens many upstream connections at once, and a SYN dropped on a
/// full backlog would add a one-second retransmission to a request.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

async fn accept(
    listener: tokio::net::TcpListener,
    name: String,
    kind: Kind,
    (served, accepted): (Arc<AtomicU64>, Arc<AtomicU64>),
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let _ = tcp.set_nodelay(true);
        let (name, served) = (name.clone(), served.clone());
        if matches!(kind, Kind::Garbage | Kind::WebSocket) {
            served.fetch_add(1, Ordering::SeqCst);
        }
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                served.fetch_add(1, Ordering::SeqCst);
                answer(name.clone(), request)
            });
            match kind {
                Kind::Echo => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                }
                Kind::EchoH2c => {
                    let _ = http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                }
                Kind::Garbage => garbage(tcp).await,
                Kind::WebSocket => websocket_echo(tcp).await,
            }
        });
    }
}

async fn answer(
    name: String,
    request: Request<Incoming>,
) -> Result<Response<BackendBody>, Infallible> {
    let path = request.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/delay/") {
        let ms: u64 = rest
            .split('/')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        let body = Filler { left: n }.map_err(|never| match never {}).boxed();
        let response = Response::builder()
            .header(header::CONTENT_LENGTH, n)
            .header("x-backend", &name)
            .body(body)
            .expect("a valid response");
        return Ok(response);
    }
    if let Some(n) = path
        .strip_prefix("/truncate/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        let half = Filler { left: n / 2 }.map_err(|never| -> BoxError { match never {} });
        let broken = futures_util::stream::once(async {
            Err::<Frame<Bytes>, BoxError>("the backend broke off".into())
        });
        let body = half.into_data_stream().map_ok(Frame::data).chain(broken);
        let response = Response::builder()
            .header(header::CONTENT_LENGTH, n)
            .header("x-backend", &name)
            .body(http_body_util::BodyExt::boxed(StreamBody::new(body)))
            .expect("a valid response");
        return Ok(response);
    }
    let wants_trailers = request
        .headers()
        .get(header::TE)
        .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in request.headers() {
        headers
            .entry(key.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let method = request.method().to_string();
    let query = request.uri().query().map(str::to_string);
    let version = format!("{:?}", request.version());
    // Read the body as it streams, keeping only its size: an upload of any
    // size costs the backend nothing.
    let mut body = request.into_body();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let json = serde_json::json!({
        "backend": name,
        "method": method,
        "path": path,
        "query": query,
        "version": version,
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let json = Bytes::from(json.to_string());
    let body = if wants_trailers {
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("grpc-status", header::HeaderValue::from_static("0"));
        let frames = vec![Ok(Frame::data(json)), Ok(Frame::trailers(trailers))];
        http_body_util::BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
    } else {
        Full::new(json).map_err(|never| match never {}).boxed()
    };
    let response = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-backend", &name)
        .body(body)
        .expect("a valid response");
    Ok(response)
}

/// A body of `left` bytes of `x`, handed out in 64 KiB chunks of one
/// static buffer as it is polled: a body of any size costs no memory.
pub struct Filler {
    pub left: u64,
}

const CHUNK: usize = 64 * 1024;
static XS: [u8; CHUNK] = [b'x'; CHUNK];

impl Body for Filler {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&XS[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

async fn garbage(mut tcp: tokio::net::TcpStream) {
    // Wait for (the start of) a request so the proxy has sent one.
    let mut buf = [0u8; 4096];
    if matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {
        let _ = tcp
            .write_all(b"SSH-2.0-OpenSSH_9.2 this is not HTTP\r\n\x00\x01\x02\r\n\r\n")
            .await;
    }
    let _ = tcp.shutdown().await;
}

async fn websocket_echo(tcp: tokio::net::TcpStream) {
    let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        if message.is_text() || message.is_binary() {
            if socket.send(message).await.is_err() {
                return;
            }
        } else if message.is_close() {
            let _ = socket.close(None).await;
            return;
        }
    }
}
