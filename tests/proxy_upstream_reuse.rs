//! Upstream connection reuse under load: clients that keep their TLS
//! connections alive and send one request after another, many at once,
//! must be served over a pool of upstream keep-alive connections no larger
//! than the number of requests in flight. A proxy that closed and reopened
//! upstream connections under load (the churn `bench proxy` showed against
//! nginx: ~1,200 upstream connections closed in 3 s) costs the upstream a
//! TCP handshake per request and fills the node with TIME-WAIT sockets.
//! Needs root.
use http_body_util::{BodyExt as _, Empty};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use xdpgate_tests::lab::{lab_ready, members, ProxyLab, ProxySetup, TLS_PORT};

const PORT: u16 = 9300;
/// Client connections at once, each sending its requests one after another.
const CLIENTS: usize = 32;
const REQUESTS_EACH: usize = 150;

/// Sends `REQUESTS_EACH` GETs over one kept-alive TLS connection; returns
/// how many answered 200 with the backend's body.
async fn keep_alive_client(proxy: &ProxyLab) -> usize {
    let tcp = proxy
        .client
        .connect(members()[0], TLS_PORT)
        .await
        .expect("connect to the TLS entrypoint");
    let tls = proxy
        .client
        .tls_stream(tcp, "localhost", &[b"http/1.1"])
        .await
        .expect("TLS handshake");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut ok = 0;
    for _ in 0..REQUESTS_EACH {
        let request = Request::get("/")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .expect("a request");
        // The previous response has been read; the connection takes the
        // next request once hyper has seen it back to idle.
        if sender.ready().await.is_err() {
            break;
        }
        let Ok(response) = sender.send_request(request).await else {
            break;
        };
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let body = body.map(|b| String::from_utf8_lossy(&b).into_owned());
        if status == 200 && body.is_ok_and(|b| b.contains("\"backend\":\"reuse\"")) {
            ok += 1;
        }
    }
    ok
}

#[test]
fn keep_alive_load_reuses_upstream_connections_instead_of_opening_new_ones() {
    let test = "keep_alive_load_reuses_upstream_connections_instead_of_opening_new_ones";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("ur", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let backend = proxy.echo_backend("reuse", PORT);
    proxy.start(&ProxySetup {
        rest: format!("  default_service: \"127.0.0.1:{PORT}\"\n"),
        ..ProxySetup::default()
    });
    let proxy = &proxy;
    let answered: usize = proxy.client.block_on(async {
        let clients = (0..CLIENTS).map(|_| keep_alive_client(proxy));
        futures_util::future::join_all(clients)
            .await
            .into_iter()
            .sum()
    });
    assert_eq!(
        answered,
        CLIENTS * REQUESTS_EACH,
        "every request through a kept-alive connection is answered 200 by the backend"
    );
    let accepted = backend.accepted();
    assert!(
        accepted <= CLIENTS as u64,
        "{CLIENTS} clients kept their connections alive for {REQUESTS_EACH} requests each, \
         so at most {CLIENTS} requests were in flight, yet the backend accepted {accepted} \
         connections from the proxy: it closed upstream connections and opened new ones"
    );
}
