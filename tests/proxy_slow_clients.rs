//! Clients that hold the proxy's resources without using them (issue 12):
//! a request body that stops arriving gets 408 after `body_read_timeout`
//! (HTTP/1.1 on TCP and TLS, and HTTP/2 from Python's h2), while one that
//! keeps trickling in is served; a head trickled slower than
//! `header_read_timeout` is cut off; an HTTP/2 connection that only sends
//! PINGs is closed after `idle_timeout`; and when `max_connections` are all
//! taken by idle HTTP/2 and HTTP/1.1 keep-alive clients, or by connections
//! that never sent a byte, a new client is served at once (idle ones make
//! room) while requests in flight finish.
//! Needs root (Python's h2 for the HTTP/2 parts).
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{client::conn, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use xdpgate_tests::lab::{
    h2py, lab_ready, members, outsiders, python_h2_ready, raw_exchange, Backend, Call, ProxyLab,
    ProxySetup, PLAIN_PORT, TLS_PORT,
};

const ECHO_PORT: u16 = 9100;

fn start(tag: &str, limits: &str) -> (ProxyLab, Backend) {
    let mut proxy = ProxyLab::new(tag, env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let echo = proxy.echo_backend("echo", ECHO_PORT);
    proxy.start(&ProxySetup {
        rest: format!("  default_service: \"127.0.0.1:{ECHO_PORT}\"\n"),
        limits: limits.to_string(),
        ..ProxySetup::default()
    });
    (proxy, echo)
}

const HEAD_100: &[u8] =
    b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\nConnection: close\r\n\r\n";

#[test]
fn a_body_that_stops_arriving_gets_408_and_one_that_trickles_is_served() {
    let test = "a_body_that_stops_arriving_gets_408_and_one_that_trickles_is_served";
    if !lab_ready(test, &[]) {
        return;
    }
    let python = python_h2_ready(test);
    let (proxy, echo) = start("sc1", "body_read_timeout: 1s");
    let outsider = outsiders()[0];
    let wait = Duration::from_secs(8);

    for tls in [false, true] {
        // The head, 10 of the 100 bytes, then silence.
        let mut stalled = HEAD_100.to_vec();
        stalled.extend_from_slice(&[b'x'; 10]);
        let reply = raw_exchange(
            &proxy.client,
            outsider,
            tls,
            &[&stalled],
            Duration::ZERO,
            wait,
        )
        .expect("exchange");
        println!(
            "stalled body (tls {tls}): answered and closed after {:?}",
            reply.took
        );
        assert_eq!(reply.status(), 408, "tls {tls}: {}", reply.text());
        assert!(
            reply.closed,
            "tls {tls}: the connection is closed after the 408"
        );

        // The same 100 bytes in ten pieces 400 ms apart: never idle for a
        // second, so the request is served whole, however long it takes.
        let piece = [b'y'; 10];
        let mut parts: Vec<&[u8]> = vec![HEAD_100];
        parts.extend(std::iter::repeat_n(&piece[..], 10));
        let reply = raw_exchange(
            &proxy.client,
            outsider,
            tls,
            &parts,
            Duration::from_millis(400),
            wait,
        )
        .expect("exchange");
        assert_eq!(reply.status(), 200, "tls {tls}: {}", reply.text());
        assert_eq!(
            reply.json()["body_bytes"],
            100,
            "the upstream got the whole body"
        );
    }
    assert!(echo.served() >= 2);

    // A chunked body that stops after its first chunk.
    let chunked =
        b"POST /chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n";
    let reply = raw_exchange(
        &proxy.client,
        outsider,
        false,
        &[chunked],
        Duration::ZERO,
        wait,
    )
    .expect("exchange");
    assert_eq!(
        reply.status(),
        408,
        "stalled chunked body: {}",
        reply.text()
    );
    assert!(reply.closed, "the connection is closed after the 408");

    if let Some(python) = python {
        // With a declared length and without one, over TLS and h2c.
        for (tls, length) in [(true, Some("100")), (true, None), (false, Some("100"))] {
            let mut headers = vec![
                json!([":method", "POST"]),
                json!([":scheme", if tls { "https" } else { "http" }]),
                json!([":authority", "localhost"]),
                json!([":path", "/upload-h2"]),
            ];
            if let Some(length) = length {
                headers.push(json!(["content-length", length]));
            }
            let plan = json!({
                "mode": "stall_body",
                "headers": headers,
                "data": "0123456789",
                "wait": 8,
            });
            let report = h2py(
                &proxy,
                &python,
                outsider,
                tls,
                plan,
                Duration::from_secs(20),
            );
            println!("stalled HTTP/2 body (tls {tls}, length {length:?}): {report}");
            assert_eq!(
                report["status"], 408,
                "HTTP/2 stalled body (tls {tls}, length {length:?}): {report}"
            );
            assert_eq!(report["ended"], true, "the stream ended: {report}");
        }
    }
}

#[test]
fn a_request_head_trickled_slower_than_header_read_timeout_is_cut_off() {
    let test = "a_request_head_trickled_slower_than_header_read_timeout_is_cut_off";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, echo) = start("sc2", "header_read_timeout: 2s");
    let head = b"GET /slow HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaa\r\n\r\n";
    // One byte every 300 ms: the whole head would take about 20 s.
    let parts: Vec<&[u8]> = head.chunks(1).collect();
    for tls in [false, true] {
        let reply = raw_exchange(
            &proxy.client,
            members()[0],
            tls,
            &parts,
            Duration::from_millis(300),
            Duration::from_secs(30),
        )
        .expect("exchange");
        println!("trickled head (tls {tls}): closed after {:?}", reply.took);
        assert!(reply.closed, "tls {tls}: the slow head is cut off");
        assert!(
            reply.took < Duration::from_secs(15),
            "tls {tls}: cut off long before the head was complete: {:?}",
            reply.took
        );
        assert!(
            !reply.statuses().contains(&200),
            "tls {tls}: {}",
            reply.text()
        );
    }
    assert_eq!(echo.served(), 0, "the slow heads reached no upstream");
}

#[test]
fn an_http2_connection_that_only_pings_is_closed_after_idle_timeout() {
    let test = "an_http2_connection_that_only_pings_is_closed_after_idle_timeout";
    if !lab_ready(test, &[]) {
        return;
    }
    let Some(python) = python_h2_ready(test) else {
        return;
    };
    let (proxy, _echo) = start("sc3", "idle_timeout: 2s");
    for (tls, ping_every) in [(true, 0.5), (false, 0.5), (true, 60.0)] {
        let plan = json!({ "mode": "idle", "ping_every": ping_every, "wait": 20 });
        let report = h2py(
            &proxy,
            &python,
            outsiders()[0],
            tls,
            plan,
            Duration::from_secs(30),
        );
        println!("idle HTTP/2 (tls {tls}, PING every {ping_every} s): {report}");
        assert_eq!(
            report["closed"], true,
            "tls {tls}, PING every {ping_every} s: still open after 20 s: {report}"
        );
        let seconds = report["seconds"].as_f64().unwrap();
        assert!(
            (1.5..12.0).contains(&seconds),
            "tls {tls}: closed after the 2 s idle timeout, not before: {report}"
        );
    }
}

type Body = Empty<Bytes>;

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .expect("request")
}

#[test]
fn idle_connections_make_room_for_a_new_client_at_max_connections() {
    let test = "idle_connections_make_room_for_a_new_client_at_max_connections";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, _echo) = start("sc4", "max_connections: 20, idle_timeout: 60s");
    let client = &proxy.client;
    let sources = [outsiders(), members()].concat();

    // 20 HTTP/2 connections on the TLS entrypoint, each done with one
    // request; two of them then start a request that takes 4 s.
    let (idle_h2, busy) = client.block_on(async {
        let mut senders = Vec::new();
        for i in 0..20 {
            let tcp = client
                .connect(sources[i % sources.len()], TLS_PORT)
                .await
                .expect("connect");
            let tls = client
                .tls_stream(tcp, "localhost", &[b"h2"])
                .await
                .expect("TLS");
            let (mut sender, connection) =
                conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .expect("h2 handshake");
            tokio::spawn(connection);
            let response = sender
                .send_request(get("https://localhost/warm-up"))
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.expect("body");
            senders.push(sender);
        }
        let busy: Vec<_> = senders
            .drain(..2)
            .map(|mut sender| {
                tokio::spawn(async move {
                    let response = sender
                        .send_request(get("https://localhost/delay/4000"))
                        .await?;
                    let status = response.status();
                    response.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                })
            })
            .collect();
        (senders, busy)
    });
    std::thread::sleep(Duration::from_millis(300));

    let newcomer = Call::tls(members()[1])
        .host("localhost")
        .h2()
        .path("/newcomer")
        .timeout(Duration::from_secs(10));
    let reply = proxy
        .send(&newcomer)
        .expect("a 21st client is served while 20 connections are open");
    assert_eq!(reply.status, 200);
    println!("21st HTTP/2 client answered in {:?}", reply.took);
    for (i, request) in busy.into_iter().enumerate() {
        let status = client
            .block_on(request)
            .expect("task")
            .unwrap_or_else(|e| panic!("request in flight {i} was cut off: {e}"));
        assert_eq!(status, 200, "request in flight {i}");
    }
    let closed = idle_h2.iter().filter(|s| s.is_closed()).count();
    assert!(
        closed >= 1,
        "an idle HTTP/2 connection was closed to make room"
    );
    drop(idle_h2);

    // 20 HTTP/1.1 keep-alive connections on the plain entrypoint.
    let idle_h1 = client.block_on(async {
        let mut senders = Vec::new();
        for i in 0..20 {
            let tcp = client
                .connect(sources[i % sources.len()], PLAIN_PORT)
                .await
                .expect("connect");
            let (mut sender, connection) = conn::http1::handshake(TokioIo::new(tcp))
                .await
                .expect("h1 handshake");
            tokio::spawn(connection);
            let response = sender
                .send_request(get("/keep-alive"))
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.expect("body");
            senders.push(sender);
        }
        senders
    });
    let reply = proxy
        .send(
            &Call::plain(members()[2])
                .path("/newcomer-h1")
                .timeout(Duration::from_secs(10)),
        )
        .expect("a 21st HTTP/1.1 client is served while 20 keep-alive connections are open");
    assert_eq!(reply.status, 200);
    println!("21st HTTP/1.1 client answered in {:?}", reply.took);
    std::thread::sleep(Duration::from_millis(200));
    let closed = idle_h1.iter().filter(|s| s.is_closed()).count();
    assert!(
        closed >= 1,
        "an idle keep-alive connection was closed to make room"
    );
    drop(idle_h1);

    // 20 connections that never send a byte have no request open either:
    // they do not lock out a client that does (header_read_timeout is 10 s).
    let silent = client.block_on(async {
        let mut silent = Vec::new();
        for i in 0..20 {
            let tcp = client
                .connect(sources[i % sources.len()], PLAIN_PORT)
                .await
                .expect("connect");
            silent.push(tcp);
        }
        silent
    });
    std::thread::sleep(Duration::from_millis(300));
    let reply = proxy
        .send(
            &Call::plain(members()[3])
                .path("/after-silent")
                .timeout(Duration::from_secs(5)),
        )
        .expect("a client is served while 20 silent connections are open");
    assert_eq!(reply.status, 200);
    println!(
        "client after 20 silent connections answered in {:?}",
        reply.took
    );
    drop(silent);
}
