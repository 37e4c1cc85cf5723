//! Upstream pools against real hyper backends on 127.0.0.1.
//!
//! Split by what they check: pooling, balancing and resolution (`pooling`),
//! failures and the status and retry each gets (`failures`), and bodies,
//! trailers and upgrades streamed through (`streams`). This module holds the
//! resolver, pools, backends and bodies they share.
use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{
    body::{Body, Frame},
    service::service_fn,
    HeaderMap,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};

use super::*;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A resolver whose answer the test sets.
struct TestResolver {
    answer: Mutex<Result<Vec<SocketAddr>, String>>,
}

impl TestResolver {
    fn new(addresses: &[SocketAddr]) -> Arc<TestResolver> {
        Arc::new(TestResolver {
            answer: Mutex::new(Ok(addresses.to_vec())),
        })
    }

    fn answer(&self, answer: Result<Vec<SocketAddr>, String>) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Resolve for TestResolver {
    fn resolve<'a>(
        &'a self,
        _target: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(async move { answer.map_err(std::io::Error::other) })
    }
}

fn service(name: &str) -> ServiceConfig {
    ServiceConfig {
        name: name.to_string(),
        target: "backend.test:80".to_string(),
        h2c: false,
        connect_timeout: Duration::from_secs(1),
        response_header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        resolve_interval: Duration::from_millis(50),
        eject_for: Duration::from_secs(10),
        max_idle_connections: crate::proxy::DEFAULT_MAX_IDLE_CONNECTIONS,
        endpoints: None,
        sticky: None,
    }
}

fn pool(config: ServiceConfig, resolver: Arc<TestResolver>) -> (Upstreams, Arc<Upstream>) {
    let name = config.name.clone();
    let upstreams = Upstreams::with_resolver(&BTreeMap::from([(name.clone(), config)]), resolver);
    let upstream = upstreams.get(&name).unwrap();
    (upstreams, upstream)
}

fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

fn request(method: Method, body: ProxyBody) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri("/path?q=1")
        .header(header::HOST, "app.test")
        .body(body)
        .unwrap()
}

fn get() -> Request<ProxyBody> {
    request(Method::GET, boxed(Empty::<Bytes>::new()))
}

fn text(body: &'static str) -> Response<ProxyBody> {
    Response::new(boxed(Full::new(Bytes::from(body))))
}

async fn body_text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn listen() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// An address nothing listens on.
async fn refused_address() -> SocketAddr {
    listen().await.local_addr().unwrap()
}

/// A hyper backend that counts the connections it accepts.
struct Backend {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    _task: JoinHandle<()>,
}

fn serve<H, F>(listener: TcpListener, h2: bool, handler: H) -> Backend
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, SeqCst);
            let handler = handler.clone();
            let service = service_fn(move |request| {
                let response = handler(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let io = TokioIo::new(stream);
            tokio::spawn(async move {
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await
                };
            });
        }
    });
    Backend {
        address,
        connections,
        _task: task,
    }
}

/// An HTTP/1.1 backend answering every request with `name`.
async fn named(name: &'static str) -> Backend {
    serve(listen().await, false, move |_| async move { text(name) })
}

/// A raw TCP backend: reads the request's first bytes, then does `then`.
async fn raw<F, Fut>(then: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = listen().await;
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            if matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {
                counted.fetch_add(1, SeqCst);
            }
            tokio::spawn(then(stream));
        }
    });
    (address, requests)
}

/// A request body fed from a channel, chunk by chunk.
struct ChannelBody(mpsc::Receiver<Result<Bytes, BoxError>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }
}

mod failures;
mod pooling;
mod streams;
