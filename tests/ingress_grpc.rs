//! gRPC-style traffic through the proxy: an HTTP/2 client over TLS, an h2c
//! upstream (`h2c: true`) that answers with a body and trailers, and the
//! trailers (`grpc-status`, `grpc-message`) arriving at the client. `nghttp`
//! (nghttp2-client) is the client, so nobody here wrote both ends. Needs root.
use std::{convert::Infallible, net::Ipv4Addr, process::Command};

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::{body::Frame, service::service_fn, HeaderMap, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use xdpgate_tests::lab::{in_netns, lab_ready, Daemon, Lab, Workdir, SERVER_V4};

const TLS_PORT: u16 = 8443;
const BACKEND: u16 = 9200;

/// An HTTP/2 prior-knowledge backend in the server namespace: every request
/// gets `hello` and the trailers a gRPC server sends.
fn start_h2c_backend(server_ns: &str) -> std::thread::JoinHandle<()> {
    let listener = in_netns(server_ns, || {
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, BACKEND)).expect("backend listens");
        listener.set_nonblocking(true).unwrap();
        listener
    });
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service = service_fn(|_request| async {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        trailers.insert("grpc-message", "all-good".parse().unwrap());
                        let frames = futures_util::stream::iter([
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello"))),
                            Ok(Frame::trailers(trailers)),
                        ]);
                        let mut response = Response::new(StreamBody::new(frames));
                        response
                            .headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    })
}

#[test]
fn grpc_trailers_pass_through_from_an_h2c_upstream_to_an_h2_client() {
    let test = "grpc_trailers_pass_through_from_an_h2c_upstream_to_an_h2_client";
    if !lab_ready(test, &["nghttp"]) {
        return;
    }
    let lab = Lab::new("grp");
    let work = Workdir::new("grpc", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backend = start_h2c_backend(&lab.server_ns);
    let config = format!(
        "filter:
  interfaces: [{}]
  sets:
    members: {{ cidrs: [198.51.100.0/29] }}
  allow:
    - {{ tcp: [22], from: [members] }}
proxy:
  entrypoints:
    websecure: {{ listen: \"[::]:{TLS_PORT}\", tls: {{}} }}
  services:
    greeter: {{ target: \"127.0.0.1:{BACKEND}\", h2c: true }}
  routes:
    - {{ path: /helloworld.Greeter, service: greeter }}
  access_log: {{ enabled: false }}
",
        lab.server_if
    );
    let path = work.write("config.yaml", &config);
    let _daemon = Daemon::start_ready(&lab, &work, &path, "daemon");

    let url = format!("https://{SERVER_V4}:{TLS_PORT}/helloworld.Greeter/SayHello");
    let out = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", lab.client_ns))
        .args([
            "nghttp",
            "-v",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
        ])
        .arg(&url)
        .output()
        .expect("run nghttp");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nghttp failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(":status: 200"), "status 200 over h2:\n{text}");
    assert!(text.contains("hello"), "the body arrived:\n{text}");
    assert!(
        text.contains("grpc-status: 0") && text.contains("grpc-message: all-good"),
        "the upstream's trailers reached the client:\n{text}"
    );
}
