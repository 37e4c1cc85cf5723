//! Failures and what each becomes: refused and hanging connects, missing
//! resolutions, slow or garbage responses, broken exchanges and which of
//! them are retried, a client body that fails midway.
use super::*;

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
