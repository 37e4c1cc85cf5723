//! A stand-in Kubernetes API server for the Ingress watch: plain HTTP on
//! 127.0.0.1 in the server namespace, serving list and watch (chunked JSON
//! events, one per line) of the kinds in [`KINDS`] (one line per kind)
//! across all namespaces, from objects the test puts, changes and deletes.
//! Status updates (PUT or PATCH on `.../<name>/status`) are applied to the
//! object and recorded for the test to read. It can also
//! misbehave on cue: cut every open watch in the middle of an event, and
//! answer the next watch with `410 Gone` (an `ERROR` event with an `Expired`
//! Status, as a real API server does when the resource version is too old),
//! which forces the client to list again.
//!
//! With [`KubeApi::start_tls`] it serves HTTPS with a test CA's certificate
//! and refuses (401) every request without the expected service-account
//! bearer token, as the in-cluster client meets a real API server.
//!
//! It also serves the Gateway API's kinds (GatewayClass, Gateway, HTTPRoute,
//! ReferenceGrant) and takes merge patches of their `status` subresource,
//! which it reports to watchers as a change, as a real API server does.
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::net::{in_netns, runtime_for};

/// The kinds served, `(kind, apiVersion, plural)`: add a kind with a line.
pub const KINDS: &[(&str, &str, &str)] = &[
    ("Ingress", "networking.k8s.io/v1", "ingresses"),
    ("Secret", "v1", "secrets"),
    ("EndpointSlice", "discovery.k8s.io/v1", "endpointslices"),
    ("IngressClass", "networking.k8s.io/v1", "ingressclasses"),
    ("Node", "v1", "nodes"),
    ("Middleware", "traefik.io/v1alpha1", "middlewares"),
    ("Middleware", "traefik.containo.us/v1alpha1", "middlewares"),
    (
        "GatewayClass",
        "gateway.networking.k8s.io/v1",
        "gatewayclasses",
    ),
    ("Gateway", "gateway.networking.k8s.io/v1", "gateways"),
    ("HTTPRoute", "gateway.networking.k8s.io/v1", "httproutes"),
    (
        "ReferenceGrant",
        "gateway.networking.k8s.io/v1beta1",
        "referencegrants",
    ),
];

/// Where a kind is listed and watched across all namespaces.
fn collection_path(api_version: &str, plural: &str) -> String {
    match api_version {
        "v1" => format!("/api/v1/{plural}"),
        group => format!("/apis/{group}/{plural}"),
    }
}

/// A status update the daemon sent: which object, and the body.
#[derive(Clone, Debug)]
pub struct StatusUpdate {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub method: String,
    pub body: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Per kind (index into `KINDS`): `(namespace, name)` → object.
    objects: Vec<BTreeMap<(String, String), Value>>,
    status_updates: Vec<StatusUpdate>,
    /// Every change: `(resourceVersion, kind, type, object)`.
    events: Vec<(u64, usize, &'static str, Value)>,
}

struct Shared {
    store: Mutex<Store>,
    /// Bumped on every change; open watches wake on it.
    changed: watch::Sender<u64>,
    /// Bumped to cut every open watch mid-event.
    cut: watch::Sender<u64>,
    gone_next: AtomicBool,
    lists: Vec<AtomicU64>,
    watches: Vec<AtomicU64>,
    /// The bearer token every request must carry (`None`: no check).
    token: Option<String>,
    /// Requests refused for a missing or wrong token.
    unauthorized: AtomicU64,
}

/// How the stand-in serves over TLS: its certificate and key (PEM) and the
/// service-account token it accepts.
pub struct KubeTls<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    pub token: &'a str,
}

pub struct KubeApi {
    pub port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn kind_of(object: &Value) -> usize {
    let (kind, api_version) = (object["kind"].as_str(), object["apiVersion"].as_str());
    KINDS
        .iter()
        .position(|(k, v, _)| Some(*k) == kind && Some(*v) == api_version)
        .unwrap_or_else(|| panic!("the stand-in API serves no {kind:?} in {api_version:?}"))
}

fn key_of(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("default").to_string(),
        meta["name"].as_str().expect("metadata.name").to_string(),
    )
}

impl KubeApi {
    pub fn start(server_ns: &str, port: u16) -> KubeApi {
        Self::start_with(server_ns, port, None)
    }

    /// Serves HTTPS with `tls`'s certificate, as a real API server does, and
    /// answers `401 Unauthorized` to every request without
    /// `Authorization: Bearer <tls.token>`.
    pub fn start_tls(server_ns: &str, port: u16, tls: &KubeTls) -> KubeApi {
        Self::start_with(server_ns, port, Some(tls))
    }

    fn start_with(server_ns: &str, port: u16, tls: Option<&KubeTls>) -> KubeApi {
        let acceptor = tls.map(|tls| {
            let chain = rustls_pki_types::CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("the stand-in's certificate PEM");
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes())
                .expect("the stand-in's key PEM");
            let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the stand-in's certificate and key");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = in_netns(server_ns, || {
            std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .unwrap_or_else(|e| panic!("bind the stand-in API on 127.0.0.1:{port}: {e}"))
        });
        let (runtime, listener) = runtime_for(listener, 1);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                objects: vec![BTreeMap::new(); KINDS.len()],
                ..Store::default()
            }),
            changed: watch::Sender::new(0),
            cut: watch::Sender::new(0),
            gone_next: AtomicBool::new(false),
            lists: KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
            watches: KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
            token: tls.map(|t| t.token.to_string()),
            unauthorized: AtomicU64::new(0),
        });
        runtime.spawn(serve(listener, shared.clone(), acceptor));
        KubeApi {
            port,
            shared,
            runtime: Some(runtime),
        }
    }

    /// A kubeconfig that points at this server, without credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\n\
             clusters: [{{ name: lab, cluster: {{ server: \"http://127.0.0.1:{}\" }} }}]\n\
             users: [{{ name: lab, user: {{}} }}]\n\
             contexts: [{{ name: lab, context: {{ cluster: lab, user: lab }} }}]\n",
            self.port
        )
    }

    /// Creates or replaces an object (its kind says where it goes).
    pub fn put(&self, mut object: Value) {
        let kind = kind_of(&object);
        let key = key_of(&object);
        let mut store = self.shared.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if object["metadata"]["creationTimestamp"].is_null() {
            let old = store.objects[kind].get(&key);
            let created = old
                .map(|o| o["metadata"]["creationTimestamp"].clone())
                .unwrap_or_else(|| json!(format!("2025-01-01T00:00:{:02}Z", rv % 60)));
            object["metadata"]["creationTimestamp"] = created;
        }
        let kind_event = if store.objects[kind].contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.objects[kind].insert(key, object.clone());
        store.events.push((rv, kind, kind_event, object));
        drop(store);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    pub fn delete(&self, like: &Value) {
        let kind = kind_of(like);
        let key = key_of(like);
        let mut store = self.shared.store.lock().unwrap();
        let Some(mut object) = store.objects[kind].remove(&key) else {
            panic!("no {key:?} to delete");
        };
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        store.events.push((rv, kind, "DELETED", object));
        drop(store);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// The object as the server holds it now (with any status written),
    /// found by the kind and key of `like`.
    pub fn get(&self, like: &Value) -> Option<Value> {
        let store = self.shared.store.lock().unwrap();
        store.objects[kind_of(like)].get(&key_of(like)).cloned()
    }

    /// Cuts every open watch in the middle of an event.
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// The next Ingress watch request gets `410 Gone`.
    pub fn gone_on_next_watch(&self) {
        self.shared.gone_next.store(true, Ordering::SeqCst);
    }

    /// Every status update received so far, oldest first.
    pub fn status_updates(&self) -> Vec<StatusUpdate> {
        self.shared.store.lock().unwrap().status_updates.clone()
    }

    /// Status writes taken so far for the kind of `like`.
    pub fn status_writes(&self, like: &Value) -> u64 {
        let kind = KINDS[kind_of(like)].0;
        let store = self.shared.store.lock().unwrap();
        store
            .status_updates
            .iter()
            .filter(|u| u.kind == kind)
            .count() as u64
    }

    /// Requests refused for a missing or wrong bearer token.
    pub fn unauthorized(&self) -> u64 {
        self.shared.unauthorized.load(Ordering::SeqCst)
    }

    /// `(lists, watches)` served for Ingresses so far.
    pub fn ingress_requests(&self) -> (u64, u64) {
        (
            self.shared.lists[0].load(Ordering::SeqCst),
            self.shared.watches[0].load(Ordering::SeqCst),
        )
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let request = Request::from_parts(parts, body);
                    if !authorized(&shared, &request) {
                        shared.unauthorized.fetch_add(1, Ordering::SeqCst);
                        return Ok::<_, Infallible>(json_response(
                            401,
                            &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "Unauthorized", "code": 401,
                                     "message": "Unauthorized" }),
                        ));
                    }
                    Ok::<_, Infallible>(answer(&shared, &request))
                }
            });
            match tls {
                Some(tls) => {
                    // A client that refuses our certificate ends here.
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                }
            }
        });
    }
}

/// With a token configured, the request must carry exactly that bearer.
fn authorized(shared: &Shared, request: &Request<Bytes>) -> bool {
    let Some(token) = &shared.token else {
        return true;
    };
    request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(token.as_str())
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

fn answer(shared: &Arc<Shared>, request: &Request<Bytes>) -> Response<Body> {
    let path = request.uri().path();
    if path.ends_with("/status") && matches!(request.method().as_str(), "PUT" | "PATCH") {
        return write_status(shared, request);
    }
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let Some(kind) = KINDS
        .iter()
        .position(|(_, v, plural)| collection_path(v, plural) == path)
    else {
        return json_response(
            404,
            &json!({ "kind": "Status", "code": 404, "message": path }),
        );
    };
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching {
        shared.lists[kind].fetch_add(1, Ordering::SeqCst);
        let store = shared.store.lock().unwrap();
        let (kind_name, api_version, _) = KINDS[kind];
        let list_kind = format!("{kind_name}List");
        let items: Vec<Value> = store.objects[kind].values().cloned().collect();
        return json_response(
            200,
            &json!({
                "kind": list_kind,
                "apiVersion": api_version,
                "metadata": { "resourceVersion": store.rv.to_string() },
                "items": items,
            }),
        );
    }
    shared.watches[kind].fetch_add(1, Ordering::SeqCst);
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if kind == 0 && shared.gone_next.swap(false, Ordering::SeqCst) {
        let gone = json!({
            "type": "ERROR",
            "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"),
                "reason": "Expired", "code": 410
            }
        });
        let body = Full::new(Bytes::from(format!("{gone}\n"))).boxed();
        return Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .expect("response");
    }
    watch_stream(shared.clone(), kind, from)
}

/// `PUT` or `PATCH` (JSON merge patch) of an object's status:
/// `/api[s/<group>]/<version>[/namespaces/<ns>]/<plural>/<name>/status`.
/// The object's status changes, and a `MODIFIED` event goes out, as from a
/// real API server. A cluster-wide object's key has the namespace `default`.
fn write_status(shared: &Arc<Shared>, request: &Request<Bytes>) -> Response<Body> {
    let path = request.uri().path();
    let not_found = || {
        json_response(
            404,
            &json!({ "kind": "Status", "code": 404, "message": path }),
        )
    };
    let Some(object_path) = path.strip_suffix("/status") else {
        return not_found();
    };
    let Some((collection, name)) = object_path.rsplit_once('/') else {
        return not_found();
    };
    let found = KINDS.iter().enumerate().find_map(|(kind, (_, v, plural))| {
        let base = collection_path(v, "");
        let base = base.trim_end_matches('/');
        let rest = collection.strip_prefix(base)?;
        match rest.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
            [p] if p == *plural => Some((kind, "default".to_string())),
            ["namespaces", ns, p] if p == *plural => Some((kind, ns.to_string())),
            _ => None,
        }
    });
    let Some((kind, namespace)) = found else {
        return not_found();
    };
    let name = name.to_string();
    let Ok(body) = serde_json::from_slice::<Value>(request.body()) else {
        return json_response(
            400,
            &json!({ "kind": "Status", "code": 400, "message": "body" }),
        );
    };
    let mut store = shared.store.lock().unwrap();
    store.status_updates.push(StatusUpdate {
        kind: KINDS[kind].0,
        namespace: namespace.clone(),
        name: name.clone(),
        method: request.method().to_string(),
        body: body.clone(),
    });
    store.rv += 1;
    let rv = store.rv;
    let Some(object) = store.objects[kind].get_mut(&(namespace, name)) else {
        return not_found();
    };
    if request.method() == hyper::Method::PATCH {
        merge_patch(&mut object["status"], &body["status"]);
    } else {
        object["status"] = body["status"].clone();
    }
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    let object = object.clone();
    store.events.push((rv, kind, "MODIFIED", object.clone()));
    drop(store);
    shared.changed.send_modify(|n| *n += 1);
    json_response(200, &object)
}

/// RFC 7386: objects merge key by key, `null` removes, the rest replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Events of `kind` after `from`, then each new one as it happens, until the
/// watch is cut (mid-event) or the client goes.
fn watch_stream(shared: Arc<Shared>, kind: usize, from: u64) -> Response<Body> {
    let changed = shared.changed.subscribe();
    let mut cut = shared.cut.subscribe();
    cut.mark_unchanged();
    let state = (shared, changed, cut, from, false);
    let stream = futures_util::stream::unfold(
        state,
        move |(shared, mut changed, mut cut, mut last, done)| async move {
            if done {
                return None;
            }
            loop {
                // A cut wins over pending events: what changes after it
                // must reach the client through its next watch.
                if cut.has_changed().unwrap_or(true) {
                    let frame = Frame::data(Bytes::from_static(b"{\"type\":\"MODIFIED\",\"obj"));
                    return Some((Ok(frame), (shared, changed, cut, last, true)));
                }
                let lines: String = {
                    let store = shared.store.lock().unwrap();
                    let mut lines = String::new();
                    for (rv, k, event, object) in &store.events {
                        if *k == kind && *rv > last {
                            lines.push_str(&json!({ "type": event, "object": object }).to_string());
                            lines.push('\n');
                            last = *rv;
                        }
                    }
                    lines
                };
                if !lines.is_empty() {
                    let frame = Frame::data(Bytes::from(lines));
                    return Some((
                        Ok::<_, Infallible>(frame),
                        (shared, changed, cut, last, false),
                    ));
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = cut.changed() => {
                        // Half an event, then the end: the client must notice.
                        let frame = Frame::data(Bytes::from_static(b"{\"type\":\"MODIFIED\",\"obj"));
                        return Some((Ok(frame), (shared, changed, cut, last, true)));
                    }
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "application/json")
        .body(StreamBody::new(stream).boxed())
        .expect("response")
}

/// An EndpointSlice of Service `service` in `ns` with one ready endpoint,
/// 127.0.0.1:`port` (port name `http`), as the watch tests feed it.
pub fn endpoint_slice(ns: &str, service: &str, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abcde"),
            "namespace": ns,
            "labels": { "kubernetes.io/service-name": service }
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
        "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": true } }]
    })
}
