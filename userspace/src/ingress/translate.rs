//! From Ingress objects to routes, services and certificates. Pure: the same
//! objects always give the same result, in the same order, so two daemons
//! (or a test) agree on what the cluster asks for.
//!
//! Each Ingress of our class is translated whole or not at all: one bad host,
//! path, backend or middleware name makes it invalid, and it is skipped with
//! a [`Problem`] while every other Ingress keeps working. A TLS Secret that is
//! missing or unusable is a problem too, but not one that takes routes away:
//! the hosts it should have covered are served with the entrypoint's other
//! certificates until the Secret is fixed.
//!
//! Mapping (documented for operators in docs/operations.md):
//! * a rule's `host` (exact or `*.` wildcard) is the route's host; no host
//!   matches any host;
//! * `Exact` and `Prefix` keep their meaning; `ImplementationSpecific` (or no
//!   type) is treated as `Prefix`, with a warning;
//! * `defaultBackend` is a route for any host and the path prefix `/`, which
//!   every more specific route beats;
//! * a backend `service` becomes the upstream
//!   `<service>.<namespace>.svc.cluster.local:<port>`, or with EndpointSlices
//!   the ready endpoints of that Service ([`super::backends`]).
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::networking::v1::{Ingress, IngressBackend},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::{
    backends::{backend_service, refusing_service},
    references,
    traefik::Catalog,
    ObjectKey, Objects,
};
use crate::proxy::IngressConfig;
use crate::{
    config::{route_host, route_path, valid_name, MAX_NAME},
    proxy::{MiddlewareConfig, PathType, RouteConfig, ServiceConfig, WeightedServiceConfig},
};

/// The annotation that names xdpgate middlewares, comma separated, in order.
pub const MIDDLEWARES_ANNOTATION: &str = "xdpgate.io/middlewares";
/// Traefik's: `<namespace>-<name>@kubernetescrd`, comma separated.
pub const TRAEFIK_MIDDLEWARES_ANNOTATION: &str = "traefik.ingress.kubernetes.io/router.middlewares";
/// The controller our IngressClasses name.
pub const CONTROLLER: &str = "xdpgate.io/ingress-controller";
/// Marks the IngressClass that Ingresses without a class belong to.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The class annotation from before `spec.ingressClassName`.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// What is wrong with one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `Ingress honeydue/api`.
    pub object: String,
    /// A short fixed word for the metric label: `host`, `path`, `backend`,
    /// `port`, `middleware`, `spec`, `tls-secret`.
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// A route with where it came from, for precedence and conflict reports.
#[derive(Clone, Debug, PartialEq)]
pub struct IngressRoute {
    /// `Ingress` or `HTTPRoute`, for conflict reports.
    pub kind: &'static str,
    /// `(namespace, name)` of the Ingress.
    pub origin: ObjectKey,
    pub created: Option<Time>,
    pub config: RouteConfig,
}

/// A TLS Secret's usable content.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretCert {
    pub key: ObjectKey,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for SecretCert {
    // The key material is never printed, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCert")
            .field("key", &self.key)
            .field("cert_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// Oldest Ingress first (creation time, then namespace/name), each
    /// Ingress's routes in rule and path order, its default backend last.
    pub routes: Vec<IngressRoute>,
    pub services: BTreeMap<String, ServiceConfig>,
    /// Weighted services (Gateway API weighted `backendRefs`).
    pub weighted: BTreeMap<String, WeightedServiceConfig>,
    /// Sorted by Secret.
    pub certs: Vec<SecretCert>,
    /// Invalid Ingresses and unusable Secrets.
    pub problems: Vec<Problem>,
    /// Things that work but deserve a change (Traefik annotations,
    /// `ImplementationSpecific`).
    pub warnings: Vec<String>,
    /// Ingresses of our class that were translated.
    pub valid: usize,
    /// The Traefik Middleware objects' layers the routes name.
    pub middlewares: BTreeMap<String, MiddlewareConfig>,
}

/// Checks a TLS pair the way the TLS loader will; an error is a sentence.
pub type CheckPair = dyn Fn(&[u8], &[u8]) -> Result<(), String>;

/// Translates the Ingresses of `config.class` in `objects`. `middlewares` is
/// the set of middleware names the config defines.
pub fn translate(
    objects: &Objects,
    config: &IngressConfig,
    middlewares: &BTreeSet<String>,
    check_pair: &CheckPair,
) -> Translation {
    let mut out = Translation::default();
    let mut ours: Vec<(&ObjectKey, &Ingress)> = objects
        .ingresses
        .iter()
        .filter(|(_, ingress)| is_ours(ingress, &config.class, objects))
        .collect();
    ours.sort_by(|(a_key, a), (b_key, b)| {
        let a_time = &a.metadata.creation_timestamp;
        let b_time = &b.metadata.creation_timestamp;
        (a_time.is_none(), a_time, a_key).cmp(&(b_time.is_none(), b_time, b_key))
    });
    let catalog = Catalog::build(objects);
    for (key, error) in catalog.invalid() {
        out.problems.push(Problem {
            object: format!("Middleware {}/{}", key.0, key.1),
            reason: "traefik-middleware",
            message: error.to_string(),
        });
    }
    let mut secrets: BTreeSet<ObjectKey> = BTreeSet::new();
    for (key, ingress) in ours {
        let object = format!("Ingress {}/{}", key.0, key.1);
        match translate_one(key, ingress, objects, config, middlewares, &catalog) {
            Ok(one) => {
                match one.refused {
                    None => out.valid += 1,
                    Some((reason, message)) => out.problems.push(Problem {
                        object: object.clone(),
                        reason,
                        message: format!("{message}; its routes answer 503 until this is fixed"),
                    }),
                }
                out.middlewares.extend(one.middlewares);
                out.routes.extend(one.routes);
                out.services.extend(one.services);
                out.warnings
                    .extend(one.warnings.into_iter().map(|w| format!("{object}: {w}")));
                for secret in one.secrets {
                    secrets.insert((key.0.clone(), secret));
                }
            }
            Err((reason, message)) => out.problems.push(Problem {
                object,
                reason,
                message,
            }),
        }
    }
    for key in secrets {
        match secret_cert(&key, objects, check_pair) {
            Ok(cert) => out.certs.push(cert),
            Err(message) => out.problems.push(Problem {
                object: format!("Secret {}/{}", key.0, key.1),
                reason: "tls-secret",
                message: format!(
                    "{message}; the hosts it should cover are served with the entrypoint's \
                     other certificates"
                ),
            }),
        }
    }
    out
}

/// Ours: its class (spec or legacy annotation) is `proxy.ingress.class`,
/// or names an IngressClass of our controller; without a class, when one
/// of our IngressClasses is the cluster's default.
pub(crate) fn is_ours(ingress: &Ingress, class: &str, objects: &Objects) -> bool {
    let our_classes = || {
        objects
            .ingress_classes
            .values()
            .filter(|c| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER))
    };
    let spec_class = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotated = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
        .map(String::as_str);
    match spec_class.or(annotated) {
        Some(named) => {
            named == class || our_classes().any(|c| c.metadata.name.as_deref() == Some(named))
        }
        None => our_classes().any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
        }),
    }
}

/// One valid Ingress's share.
struct One {
    routes: Vec<IngressRoute>,
    services: BTreeMap<String, ServiceConfig>,
    /// Secret names in the Ingress's namespace.
    secrets: Vec<String>,
    warnings: Vec<String>,
    /// The Traefik Middleware objects' layers its routes use, by name.
    middlewares: BTreeMap<String, MiddlewareConfig>,
    /// Why its routes answer 503 instead of being served.
    refused: Option<Invalid>,
}

pub(crate) type Invalid = (&'static str, String);

fn translate_one(
    key: &ObjectKey,
    ingress: &Ingress,
    objects: &Objects,
    config: &IngressConfig,
    known: &BTreeSet<String>,
    catalog: &Catalog,
) -> Result<One, Invalid> {
    let (namespace, name) = key;
    let Some(spec) = &ingress.spec else {
        return Err(("spec", "it has no spec".to_string()));
    };
    let mut one = One {
        routes: Vec::new(),
        services: BTreeMap::new(),
        secrets: Vec::new(),
        warnings: Vec::new(),
        middlewares: BTreeMap::new(),
        refused: None,
    };
    let mut asked = references::Asked {
        namespace,
        known,
        catalog,
        allow_cross_namespace: config.allow_cross_namespace,
        warnings: &mut one.warnings,
        configs: &mut one.middlewares,
    };
    // Fail closed: routes whose middlewares cannot all be applied stay in
    // the table, so no broader route answers for them, but answer 503.
    let (middlewares, refused) = match asked.resolve(ingress) {
        Ok(names) => (names, None),
        Err(invalid) => (Vec::new(), Some(invalid)),
    };
    let created = ingress.metadata.creation_timestamp.clone();
    let add_route = |one: &mut One,
                     suffix: String,
                     host: Option<String>,
                     path: String,
                     path_type: PathType,
                     backend: &IngressBackend,
                     at: &str|
     -> Result<(), Invalid> {
        let (mut service_name, mut service) = backend_service(namespace, backend, objects, config)
            .map_err(|(reason, message)| (reason, format!("{at}: {message}")))?;
        if refused.is_some() {
            (service_name, service) = refusing_service(namespace, name);
        }
        one.services.insert(service_name.clone(), service);
        one.routes.push(IngressRoute {
            kind: "Ingress",
            origin: key.clone(),
            created: created.clone(),
            config: RouteConfig {
                name: object_name(&format!("ingress.{namespace}.{name}.{suffix}")),
                host,
                path,
                path_type,
                service: service_name,
                entrypoints: config.entrypoints.clone(),
                middlewares: middlewares.clone(),
                conditions: Default::default(),
                actions: Default::default(),
            },
        });
        Ok(())
    };
    let rules = spec.rules.as_deref().unwrap_or_default();
    for (r, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
            Some(text) => Some(
                route_host(text).map_err(|message| ("host", format!("{at}.host: {message}")))?,
            ),
            None => None,
        };
        let Some(http) = &rule.http else {
            // A host alone means "this host goes to the default backend".
            match &spec.default_backend {
                Some(backend) => add_route(
                    &mut one,
                    format!("{r}"),
                    host,
                    "/".to_string(),
                    PathType::Prefix,
                    backend,
                    &format!("{at} (to spec.defaultBackend)"),
                )?,
                None => {
                    return Err((
                        "spec",
                        format!("{at} has no http paths and the Ingress has no defaultBackend"),
                    ))
                }
            }
            continue;
        };
        if http.paths.is_empty() {
            return Err(("spec", format!("{at}.http.paths is empty")));
        }
        for (p, item) in http.paths.iter().enumerate() {
            let at = format!("{at}.http.paths[{p}]");
            let path_type = match item.path_type.as_str() {
                "Exact" => PathType::Exact,
                "Prefix" => PathType::Prefix,
                "ImplementationSpecific" | "" => {
                    one.warnings.push(format!(
                        "{at}: pathType ImplementationSpecific is treated as Prefix"
                    ));
                    PathType::Prefix
                }
                other => {
                    return Err((
                        "path",
                        format!(
                            "{at}.pathType `{other}` is not Exact, Prefix or ImplementationSpecific"
                        ),
                    ))
                }
            };
            let path = route_path(item.path.as_deref().unwrap_or("/"))
                .map_err(|message| ("path", format!("{at}.path: {message}")))?;
            add_route(
                &mut one,
                format!("{r}.{p}"),
                host.clone(),
                path,
                path_type,
                &item.backend,
                &format!("{at}.backend"),
            )?;
        }
    }
    if let Some(backend) = &spec.default_backend {
        add_route(
            &mut one,
            "default".to_string(),
            None,
            "/".to_string(),
            PathType::Prefix,
            backend,
            "spec.defaultBackend",
        )?;
    }
    if one.routes.is_empty() {
        return Err(("spec", "it has no rules and no defaultBackend".to_string()));
    }
    one.refused = refused;
    for (t, tls) in spec.tls.as_deref().unwrap_or_default().iter().enumerate() {
        match tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
            Some(secret) => one.secrets.push(secret.to_string()),
            None => one.warnings.push(format!(
                "spec.tls[{t}] names no secretName: its hosts get the entrypoint's other \
                 certificates"
            )),
        }
    }
    Ok(one)
}

/// The Secret's `tls.crt` and `tls.key`, checked.
pub(crate) fn secret_cert(
    key: &ObjectKey,
    objects: &Objects,
    check_pair: &CheckPair,
) -> Result<SecretCert, String> {
    let Some(secret) = objects.secrets.get(key) else {
        return Err("the TLS Secret does not exist (or cannot be read)".to_string());
    };
    let field = |name: &str| -> Option<Vec<u8>> {
        if let Some(value) = secret.data.as_ref().and_then(|d| d.get(name)) {
            return Some(value.0.clone());
        }
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|s| s.as_bytes().to_vec())
    };
    let (Some(cert_pem), Some(key_pem)) = (field("tls.crt"), field("tls.key")) else {
        return Err("the Secret lacks tls.crt or tls.key".to_string());
    };
    check_pair(&cert_pem, &key_pem)
        .map_err(|e| format!("tls.crt/tls.key do not make a usable certificate: {e}"))?;
    Ok(SecretCert {
        key: key.clone(),
        cert_pem,
        key_pem,
    })
}

/// A route or service name that passes the config's name rules: as it is
/// when it fits, else cut and made unique with a hash of the whole.
pub fn object_name(wanted: &str) -> String {
    if valid_name(wanted) {
        return wanted.to_string();
    }
    let clean: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = format!("{:016x}", fnv1a(wanted.as_bytes()));
    let keep = MAX_NAME - hash.len() - 1;
    let head: String = clean.chars().take(keep).collect();
    format!("{head}-{hash}")
}

/// FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
