//! A Gateway's listeners as xdpgate can serve them: each lands on the
//! entrypoint that listens on its port (HTTP on a plain one, HTTPS on a TLS
//! one), or is refused with a condition that says why: an unknown port, a
//! protocol xdpgate does not speak (TCP, UDP, TLS passthrough), a namespace
//! selector. HTTPS certificates come from the Secrets in `certificateRefs`,
//! across namespaces only with a ReferenceGrant.
use super::{
    matching::granted,
    objects::{Gateway, Listener, GROUP},
    Condition,
};
use crate::{
    ingress::{
        translate::{secret_cert, CheckPair, SecretCert},
        ObjectKey, Objects,
    },
    proxy::{GatewayConfig, GatewayEntrypoint},
};

/// Which namespaces' routes a listener takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    Same,
    All,
}

/// One listener, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedListener {
    pub name: String,
    /// The entrypoint its routes go on; `None`: not served.
    pub entrypoint: Option<String>,
    pub port: u16,
    /// As written: `HTTP`, `HTTPS`, ...
    pub protocol: String,
    pub hostname: Option<String>,
    pub from: From,
    /// It takes HTTPRoutes (its `allowedRoutes.kinds` allow them).
    pub takes_http_routes: bool,
    /// Accepted, ResolvedRefs, Programmed (filled once routes are counted).
    pub conditions: Vec<Condition>,
    /// The Secrets that resolved, for the entrypoint.
    pub certs: Vec<SecretCert>,
    /// Routes attached, counted by the route translation.
    pub attached: usize,
}

/// A Gateway of our class, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedGateway {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    pub listeners: Vec<ServedListener>,
}

pub fn resolve(
    key: &ObjectKey,
    gateway: &Gateway,
    objects: &Objects,
    config: &GatewayConfig,
    check_pair: &CheckPair,
) -> ServedGateway {
    let mut listeners: Vec<ServedListener> = gateway
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| resolve_listener(key, i, listener, objects, config, check_pair))
        .collect();
    mark_conflicts(&mut listeners);
    ServedGateway {
        key: key.clone(),
        generation: gateway.metadata.generation,
        listeners,
    }
}

/// Listeners of one Gateway must be distinct. Two on the same port with
/// different protocols (`ProtocolConflict`), or with the same protocol and
/// hostname (`HostnameConflict`; no hostname counts as one), are
/// `Conflicted`: neither is served, since a request on that port could not
/// tell whose routes apply, and both say so (`Accepted: False`). Every
/// other listener gets `Conflicted: False`.
fn mark_conflicts(listeners: &mut [ServedListener]) {
    let conflicts: Vec<Option<(&'static str, String)>> = listeners
        .iter()
        .enumerate()
        .map(|(i, a)| {
            listeners.iter().enumerate().find_map(|(j, b)| {
                if i == j || a.port != b.port {
                    return None;
                }
                if !a.protocol.eq_ignore_ascii_case(&b.protocol) {
                    return Some((
                        "ProtocolConflict",
                        format!(
                            "listener `{}` uses port {} with protocol {}",
                            b.name, b.port, b.protocol
                        ),
                    ));
                }
                let same_host = match (&a.hostname, &b.hostname) {
                    (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                    (None, None) => true,
                    _ => false,
                };
                same_host.then(|| {
                    (
                        "HostnameConflict",
                        format!(
                            "listener `{}` has the same port {} and {}",
                            b.name,
                            b.port,
                            a.hostname
                                .as_deref()
                                .map_or("no hostname".to_string(), |h| format!("hostname {h}"))
                        ),
                    )
                })
            })
        })
        .collect();
    for (listener, conflict) in listeners.iter_mut().zip(conflicts) {
        match conflict {
            Some((reason, message)) => {
                listener.entrypoint = None;
                listener.certs.clear();
                listener.conditions.retain(|c| c.kind != "Accepted");
                listener.conditions.insert(
                    0,
                    Condition::new(
                        "Accepted",
                        false,
                        "PortUnavailable",
                        format!("not served: {message}"),
                    ),
                );
                listener
                    .conditions
                    .push(Condition::new("Conflicted", true, reason, message));
            }
            None => listener.conditions.push(Condition::new(
                "Conflicted",
                false,
                "NoConflicts",
                "no other listener of the Gateway shares its port and hostname",
            )),
        }
    }
}

fn resolve_listener(
    key: &ObjectKey,
    index: usize,
    listener: &Listener,
    objects: &Objects,
    config: &GatewayConfig,
    check_pair: &CheckPair,
) -> ServedListener {
    let at = format!("spec.listeners[{index}] ({})", listener.name);
    let mut served = ServedListener {
        name: listener.name.clone(),
        entrypoint: None,
        port: u16::try_from(listener.port).unwrap_or(0),
        protocol: listener.protocol.clone(),
        hostname: listener.hostname.clone().filter(|h| !h.is_empty()),
        from: From::Same,
        takes_http_routes: true,
        conditions: Vec::new(),
        certs: Vec::new(),
        attached: 0,
    };
    let refused = |served: &mut ServedListener, reason, message: String| {
        served.conditions = vec![
            Condition::new("Accepted", false, reason, format!("{at}: {message}")),
            Condition::new(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "no references to resolve",
            ),
        ];
    };
    let tls = match listener.protocol.as_str() {
        "HTTP" => false,
        "HTTPS" => true,
        other => {
            refused(
                &mut served,
                "UnsupportedProtocol",
                format!("protocol `{other}` is not served by xdpgate (only HTTP and HTTPS)"),
            );
            return served;
        }
    };
    match entrypoint_for(served.port, tls, &config.entrypoints) {
        Ok(name) => served.entrypoint = Some(name),
        Err(message) => {
            refused(&mut served, "PortUnavailable", message);
            return served;
        }
    }
    if let Some(namespaces) = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    {
        match namespaces.from.as_deref().unwrap_or("Same") {
            "Same" => {}
            "All" => served.from = From::All,
            other => {
                served.entrypoint = None;
                refused(
                    &mut served,
                    "UnsupportedValue",
                    format!("allowedRoutes.namespaces.from `{other}` is not supported (use Same or All)"),
                );
                return served;
            }
        }
    }
    let mut resolved = Condition::new(
        "ResolvedRefs",
        true,
        "ResolvedRefs",
        "every reference resolved",
    );
    if let Some(allowed) = &listener.allowed_routes {
        if !allowed.kinds.is_empty() {
            served.takes_http_routes = allowed
                .kinds
                .iter()
                .any(|k| k.kind == "HTTPRoute" && k.group.as_deref().unwrap_or(GROUP) == GROUP);
            if !served.takes_http_routes {
                resolved = Condition::new(
                    "ResolvedRefs",
                    false,
                    "InvalidRouteKinds",
                    format!("{at}: allowedRoutes.kinds names no kind xdpgate serves (HTTPRoute)"),
                );
            }
        }
    }
    if tls {
        if let Err(condition) = certificates(key, &at, listener, objects, check_pair, &mut served) {
            resolved = condition;
        }
    }
    served.conditions = vec![
        Condition::new("Accepted", true, "Accepted", "the listener is served"),
        resolved,
    ];
    served
}

/// The entrypoint on `port` that serves this protocol.
fn entrypoint_for(
    port: u16,
    tls: bool,
    entrypoints: &[GatewayEntrypoint],
) -> Result<String, String> {
    let Some(entrypoint) = entrypoints.iter().find(|e| e.ports.contains(&port)) else {
        let known: Vec<String> = entrypoints
            .iter()
            .map(|e| {
                let ports: Vec<String> = e.ports.iter().map(u16::to_string).collect();
                format!("{} on {}", e.name, ports.join(","))
            })
            .collect();
        return Err(format!(
            "no xdpgate entrypoint listens on port {port} (entrypoints: {})",
            known.join("; ")
        ));
    };
    let name = &entrypoint.name;
    if entrypoint.redirects {
        return Err(format!(
            "port {port} is entrypoint `{name}`, which redirects every request; no route is \
             served there"
        ));
    }
    match (tls, entrypoint.tls) {
        (true, false) => Err(format!(
            "port {port} is entrypoint `{name}`, which has no TLS; an HTTPS listener needs a \
             TLS entrypoint"
        )),
        (false, true) => Err(format!(
            "port {port} is entrypoint `{name}`, which speaks TLS; an HTTP listener needs a \
             plain entrypoint"
        )),
        _ => Ok(name.clone()),
    }
}

/// The listener's certificates; `Err` is the ResolvedRefs condition for
/// the first one that did not resolve (the others still serve).
fn certificates(
    key: &ObjectKey,
    at: &str,
    listener: &Listener,
    objects: &Objects,
    check_pair: &CheckPair,
    served: &mut ServedListener,
) -> Result<(), Condition> {
    let Some(tls) = &listener.tls else {
        return Err(Condition::new(
            "ResolvedRefs",
            false,
            "InvalidCertificateRef",
            format!("{at}: an HTTPS listener needs tls.certificateRefs"),
        ));
    };
    if tls.mode.as_deref().unwrap_or("Terminate") != "Terminate" {
        return Err(Condition::new(
            "ResolvedRefs",
            false,
            "InvalidCertificateRef",
            format!("{at}: tls.mode Passthrough is not supported (only Terminate)"),
        ));
    }
    let mut first_error = None;
    for (c, reference) in tls.certificate_refs.iter().enumerate() {
        let namespace = reference.namespace.clone().unwrap_or_else(|| key.0.clone());
        let kind = reference.kind.as_deref().unwrap_or("Secret");
        let group = reference.group.as_deref().unwrap_or("");
        let fail = |reason, message: String| {
            Condition::new(
                "ResolvedRefs",
                false,
                reason,
                format!("{at}: tls.certificateRefs[{c}]: {message}"),
            )
        };
        let outcome = if kind != "Secret" || !group.is_empty() {
            Err(fail(
                "InvalidCertificateRef",
                format!("kind `{kind}` is not a Secret"),
            ))
        } else if namespace != key.0
            && !granted(
                objects,
                "Gateway",
                &key.0,
                "Secret",
                &namespace,
                &reference.name,
            )
        {
            Err(fail(
                "RefNotPermitted",
                format!(
                    "Secret {namespace}/{} is in another namespace and no ReferenceGrant there \
                     allows it",
                    reference.name
                ),
            ))
        } else {
            secret_cert(
                &(namespace.clone(), reference.name.clone()),
                objects,
                check_pair,
            )
            .map_err(|message| {
                fail(
                    "InvalidCertificateRef",
                    format!("Secret {namespace}/{}: {message}", reference.name),
                )
            })
        };
        match outcome {
            Ok(cert) => served.certs.push(cert),
            Err(condition) => {
                first_error.get_or_insert(condition);
            }
        }
    }
    match first_error {
        Some(condition) => Err(condition),
        None => Ok(()),
    }
}
