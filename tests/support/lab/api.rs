//! A stand-in for Cloudflare's `/client/v4/ips`, served over HTTPS from
//! inside the server namespace with a certificate from a test CA, answering
//! whatever the test scripts and recording every request it gets.
use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
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
use tokio_rustls::TlsAcceptor;

use super::net::{in_netns, runtime_for};

/// A test CA (its PEM written to `ca_file`) and a server certificate for
/// 127.0.0.1 and localhost signed by it.
#[derive(Clone)]
pub struct TestPki {
    pub ca_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

impl TestPki {
    pub fn new(ca_file: &Path) -> TestPki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "xdpgate lab test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .expect("server certificate");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("server TLS config");
        std::fs::write(ca_file, ca_cert.pem()).expect("write the test CA");
        TestPki {
            ca_file: ca_file.to_path_buf(),
            server: Arc::new(server),
        }
    }
}

/// What the server answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Cloudflare's JSON for these prefixes, with `etag` bare in the JSON
    /// and quoted in the `ETag` header; a request whose `If-None-Match`
    /// carries that tag gets 304 Not Modified.
    List {
        v4: Vec<String>,
        v6: Vec<String>,
        etag: String,
    },
    /// Any status and body, no `ETag`.
    Raw { status: u16, body: String },
}

impl Reply {
    pub fn list(v4: &[&str], v6: &[&str], etag: &str) -> Reply {
        let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Reply::List {
            v4: own(v4),
            v6: own(v6),
            etag: etag.to_string(),
        }
    }

    pub fn raw(status: u16, body: &str) -> Reply {
        Reply::Raw {
            status,
            body: body.to_string(),
        }
    }
}

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Served {
    pub if_none_match: Option<String>,
    pub status: u16,
    /// The reply that was scripted when it came.
    pub reply: Reply,
}

#[derive(Default)]
struct Script {
    reply: Option<Reply>,
    served: Vec<Served>,
}

/// The HTTPS server. Its listening socket lives in the server namespace;
/// dropping the server (or [`ApiServer::stop`]) closes it, so connections
/// are refused from then on.
pub struct ApiServer {
    pub port: u16,
    script: Arc<Mutex<Script>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ApiServer {
    pub fn start(server_ns: &str, port: u16, pki: &TestPki, reply: Reply) -> ApiServer {
        let listener = in_netns(server_ns, || {
            std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .unwrap_or_else(|e| panic!("bind the test API on 127.0.0.1:{port}: {e}"))
        });
        let (runtime, listener) = runtime_for(listener, 1);
        let script = Arc::new(Mutex::new(Script {
            reply: Some(reply),
            served: Vec::new(),
        }));
        let acceptor = TlsAcceptor::from(Arc::clone(&pki.server));
        runtime.spawn(serve(listener, acceptor, Arc::clone(&script)));
        ApiServer {
            port,
            script,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/client/v4/ips", self.port)
    }

    pub fn reply_with(&self, reply: Reply) {
        self.script.lock().unwrap().reply = Some(reply);
    }

    /// Every request answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.script.lock().unwrap().served.clone()
    }

    /// Closes the listening socket and every connection.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    script: Arc<Mutex<Script>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let script = Arc::clone(&script);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(&script, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
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
    let reply = script.reply.clone().expect("a scripted reply");
    let mut response = Response::builder().header(header::CONTENT_TYPE, "application/json");
    let (status, body) = match &reply {
        Reply::List { v4, v6, etag } => {
            let quoted = format!("\"{etag}\"");
            response = response.header(header::ETAG, &quoted);
            if if_none_match.as_deref() == Some(quoted.as_str()) {
                (304, String::new())
            } else {
                let body = serde_json::json!({
                    "result": { "ipv4_cidrs": v4, "ipv6_cidrs": v6, "etag": etag },
                    "success": true,
                    "errors": [],
                    "messages": [],
                });
                (200, body.to_string())
            }
        }
        Reply::Raw { status, body } => (*status, body.clone()),
    };
    script.served.push(Served {
        if_none_match,
        status,
        reply,
    });
    response
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
