//! Clients of the proxy, in the client namespace: each request opens its own
//! connection from a chosen source address (a member or an outsider), over
//! plain HTTP or TLS (trusting the test CA, optionally presenting a client
//! certificate), as HTTP/1.1 or HTTP/2 (ALPN), with hyper's client
//! connections. Also the raw pieces the WebSocket and certificate tests need:
//! a TLS stream, and the certificate a handshake was answered with.
use std::{
    io,
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Empty, Full};
use hyper::{client::conn, header, HeaderMap, Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::{
    backend::Filler,
    net::{in_netns, server_addr},
    proxy::{PLAIN_PORT, TLS_PORT},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RequestBody = BoxBody<Bytes, BoxError>;

/// One request to the proxy, built up from where it comes from.
#[derive(Clone, Debug)]
pub struct Call {
    source: IpAddr,
    port: u16,
    tls: bool,
    sni: Option<String>,
    h2: bool,
    method: String,
    host: Option<String>,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    /// Bytes of a generated body sent instead of `body`.
    upload: Option<u64>,
    /// Send `upload` without a length (chunked on HTTP/1.1).
    chunked: bool,
    /// Count the response body instead of keeping it.
    count_body: bool,
    timeout: Duration,
}

impl Call {
    /// A GET of `/` from `source` to the plain entrypoint.
    pub fn plain(source: IpAddr) -> Call {
        Call {
            source,
            port: PLAIN_PORT,
            tls: false,
            sni: None,
            h2: false,
            method: "GET".into(),
            host: None,
            path: "/".into(),
            headers: Vec::new(),
            body: None,
            upload: None,
            chunked: false,
            count_body: false,
            timeout: Duration::from_secs(10),
        }
    }

    /// A GET of `/` from `source` to the TLS entrypoint. The SNI is the
    /// host's name (see [`Call::host`]) unless set with [`Call::sni`].
    pub fn tls(source: IpAddr) -> Call {
        Call {
            port: TLS_PORT,
            tls: true,
            ..Call::plain(source)
        }
    }

    pub fn port(mut self, port: u16) -> Call {
        self.port = port;
        self
    }

    /// The `Host` header (HTTP/1.1) or `:authority` (HTTP/2), as given.
    pub fn host(mut self, host: &str) -> Call {
        self.host = Some(host.to_string());
        self
    }

    pub fn sni(mut self, sni: &str) -> Call {
        self.sni = Some(sni.to_string());
        self
    }

    pub fn path(mut self, path: &str) -> Call {
        self.path = path.to_string();
        self
    }

    /// HTTP/2: ALPN `h2` on TLS (prior knowledge on plain HTTP).
    pub fn h2(mut self) -> Call {
        self.h2 = true;
        self
    }

    pub fn method(mut self, method: &str) -> Call {
        self.method = method.to_string();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Call {
        self.body = Some(body.into());
        self
    }

    /// Sends a generated body of `bytes` bytes, streamed (never in memory).
    pub fn upload(mut self, bytes: u64) -> Call {
        self.upload = Some(bytes);
        self
    }

    /// Sends the [`Call::upload`] body without declaring its length:
    /// `Transfer-Encoding: chunked` on HTTP/1.1, no `content-length` on h2.
    pub fn chunked(mut self) -> Call {
        self.chunked = true;
        self
    }

    /// Reads the response body to its end but keeps only its length.
    pub fn count_body(mut self) -> Call {
        self.count_body = true;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Call {
        self.timeout = timeout;
        self
    }

    fn sni_name(&self) -> String {
        self.sni.clone().unwrap_or_else(|| {
            let host = self.host.as_deref().unwrap_or("localhost");
            // Without the port; an address literal has no SNI anyway.
            match host.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.into(),
                _ => host.to_string(),
            }
        })
    }
}

/// An answer as the client saw it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    /// Empty when the call only counted the body.
    pub body: Bytes,
    pub body_len: u64,
    /// Trailers after the body, if any came.
    pub trailers: Option<HeaderMap>,
    /// Time to the end of the body.
    pub took: Duration,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (the echo backend's answer); panics otherwise.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// Which echo backend answered (its `x-backend` header).
    pub fn backend(&self) -> Option<String> {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// A request header as the echo backend received it, repeated lines
    /// joined with ", ".
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let values = self.json()["headers"][name.to_ascii_lowercase()]
            .as_array()?
            .clone();
        Some(
            values
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// Makes the calls, on a runtime of its own.
pub struct Client {
    connector: Arc<Connector>,
    runtime: tokio::runtime::Runtime,
}

/// What a connection needs: the namespace, the CA, the client certificate.
struct Connector {
    client_ns: String,
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl Client {
    /// A client in `client_ns` that trusts the CA in `ca_file`.
    pub fn new(client_ns: &str, ca_file: &Path) -> Client {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).expect("read the test CA") {
            roots
                .add(cert.expect("a CA certificate"))
                .expect("add the test CA");
        }
        Client {
            connector: Arc::new(Connector {
                client_ns: client_ns.to_string(),
                roots: Arc::new(roots),
                identity: None,
            }),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime"),
        }
    }

    /// Presents this certificate (PEM chain and key) when a server asks.
    pub fn with_identity(self, cert_pem: &str, key_pem: &str) -> Client {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("client certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("client key PEM");
        Client {
            connector: Arc::new(Connector {
                client_ns: self.connector.client_ns.clone(),
                roots: self.connector.roots.clone(),
                identity: Some((chain, Arc::new(key))),
            }),
            runtime: self.runtime,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Sends `call` on a new connection and reads the whole answer.
    pub fn send(&self, call: &Call) -> io::Result<Reply> {
        self.block_on(self.send_async(call))
    }

    /// As [`Client::send`], in the background.
    pub fn spawn(&self, call: Call) -> tokio::task::JoinHandle<io::Result<Reply>> {
        let connector = self.connector.clone();
        self.runtime
            .spawn(async move { connector.send(&call).await })
    }

    pub async fn send_async(&self, call: &Call) -> io::Result<Reply> {
        self.connector.send(call).await
    }

    /// A TCP connection from `source` (in the client namespace) to the
    /// server's `port`.
    pub async fn connect(&self, source: IpAddr, port: u16) -> io::Result<TcpStream> {
        self.connector.connect(source, port).await
    }

    /// A TLS session over `tcp` that verifies the server against the test CA
    /// for `sni`, offering `alpn`.
    pub async fn tls_stream(
        &self,
        tcp: TcpStream,
        sni: &str,
        alpn: &[&[u8]],
    ) -> io::Result<TlsStream<TcpStream>> {
        self.connector.tls_stream(tcp, sni, alpn).await
    }

    /// The leaf certificate the TLS entrypoint answers a handshake for `sni`
    /// with (`None`: no SNI), whatever names it carries.
    pub fn served_certificate(&self, source: IpAddr, sni: Option<&str>) -> io::Result<Vec<u8>> {
        self.block_on(async {
            let tcp = self.connect(source, TLS_PORT).await?;
            let mut config = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(io::Error::other)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything))
                .with_no_client_auth();
            config.enable_sni = sni.is_some();
            let tls = handshake(config, tcp, sni.unwrap_or("no-sni.invalid")).await?;
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .ok_or_else(|| io::Error::other("no server certificate"))?;
            Ok(leaf.as_ref().to_vec())
        })
    }
}

impl Connector {
    async fn send(&self, call: &Call) -> io::Result<Reply> {
        match tokio::time::timeout(call.timeout, self.exchange(call)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete answer within {:?}", call.timeout),
            )),
        }
    }

    async fn exchange(&self, call: &Call) -> io::Result<Reply> {
        let started = Instant::now();
        let tcp = self.connect(call.source, call.port).await?;
        let request = build_request(call)?;
        let response = if call.tls {
            let alpn: &[u8] = if call.h2 { b"h2" } else { b"http/1.1" };
            let tls = self.tls_stream(tcp, &call.sni_name(), &[alpn]).await?;
            send_on(TokioIo::new(tls), call.h2, request).await?
        } else {
            send_on(TokioIo::new(tcp), call.h2, request).await?
        };
        let (parts, mut body) = response.into_parts();
        let mut kept = Vec::new();
        let mut body_len = 0u64;
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(with_causes)?;
            if let Some(data) = frame.data_ref() {
                body_len += data.len() as u64;
                if !call.count_body {
                    kept.extend_from_slice(data);
                }
            }
            if let Some(map) = frame.trailers_ref() {
                trailers = Some(map.clone());
            }
        }
        Ok(Reply {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body: Bytes::from(kept),
            body_len,
            trailers,
            took: started.elapsed(),
        })
    }

    async fn connect(&self, source: IpAddr, port: u16) -> io::Result<TcpStream> {
        let socket = socket_in(&self.client_ns, source)?;
        socket.connect(server_addr(source, port)).await
    }

    async fn tls_stream(
        &self,
        tcp: TcpStream,
        sni: &str,
        alpn: &[&[u8]],
    ) -> io::Result<TlsStream<TcpStream>> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(io::Error::other)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        handshake(config, tcp, sni).await
    }
}

/// An error with its causes, `a: b: c`, so a TLS alert behind hyper's
/// "connection error" shows.
fn with_causes(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    io::Error::other(text)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn handshake(
    config: ClientConfig,
    tcp: TcpStream,
    sni: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(sni.to_string()).map_err(io::Error::other)?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// A TCP socket in namespace `ns`, bound to `source`, not yet connected.
pub fn socket_in(ns: &str, source: IpAddr) -> io::Result<TcpSocket> {
    let stream: std::net::TcpStream = in_netns(ns, || {
        let domain = if source.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&std::net::SocketAddr::new(source, 0).into())?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        Ok::<_, io::Error>(socket.into())
    })?;
    Ok(TcpSocket::from_std_stream(stream))
}

/// A body that does not say how long it is, so that hyper streams it
/// chunked instead of sending a `content-length`.
struct Unsized<B>(B);

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Unsized<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

fn build_request(call: &Call) -> io::Result<Request<RequestBody>> {
    let host = call
        .host
        .clone()
        .unwrap_or_else(|| server_addr(call.source, call.port).to_string());
    let uri = if call.h2 {
        let scheme = if call.tls { "https" } else { "http" };
        format!("{scheme}://{host}{}", call.path)
    } else {
        call.path.clone()
    };
    let body: RequestBody = match (&call.body, call.upload) {
        (_, Some(bytes)) if call.chunked => Unsized(Filler { left: bytes })
            .map_err(|never| match never {})
            .boxed(),
        (_, Some(bytes)) => Filler { left: bytes }
            .map_err(|never| match never {})
            .boxed(),
        (Some(body), None) => Full::new(body.clone())
            .map_err(|never| match never {})
            .boxed(),
        (None, None) => Empty::new().map_err(|never| match never {}).boxed(),
    };
    let mut builder = Request::builder().method(call.method.as_str()).uri(uri);
    if !call.h2 {
        builder = builder.header(header::HOST, &host);
    }
    for (name, value) in &call.headers {
        builder = builder.header(name, value);
    }
    if let Some(bytes) = call.upload.filter(|_| !call.chunked) {
        builder = builder.header(header::CONTENT_LENGTH, bytes);
    }
    builder.body(body).map_err(io::Error::other)
}

async fn send_on<I>(
    io: TokioIo<I>,
    h2: bool,
    request: Request<RequestBody>,
) -> io::Result<hyper::Response<hyper::body::Incoming>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (mut sender, connection) = conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(with_causes)?;
        tokio::spawn(connection);
        sender.send_request(request).await.map_err(with_causes)
    } else {
        let (mut sender, connection) = conn::http1::handshake(io).await.map_err(with_causes)?;
        tokio::spawn(connection.with_upgrades());
        sender.send_request(request).await.map_err(with_causes)
    }
}

/// Accepts any server certificate: for looking at which one was served, and
/// for load clients that measure the proxy, not the PKI.
#[derive(Debug)]
pub struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
