//! What flows through the running proxy besides small requests: WebSocket
//! sessions (wss with the test CA, and plain ws) echoed by a WebSocket
//! backend, quiet for longer than the idle timeout half-way; HTTP/2 end to
//! end from curl (`--http2` over TLS and `--http2-prior-knowledge` on the
//! plain entrypoint) and from our own h2 client, many streams at once on one
//! connection; an h2c upstream whose trailers reach the client (as gRPC
//! needs); and a 100 MB upload and a 100 MB download streamed through the
//! proxy while its resident memory stays flat. Needs root and curl.
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::{client::conn::http2, Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, Message};
use xdpgate_tests::lab::{
    curl, lab_ready, members, memory_kib, outsiders, tools_ready, Backend, Call, ProxyLab,
    ProxySetup, PLAIN_PORT, TLS_PORT,
};

const ECHO_PORT: u16 = 9100;
const WS_PORT: u16 = 9101;
const H2C_PORT: u16 = 9102;
const MIB: u64 = 1024 * 1024;

fn start(tag: &str, limits: &str) -> (ProxyLab, Backend, Backend) {
    let mut proxy = ProxyLab::new(tag, env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let echo = proxy.echo_backend("echo", ECHO_PORT);
    let ws = Backend::websocket(
        &proxy.lab.server_ns,
        std::net::SocketAddr::from(([127, 0, 0, 1], WS_PORT)),
    );
    proxy.start(&ProxySetup {
        rest: format!(
            "  services:
    grpc: {{ target: \"127.0.0.1:{H2C_PORT}\", h2c: true }}
  routes:
    - {{ path: /ws, service: \"127.0.0.1:{WS_PORT}\" }}
    - {{ path: /grpc, service: grpc }}
  default_service: \"127.0.0.1:{ECHO_PORT}\"
"
        ),
        limits: limits.to_string(),
        ..ProxySetup::default()
    });
    (proxy, echo, ws)
}

/// A WebSocket session on `stream`: 20 text messages and a 256 KiB binary
/// one, each echoed back unchanged, with a quiet pause half-way, then a
/// clean close.
async fn chat<S>(stream: S, url: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = url.into_client_request().expect("a WebSocket request");
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake for {url}: {e}"));
    assert_eq!(response.status(), 101, "{url}: 101 Switching Protocols");
    let mut messages: Vec<Message> = (1..=20)
        .map(|i| Message::text(format!("hello {i} on {url}")))
        .collect();
    messages.push(Message::binary(vec![7u8; 256 * 1024]));
    for (i, message) in messages.into_iter().enumerate() {
        if i == 10 {
            // A pause longer than the entrypoint's idle_timeout (1s): an
            // open WebSocket is not an idle keep-alive connection.
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        socket.send(message.clone()).await.expect("send a message");
        let echoed = socket.next().await.expect("an echo").expect("a message");
        assert_eq!(echoed, message, "{url}: the echo comes back unchanged");
    }
    socket.close(None).await.expect("close the WebSocket");
}

#[test]
fn websocket_sessions_over_wss_and_ws_outlive_the_idle_timeout() {
    let test = "websocket_sessions_over_wss_and_ws_outlive_the_idle_timeout";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, _echo, ws) = start("sw", "idle_timeout: 1s");
    let client = &proxy.client;
    client.block_on(async {
        let tcp = client
            .connect(outsiders()[0], TLS_PORT)
            .await
            .expect("connect");
        let tls = client
            .tls_stream(tcp, "localhost", &[b"http/1.1"])
            .await
            .expect("TLS handshake");
        chat(tls, &format!("wss://localhost:{TLS_PORT}/ws/chat")).await;
        let tcp = client
            .connect(members()[6], PLAIN_PORT)
            .await
            .expect("connect");
        chat(tcp, &format!("ws://localhost:{PLAIN_PORT}/ws/chat")).await;
    });
    assert_eq!(ws.served(), 2, "two WebSocket sessions reached the backend");
    // Nor is a request whose answer takes longer than idle_timeout.
    let slow = proxy
        .send(&Call::plain(members()[0]).path("/delay/2500"))
        .expect("a request slower than idle_timeout");
    assert_eq!(slow.status, 200, "{}", slow.text());
}

#[test]
fn http2_works_end_to_end_from_curl_and_from_many_streams_on_one_connection() {
    let test = "http2_works_end_to_end_from_curl_and_from_many_streams_on_one_connection";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("curl", "curl")]) {
        return;
    }
    let (proxy, echo, _ws) = start("s2", "");
    let timeout = Duration::from_secs(10);
    for (args, version) in [
        (vec!["--http2", "https://localhost:8443/curl-h2"], "2"),
        (
            vec!["--http2-prior-knowledge", "http://localhost:8080/curl-h2c"],
            "2",
        ),
        (vec!["--http1.1", "https://localhost:8443/curl-h1"], "1.1"),
    ] {
        let mut all = vec!["--write-out", "\n%{http_version} %{http_code}"];
        all.extend(args.iter().copied());
        let out = curl(&proxy.lab, &proxy.pki.ca_file, &all, timeout);
        assert!(out.status.success(), "curl {args:?}: {out:?}");
        let (body, last) = out
            .stdout
            .rsplit_once('\n')
            .expect("curl's --write-out line");
        assert_eq!(last, format!("{version} 200"), "curl {args:?}: {out:?}");
        let echoed: serde_json::Value = serde_json::from_str(body).expect("the echo's JSON");
        let path = args.last().and_then(|u| u.rsplit_once('/')).map(|(_, p)| p);
        assert_eq!(echoed["path"], format!("/{}", path.unwrap_or_default()));
    }

    // Our own client: 40 streams at once on one HTTP/2 connection, each
    // waiting 500 ms at the backend, all done in about that time.
    let served_before = echo.served();
    let elapsed = proxy.client.block_on(async {
        let tcp = proxy
            .client
            .connect(members()[0], TLS_PORT)
            .await
            .expect("connect");
        let tls = proxy
            .client
            .tls_stream(tcp, "localhost", &[b"h2"])
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
        tokio::spawn(connection);
        let started = Instant::now();
        let streams: Vec<_> = (0..40)
            .map(|i| {
                let mut sender = sender.clone();
                tokio::spawn(async move {
                    let request = Request::get(format!("https://localhost/delay/500/{i}"))
                        .body(Empty::<bytes::Bytes>::new())
                        .expect("request");
                    let response = sender.send_request(request).await.expect("a response");
                    assert_eq!(response.version(), Version::HTTP_2);
                    let status = response.status();
                    let body = response.into_body().collect().await.expect("body");
                    (status, body.to_bytes())
                })
            })
            .collect();
        for (i, stream) in streams.into_iter().enumerate() {
            let (status, body) = stream.await.expect("stream task");
            assert_eq!(status, 200, "stream {i}: {body:?}");
            let echoed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(echoed["path"], format!("/delay/500/{i}"));
        }
        started.elapsed()
    });
    println!("40 concurrent h2 streams of 500 ms each took {elapsed:?}");
    assert_eq!(echo.served() - served_before, 40);
    assert!(
        elapsed < Duration::from_secs(3),
        "the streams ran side by side, not one after another: {elapsed:?}"
    );
}

#[test]
fn an_h2c_service_gets_http2_and_its_trailers_reach_the_client() {
    let test = "an_h2c_service_gets_http2_and_its_trailers_reach_the_client";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, _echo, _ws) = start("sc", "");
    let grpc = Backend::echo_h2c(
        &proxy.lab.server_ns,
        std::net::SocketAddr::from(([127, 0, 0, 1], H2C_PORT)),
        "grpc",
    );
    // A gRPC-shaped call: POST over HTTP/2 with `te: trailers`.
    let call = Call::tls(members()[0])
        .sni("localhost")
        .h2()
        .method("POST")
        .path("/grpc/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body("\0\0\0\0\x05hello");
    let reply = proxy
        .send(&call)
        .expect("a call through to the h2c backend");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.backend().as_deref(), Some("grpc"));
    let echoed = reply.json();
    assert_eq!(echoed["version"], "HTTP/2.0", "the backend got HTTP/2");
    assert_eq!(echoed["body_bytes"], 10, "the backend got the body");
    assert_eq!(
        reply.upstream_header("te").as_deref(),
        Some("trailers"),
        "`te: trailers` reached the backend"
    );
    let status = reply
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok());
    assert_eq!(
        status,
        Some("0"),
        "the grpc-status trailer came back: {:?}",
        reply.trailers
    );
    assert_eq!(grpc.served(), 1);
}

#[test]
fn a_100_mb_upload_and_download_stream_through_with_flat_memory() {
    let test = "a_100_mb_upload_and_download_stream_through_with_flat_memory";
    if !lab_ready(test, &[]) {
        return;
    }
    let (proxy, _echo, _ws) = start("sm", "");
    let pid = proxy.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(
        comm.starts_with("xdpgate-under"),
        "pid {pid} is the daemon: {comm}"
    );
    let size = 100 * MIB;
    let member = members()[0];
    // Warm up: connections, TLS sessions, buffers of an ordinary request.
    for call in [Call::tls(member).host("localhost"), Call::tls(member).h2()] {
        let reply = proxy
            .send(&call.method("POST").upload(4 * MIB))
            .expect("warm up");
        assert_eq!(reply.status, 200);
    }
    let (rss_before, peak_before) = memory_kib(pid);
    let timeout = Duration::from_secs(300);
    let mut figures = Vec::new();
    for (name, call) in [
        ("h1", Call::tls(member).host("localhost")),
        ("h2", Call::tls(outsiders()[6]).sni("localhost").h2()),
    ] {
        let upload = call.clone().method("POST").path("/upload").upload(size);
        let reply = proxy
            .send(&upload.timeout(timeout))
            .unwrap_or_else(|e| panic!("{name} upload: {e}"));
        assert_eq!(reply.status, 200, "{name} upload: {}", reply.text());
        assert_eq!(
            reply.json()["body_bytes"],
            size,
            "{name}: the backend got every byte"
        );
        figures.push(format!("{name} upload {:.1?}", reply.took));

        let download = call.path(&format!("/bytes/{size}")).count_body();
        let reply = proxy
            .send(&download.timeout(timeout))
            .unwrap_or_else(|e| panic!("{name} download: {e}"));
        assert_eq!(reply.status, 200, "{name} download");
        assert_eq!(reply.body_len, size, "{name}: the client got every byte");
        figures.push(format!("{name} download {:.1?}", reply.took));
    }
    let (rss_after, peak_after) = memory_kib(pid);
    println!(
        "100 MB each way: {}; daemon VmRSS {rss_before} -> {rss_after} KiB, \
         VmHWM {peak_before} -> {peak_after} KiB",
        figures.join(", ")
    );
    let grew = peak_after.saturating_sub(peak_before);
    assert!(
        grew < 40 * 1024,
        "the daemon's peak memory grew by {grew} KiB while 400 MB went through it \
         (VmHWM {peak_before} -> {peak_after} KiB)"
    );
}
