//! Bodies and protocols streamed through: a large body both ways, h2c with
//! trailers both ways, an upgrade that takes its connection out of the pool.
use super::*;

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
