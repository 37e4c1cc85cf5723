//! Kubernetes objects for the Ingress tests, as JSON (which is YAML too, so
//! the same value goes into a watched file or out of the stand-in API
//! server), and a stopwatch for how long the proxy takes to follow a change.
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{client::Call, proxy::Issued, ProxyLab};

/// An Ingress of class `xdpgate`: `rules` are `(host, service, port)`, each
/// with the path prefix `/`; `tls` names a Secret for every host.
pub fn ingress(ns: &str, name: &str, rules: &[(&str, &str, u16)], tls: Option<&str>) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|(host, service, port)| {
            json!({
                "host": host,
                "http": { "paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": { "service": { "name": service, "port": { "number": port } } }
                }]}
            })
        })
        .collect();
    let mut spec = json!({ "ingressClassName": "xdpgate", "rules": rules });
    if let Some(secret) = tls {
        let hosts: Vec<&str> = spec["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["host"].as_str())
            .collect();
        let hosts: Vec<String> = hosts.into_iter().map(String::from).collect();
        spec["tls"] = json!([{ "hosts": hosts, "secretName": secret }]);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": { "name": name, "namespace": ns },
        "spec": spec
    })
}

/// A `kubernetes.io/tls` Secret holding `issued`.
pub fn tls_secret(ns: &str, name: &str, issued: &Issued) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": ns },
        "type": "kubernetes.io/tls",
        "data": { "tls.crt": b64(&issued.cert_pem), "tls.key": b64(&issued.key_pem) }
    })
}

/// Objects as one multi-document YAML text.
pub fn yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| format!("---\n{o}\n"))
        .collect::<String>()
}

/// Sends `call` every 20 ms until `answered` holds for the reply (or error)
/// and returns how long that took; panics after `limit` with the last reply.
pub fn time_until(
    proxy: &ProxyLab,
    call: &Call,
    limit: Duration,
    what: &str,
    answered: impl Fn(&std::io::Result<super::client::Reply>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let reply = proxy.send(&call.clone().timeout(Duration::from_secs(1)));
        if answered(&reply) {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let last = match &reply {
                Ok(r) => format!("{} from {:?}: {}", r.status, r.backend(), r.text().trim()),
                Err(e) => e.to_string(),
            };
            panic!("{what}: not within {limit:?}; last answer: {last}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `answered` for [`time_until`]: a 200 from the backend named `backend`.
pub fn from_backend(backend: &str) -> impl Fn(&std::io::Result<super::client::Reply>) -> bool + '_ {
    move |reply| {
        reply
            .as_ref()
            .is_ok_and(|r| r.status == 200 && r.backend().as_deref() == Some(backend))
    }
}

/// `answered` for [`time_until`]: the proxy's own 404 (no route).
pub fn no_route(reply: &std::io::Result<super::client::Reply>) -> bool {
    reply
        .as_ref()
        .is_ok_and(|r| r.status == 404 && r.backend().is_none())
}
