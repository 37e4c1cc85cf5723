//! A stand-in for Cloudflare's `/client/v4/ips` on 127.0.0.1: HTTPS with a
//! certificate from a CA generated per server (or plain HTTP), a scripted
//! answer, `If-None-Match` honoured like a real server and recorded.
use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

/// What the server answers to the next requests.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// Sent as the `ETag` header (quoted); a request whose `If-None-Match`
    /// equals it gets a 304.
    pub etag_header: Option<String>,
}

impl Reply {
    /// Cloudflare's answer for these prefixes, with `etag` both in the JSON
    /// (bare) and as the header (quoted).
    pub fn list(v4: &[&str], v6: &[&str], etag: &str) -> Reply {
        let mut reply = Reply::json_only(v4, v6, etag);
        reply.etag_header = Some(format!("\"{etag}\""));
        reply
    }

    /// As [`Reply::list`] without the `ETag` header.
    pub fn json_only(v4: &[&str], v6: &[&str], etag: &str) -> Reply {
        let body = serde_json::json!({
            "result": { "ipv4_cidrs": v4, "ipv6_cidrs": v6, "etag": etag },
            "success": true,
            "errors": [],
            "messages": [],
        });
        Reply::raw(200, &body.to_string())
    }

    pub fn raw(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_string(),
            etag_header: None,
        }
    }
}

#[derive(Default)]
struct Script {
    reply: Option<Reply>,
    /// The `If-None-Match` of every request, in order.
    if_none_match: Vec<Option<String>>,
}

pub struct TestApi {
    addr: SocketAddr,
    tls: bool,
    script: Arc<Mutex<Script>>,
    accept_loop: JoinHandle<()>,
    _dir: tempfile::TempDir,
    /// The PEM of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
}

impl TestApi {
    pub async fn https(reply: Reply) -> TestApi {
        TestApi::start(reply, true).await
    }

    pub async fn plain_http(reply: Reply) -> TestApi {
        TestApi::start(reply, false).await
    }

    async fn start(reply: Reply, tls: bool) -> TestApi {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (ca_pem, server_config) = test_pki();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write the test CA");
        let acceptor = tls.then(|| TlsAcceptor::from(Arc::new(server_config)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let script = Arc::new(Mutex::new(Script {
            reply: Some(reply),
            ..Script::default()
        }));
        let accept_loop = tokio::spawn(serve(listener, acceptor, Arc::clone(&script)));
        TestApi {
            addr,
            tls,
            script,
            accept_loop,
            _dir: dir,
            ca_file,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/client/v4/ips", self.addr)
    }

    pub fn reply_with(&self, reply: Reply) {
        self.script.lock().unwrap().reply = Some(reply);
    }

    /// The `If-None-Match` header of each request received so far.
    pub fn if_none_match_seen(&self) -> Vec<Option<String>> {
        self.script.lock().unwrap().if_none_match.clone()
    }

    /// Closes the listening socket: later connections are refused. The CA
    /// file stays.
    pub async fn stop(&mut self) {
        self.accept_loop.abort();
        let _ = (&mut self.accept_loop).await;
    }
}

async fn serve(listener: TcpListener, acceptor: Option<TlsAcceptor>, script: Arc<Mutex<Script>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let script = Arc::clone(&script);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = answer(&script, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = match acceptor {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                    }
                    Err(_) => return,
                },
                None => {
                    http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await
                }
            };
        });
    }
}

fn answer(script: &Mutex<Script>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let if_none_match = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut script = script.lock().unwrap();
    script.if_none_match.push(if_none_match.clone());
    let reply = script.reply.clone().expect("a scripted reply");
    let mut response = Response::builder();
    if let Some(etag) = &reply.etag_header {
        response = response.header(header::ETAG, etag);
    }
    let not_modified =
        reply.status == 200 && reply.etag_header.is_some() && if_none_match == reply.etag_header;
    let (status, body) = if not_modified {
        (304, String::new())
    } else {
        (reply.status, reply.body)
    };
    response
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// A CA and a server certificate for `localhost` and `127.0.0.1` signed by
/// it: the CA's PEM and the server's TLS config.
fn test_pki() -> (String, rustls::ServerConfig) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "xdpgate sets test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .expect("server TLS config");
    (ca_cert.pem(), config)
}
