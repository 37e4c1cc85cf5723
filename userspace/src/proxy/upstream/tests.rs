//! Upstream pools against real hyper backends on 127.0.0.1.
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

#[tokio::test]
async fn requests_alternate_round_robin_between_endpoints() {
    let (a, b) = (named("a").await, named("b").await);
    let (_upstreams, upstream) = pool(service("rr"), TestResolver::new(&[a.address, b.address]));
    let mut answered = Vec::new();
    for _ in 0..4 {
        let (response, endpoint) = upstream.send(get()).await.unwrap();
        answered.push((body_text(response).await, endpoint));
    }
    assert_eq!(
        answered,
        [
            ("a", a.address),
            ("b", b.address),
            ("a", a.address),
            ("b", b.address)
        ]
        .map(|(name, address)| (name.to_string(), address))
    );
}

#[tokio::test]
async fn sequential_requests_reuse_one_keep_alive_connection() {
    let a = named("a").await;
    let (_upstreams, upstream) = pool(service("keepalive"), TestResolver::new(&[a.address]));
    for _ in 0..20 {
        let (response, _) = upstream.send(get()).await.unwrap();
        assert_eq!(body_text(response).await, "a");
    }
    assert_eq!(a.connections.load(SeqCst), 1);
    assert_eq!(upstream.endpoints()[0].idle_connections, 1);
}

#[tokio::test]
async fn max_idle_connections_caps_what_is_kept_for_reuse() {
    let a = named("a").await;
    let config = ServiceConfig {
        max_idle_connections: 0,
        ..service("no-pool")
    };
    let (_upstreams, upstream) = pool(config, TestResolver::new(&[a.address]));
    for _ in 0..5 {
        let (response, _) = upstream.send(get()).await.unwrap();
        assert_eq!(body_text(response).await, "a");
    }
    assert_eq!(a.connections.load(SeqCst), 5, "a connection per request");
    assert_eq!(upstream.endpoints()[0].idle_connections, 0);
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout() {
    let a = named("a").await;
    let config = ServiceConfig {
        idle_timeout: Duration::from_millis(200),
        ..service("idle")
    };
    let (_upstreams, upstream) = pool(config, TestResolver::new(&[a.address]));
    body_text(upstream.send(get()).await.unwrap().0).await;
    assert_eq!(upstream.endpoints()[0].idle_connections, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(upstream.endpoints()[0].idle_connections, 0);
    body_text(upstream.send(get()).await.unwrap().0).await;
    assert_eq!(a.connections.load(SeqCst), 2);
}

#[tokio::test]
async fn refused_connect_is_502_and_ejects_but_is_still_tried() {
    let dead = refused_address().await;
    let (_upstreams, upstream) = pool(service("refused"), TestResolver::new(&[dead]));
    let error = upstream.send(get()).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.status()),
        ("connect", StatusCode::BAD_GATEWAY)
    );
    assert!(error.to_string().contains(&dead.to_string()), "{error}");
    assert!(upstream.endpoints()[0].ejected_until.is_some());
    // Every endpoint ejected: still tried, not answered 503.
    let error = upstream.send(get()).await.unwrap_err();
    assert_eq!(error.kind(), "connect");
}

#[tokio::test]
async fn every_endpoint_refusing_is_502() {
    let dead = [refused_address().await, refused_address().await];
    let (_upstreams, upstream) = pool(service("all-refused"), TestResolver::new(&dead));
    let error = upstream.send(get()).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.status()),
        ("connect", StatusCode::BAD_GATEWAY)
    );
    assert!(upstream
        .endpoints()
        .iter()
        .all(|e| e.ejected_until.is_some()));
}

#[tokio::test]
async fn refused_get_is_retried_elsewhere_and_the_endpoint_readmitted_later() {
    let dead = refused_address().await;
    let b = named("b").await;
    let config = ServiceConfig {
        eject_for: Duration::from_millis(300),
        max_idle_connections: crate::proxy::DEFAULT_MAX_IDLE_CONNECTIONS,
        endpoints: None,
        sticky: None,
        ..service("eject")
    };
    let (_upstreams, upstream) = pool(config, TestResolver::new(&[dead, b.address]));

    // The round robin starts at `dead`: it refuses, and the GET goes to b.
    let (response, endpoint) = upstream.send(get()).await.unwrap();
    assert_eq!(
        (body_text(response).await, endpoint),
        ("b".to_string(), b.address)
    );
    let ejected_until = upstream.endpoints()[0].ejected_until;
    assert!(ejected_until.is_some());

    // While ejected it is not tried (its ejection would be renewed).
    for _ in 0..4 {
        assert_eq!(upstream.send(get()).await.unwrap().1, b.address);
    }
    assert_eq!(upstream.endpoints()[0].ejected_until, ejected_until);

    // It comes back; after eject_for it gets its share again.
    let revived = serve(TcpListener::bind(dead).await.unwrap(), false, |_| async {
        text("a")
    });
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        endpoints.push(upstream.send(get()).await.unwrap().1);
    }
    assert!(endpoints.contains(&revived.address), "{endpoints:?}");
    assert_eq!(upstream.endpoints()[0].ejected_until, None);
}

#[tokio::test]
async fn nothing_resolved_is_503() {
    let resolver = TestResolver::new(&[]);
    resolver.answer(Err("no such host".to_string()));
    let (_upstreams, upstream) = pool(service("unresolved"), resolver);
    let error = upstream.send(get()).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.status()),
        ("no_endpoint", StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test]
async fn no_response_head_in_time_is_504() {
    let (silent, _) = raw(|stream| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await;
    let config = ServiceConfig {
        response_header_timeout: Duration::from_millis(200),
        ..service("slow")
    };
    let (_upstreams, upstream) = pool(config, TestResolver::new(&[silent]));
    let started = Instant::now();
    let error = upstream.send(get()).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.status()),
        ("response_timeout", StatusCode::GATEWAY_TIMEOUT)
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// A listener whose accept queue is full, so that a new connect hangs.
async fn saturated_listener() -> (TcpListener, Vec<TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        let connect = TcpStream::connect(address);
        match tokio::time::timeout(Duration::from_millis(200), connect).await {
            Ok(Ok(stream)) => held.push(stream),
            _ => return (listener, held),
        }
    }
    panic!("the accept queue of {address} never filled");
}

#[tokio::test]
async fn connect_that_hangs_is_504_and_ejects() {
    let (listener, _held) = saturated_listener().await;
    let config = ServiceConfig {
        connect_timeout: Duration::from_millis(200),
        ..service("hanging")
    };
    let (_upstreams, upstream) = pool(config, TestResolver::new(&[listener.local_addr().unwrap()]));
    let error = upstream.send(get()).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.status()),
        ("connect_timeout", StatusCode::GATEWAY_TIMEOUT)
    );
    assert!(upstream.endpoints()[0].ejected_until.is_some());
}

#[tokio::test]
async fn garbage_response_is_502_protocol() {
    let (garbage, _) = raw(|mut stream| async move {
        let _ = stream.write_all(b"this is not http\r\n\r\n").await;
    })
    .await;
    let (_upstreams, upstream) = pool(service("garbage"), TestResolver::new(&[garbage]));
    let error = upstream.send(get()).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.status()),
        ("protocol", StatusCode::BAD_GATEWAY)
    );
}

/// An endpoint that reads the request and hangs up without answering.
async fn hang_up() -> (SocketAddr, Arc<AtomicUsize>) {
    raw(|stream| async move { drop(stream) }).await
}

#[tokio::test]
async fn post_with_body_is_not_retried_once_sent() {
    let (dropper, dropped) = hang_up().await;
    let b = named("b").await;
    let (_upstreams, upstream) = pool(service("post"), TestResolver::new(&[dropper, b.address]));
    let post = request(Method::POST, boxed(Full::new(Bytes::from("payload"))));
    let error = upstream.send(post).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.status()),
        ("protocol", StatusCode::BAD_GATEWAY)
    );
    assert_eq!(dropped.load(SeqCst), 1);
    assert_eq!(
        b.connections.load(SeqCst),
        0,
        "the POST must not reach a second endpoint"
    );
}

#[tokio::test]
async fn bodiless_get_is_retried_after_a_broken_exchange() {
    let (dropper, dropped) = hang_up().await;
    let b = named("b").await;
    let (_upstreams, upstream) = pool(service("get"), TestResolver::new(&[dropper, b.address]));
    let (response, endpoint) = upstream.send(get()).await.unwrap();
    assert_eq!(
        (body_text(response).await, endpoint),
        ("b".to_string(), b.address)
    );
    assert_eq!(dropped.load(SeqCst), 1);
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

#[tokio::test]
async fn client_body_failing_midway_is_the_clients_error() {
    let a = serve(listen().await, false, |request| async move {
        let _ = request.into_body().collect().await;
        text("a")
    });
    let (_upstreams, upstream) = pool(service("broken-body"), TestResolver::new(&[a.address]));
    let (chunks, body) = mpsc::channel(4);
    chunks.send(Ok(Bytes::from("first part"))).await.unwrap();
    chunks.send(Err("client went away".into())).await.unwrap();
    let error = upstream
        .send(request(Method::POST, boxed(ChannelBody(body))))
        .await
        .unwrap_err();
    assert_eq!(
        (error.kind(), error.status()),
        ("request", StatusCode::BAD_REQUEST)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_through_both_ways() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 50 * 1024 * 1024;
    let sent_all = Arc::new(AtomicBool::new(false));
    let backend_saw_bytes_early = Arc::new(AtomicBool::new(false));
    let (done, early) = (sent_all.clone(), backend_saw_bytes_early.clone());
    // The backend echoes the body back as it arrives.
    let echo = serve(listen().await, false, move |request| {
        let (done, early) = (done.clone(), early.clone());
        async move {
            let mut first = true;
            let body = request.into_body().map_frame(move |frame| {
                if std::mem::take(&mut first) {
                    early.store(!done.load(SeqCst), SeqCst);
                }
                frame
            });
            Response::new(boxed(body))
        }
    });
    let (_upstreams, upstream) = pool(service("large"), TestResolver::new(&[echo.address]));

    let (chunks, body) = mpsc::channel(2);
    let producer_done = sent_all.clone();
    tokio::spawn(async move {
        for _ in 0..TOTAL / CHUNK {
            if chunks
                .send(Ok(Bytes::from(vec![b'x'; CHUNK])))
                .await
                .is_err()
            {
                return;
            }
        }
        producer_done.store(true, SeqCst);
    });
    let (response, _) = upstream
        .send(request(Method::PUT, boxed(ChannelBody(body))))
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut received = 0;
    let mut client_saw_bytes_early = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            client_saw_bytes_early.get_or_insert(!sent_all.load(SeqCst));
            received += data.len();
        }
    }
    assert_eq!(received, TOTAL);
    assert!(
        backend_saw_bytes_early.load(SeqCst),
        "the request body was buffered"
    );
    assert_eq!(
        client_saw_bytes_early,
        Some(true),
        "the response body was buffered"
    );
}

/// A body of given frames (data and trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn trailers(fields: &[(&'static str, &str)]) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.insert(*name, value.parse().unwrap());
    }
    Frame::trailers(map)
}

#[tokio::test]
async fn h2c_carries_trailers_both_ways_on_one_connection() {
    // A gRPC-like backend: answers data then trailers, echoing the
    // request's trailer.
    let grpc = serve(listen().await, true, |request| async move {
        let version = request.version();
        let collected = request.into_body().collect().await.unwrap();
        let echoed = collected
            .trailers()
            .and_then(|t| t.get("x-request-trailer"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("missing")
            .to_string();
        let frames = [
            Frame::data(Bytes::from(format!("{version:?}"))),
            trailers(&[("grpc-status", "0"), ("x-echo", &echoed)]),
        ];
        Response::new(boxed(Frames(frames.into())))
    });
    let config = ServiceConfig {
        h2c: true,
        ..service("grpc")
    };
    let (_upstreams, upstream) = pool(config, TestResolver::new(&[grpc.address]));
    let calls = (0..3).map(|_| {
        let frames = [
            Frame::data(Bytes::from("hello")),
            trailers(&[("x-request-trailer", "sent")]),
        ];
        upstream.send(request(Method::POST, boxed(Frames(frames.into()))))
    });
    for result in futures_join_all(calls).await {
        let (response, _) = result.unwrap();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        assert_eq!(trailers.get("x-echo").unwrap(), "sent");
        assert_eq!(collected.to_bytes(), "HTTP/2.0");
    }
    assert_eq!(grpc.connections.load(SeqCst), 1);
}

/// Runs futures concurrently on this task (no `futures` crate here).
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<_> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (handle, output) in handles.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = handle {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *handle = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test]
async fn upgrade_passes_through_and_the_connection_leaves_the_pool() {
    // Answers `Upgrade: echo` with 101 and echoes the upgraded stream.
    let echo = serve(listen().await, false, |mut request| async move {
        if !request.headers().contains_key(header::UPGRADE) {
            return text("plain");
        }
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            let mut buffer = [0u8; 4];
            io.read_exact(&mut buffer).await.unwrap();
            io.write_all(&buffer).await.unwrap();
        });
        let mut response = Response::new(boxed(Empty::<Bytes>::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(header::CONNECTION, "upgrade".parse().unwrap());
        response
            .headers_mut()
            .insert(header::UPGRADE, "echo".parse().unwrap());
        response
    });
    let (_upstreams, upstream) = pool(service("ws"), TestResolver::new(&[echo.address]));
    let mut upgrade = get();
    upgrade
        .headers_mut()
        .insert(header::CONNECTION, "upgrade".parse().unwrap());
    upgrade
        .headers_mut()
        .insert(header::UPGRADE, "echo".parse().unwrap());
    let (mut response, _) = upstream.send(upgrade).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = TokioIo::new(hyper::upgrade::on(&mut response).await.unwrap());
    io.write_all(b"ping").await.unwrap();
    let mut buffer = [0u8; 4];
    io.read_exact(&mut buffer).await.unwrap();
    assert_eq!(&buffer, b"ping");

    assert_eq!(upstream.endpoints()[0].idle_connections, 0);
    assert_eq!(
        body_text(upstream.send(get()).await.unwrap().0).await,
        "plain"
    );
    assert_eq!(echo.connections.load(SeqCst), 2);
}

async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_changed_resolution_moves_traffic_and_a_failed_one_keeps_the_last() {
    let (a, b) = (named("a").await, named("b").await);
    let resolver = TestResolver::new(&[a.address]);
    let (_upstreams, upstream) = pool(service("dns"), resolver.clone());
    assert_eq!(upstream.send(get()).await.unwrap().1, a.address);

    resolver.answer(Ok(vec![b.address]));
    let addresses = || {
        upstream
            .endpoints()
            .iter()
            .map(|e| e.address)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(|| addresses() == [b.address]).await,
        "{:?}",
        addresses()
    );
    for _ in 0..3 {
        assert_eq!(upstream.send(get()).await.unwrap().1, b.address);
    }

    resolver.answer(Err("SERVFAIL".to_string()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(addresses(), [b.address]);
    assert_eq!(upstream.send(get()).await.unwrap().1, b.address);
}

#[tokio::test]
async fn rebuild_keeps_unchanged_pools_and_their_resolvers() {
    let (a, b) = (named("a").await, named("b").await);
    let resolver = TestResolver::new(&[a.address]);
    let mut services = BTreeMap::from([
        ("kept".to_string(), service("kept")),
        ("changed".to_string(), service("changed")),
    ]);
    let old = Upstreams::with_resolver(&services, resolver.clone());
    let kept = old.get("kept").unwrap();
    kept.send(get()).await.unwrap();

    services.get_mut("changed").unwrap().eject_for = Duration::from_secs(1);
    let new = old.rebuild(&services);
    assert!(Arc::ptr_eq(&kept, &new.get("kept").unwrap()));
    assert!(!Arc::ptr_eq(
        &old.get("changed").unwrap(),
        &new.get("changed").unwrap()
    ));
    assert_eq!(kept.endpoints()[0].idle_connections, 1);

    // The shared pool keeps resolving after the old set is gone...
    drop(old);
    resolver.answer(Ok(vec![b.address]));
    assert!(eventually(|| kept.endpoints()[0].address == b.address).await);
    // ...and stops once the last user shuts down.
    new.shutdown();
    resolver.answer(Ok(vec![a.address]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(kept.endpoints()[0].address, b.address);
}

#[test]
fn pools_are_shareable_and_send_futures_are_send() {
    fn assert_shareable<T: Send + Sync>() {}
    assert_shareable::<Upstreams>();
    assert_shareable::<Upstream>();
    fn assert_send<T: Send>(_: &T) {}
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (_upstreams, upstream) = pool(service("send"), TestResolver::new(&[]));
        let future = upstream.send(get());
        assert_send(&future);
    });
}

#[tokio::test]
async fn fixed_endpoints_are_used_and_the_resolver_is_not_asked() {
    let a = named("a").await;
    let b = named("b").await;
    let config = ServiceConfig {
        endpoints: Some(vec![a.address, b.address]),
        ..service("fixed")
    };
    // The resolver would fail: only the fixed list can make requests work.
    let resolver = TestResolver::new(&[]);
    resolver.answer(Err("the resolver must not be asked".to_string()));
    let (_upstreams, upstream) = pool(config, resolver);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (response, _) = upstream.send(get()).await.unwrap();
        seen.push(body_text(response).await);
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
}
