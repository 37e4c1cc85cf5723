//! Traefik's Middleware objects (`traefik.io/v1alpha1` and the older
//! `traefik.containo.us/v1alpha1`), as they are, turned into xdpgate
//! middlewares. Each object is converted once ([`convert`]), whether an
//! Ingress names it or not, so a bad one is reported on its own; an
//! Ingress names them with Traefik's annotation,
//! `<namespace>-<name>@kubernetescrd`, and a `chain` names others.
//!
//! Fail closed: a field xdpgate cannot honour makes the whole object
//! invalid, with the field named, and an Ingress that names an invalid or
//! missing object, or one in another namespace while `allow_cross_namespace`
//! is off, is not served with less: its routes answer 503 (see
//! `translate`). What each field becomes is in docs/migrating.md.
use std::collections::BTreeMap;

use serde_json::Value;

use super::{translate::object_name, ObjectKey, Objects};
use crate::proxy::MiddlewareConfig;

pub mod convert;
pub mod fields;

pub use convert::Converted;
pub use fields::FieldError;

/// The API groups (and version) Middleware objects are read in.
pub const API_VERSIONS: [&str; 2] = ["traefik.io/v1alpha1", "traefik.containo.us/v1alpha1"];
/// The provider suffix of Traefik's references to these objects.
pub const PROVIDER: &str = "@kubernetescrd";
/// Chains nested deeper than this are refused (a cycle ends here too).
const MAX_DEPTH: usize = 8;

/// A Middleware object as read: which group it came in, and its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct TraefikMiddleware {
    pub api_version: String,
    pub spec: Value,
}

impl TraefikMiddleware {
    /// A Middleware object from its JSON (or YAML) form; `None` for any
    /// other kind or group.
    pub fn from_value(value: &Value) -> Option<(ObjectKey, TraefikMiddleware)> {
        let api_version = value.get("apiVersion")?.as_str()?;
        if value.get("kind")?.as_str()? != "Middleware" || !API_VERSIONS.contains(&api_version) {
            return None;
        }
        let meta = value.get("metadata");
        let text = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
        let namespace = text("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or("default");
        let name = text("name").filter(|n| !n.is_empty())?;
        Some((
            (namespace.to_string(), name.to_string()),
            TraefikMiddleware {
                api_version: api_version.to_string(),
                spec: value.get("spec").cloned().unwrap_or(Value::Null),
            },
        ))
    }
}

/// Every Middleware object, converted.
pub struct Catalog {
    converted: BTreeMap<ObjectKey, Result<Converted, FieldError>>,
}

/// The xdpgate name of a Middleware object's `index`th layer.
pub fn layer_name(key: &ObjectKey, index: usize) -> String {
    let base = format!("kubernetescrd.{}.{}", key.0, key.1);
    match index {
        0 => object_name(&base),
        i => object_name(&format!("{base}.{i}")),
    }
}

impl Catalog {
    pub fn build(objects: &Objects) -> Catalog {
        let converted = objects
            .middlewares
            .iter()
            .map(|(key, object)| {
                let lookup = |name: &str| {
                    let secret_key = (key.0.clone(), name.to_string());
                    objects
                        .secrets
                        .get(&secret_key)
                        .or_else(|| objects.auth_secrets.get(&secret_key))
                };
                (key.clone(), convert::convert(&object.spec, &lookup))
            })
            .collect();
        Catalog { converted }
    }

    /// Each invalid object with its reason: `(key, field error)`.
    pub fn invalid(&self) -> impl Iterator<Item = (&ObjectKey, &FieldError)> {
        self.converted
            .iter()
            .filter_map(|(key, c)| Some((key, c.as_ref().err()?)))
    }

    /// The object a reference's `<namespace>-<name>` part names: the
    /// namespace may hold `-` itself, so every split is tried, the
    /// Ingress's own namespace first.
    pub fn find(&self, bare: &str, own_namespace: &str) -> Option<ObjectKey> {
        if let Some(name) = bare.strip_prefix(&format!("{own_namespace}-")) {
            let key = (own_namespace.to_string(), name.to_string());
            if self.converted.contains_key(&key) {
                return Some(key);
            }
        }
        bare.match_indices('-')
            .map(|(i, _)| (bare[..i].to_string(), bare[i + 1..].to_string()))
            .find(|key| self.converted.contains_key(key))
    }

    /// The xdpgate middlewares `key` comes to, in order, appended to `out`
    /// (a chain's members expanded). `from` is the namespace of whatever
    /// names it. `Err` says why it cannot be used.
    pub fn expand(
        &self,
        key: &ObjectKey,
        from: &str,
        allow_cross_namespace: bool,
        out: &mut Vec<(String, MiddlewareConfig)>,
    ) -> Result<(), String> {
        self.expand_at(key, from, allow_cross_namespace, out, 0)
    }

    fn expand_at(
        &self,
        key: &ObjectKey,
        from: &str,
        allow_cross_namespace: bool,
        out: &mut Vec<(String, MiddlewareConfig)>,
        depth: usize,
    ) -> Result<(), String> {
        let shown = format!("Middleware {}/{}", key.0, key.1);
        if key.0 != from && !allow_cross_namespace {
            return Err(format!(
                "{shown} is in another namespace than {from}, and \
                 proxy.ingress.allow_cross_namespace is off (as Traefik's allowCrossNamespace \
                 by default)"
            ));
        }
        if depth > MAX_DEPTH {
            return Err(format!(
                "{shown}: chains nest deeper than {MAX_DEPTH} (a chain that names itself?)"
            ));
        }
        match self.converted.get(key) {
            None => Err(format!("{shown} does not exist")),
            Some(Err(e)) => Err(format!("{shown} is invalid: {e}")),
            Some(Ok(Converted::Layers(layers))) => {
                for (i, config) in layers.iter().enumerate() {
                    out.push((layer_name(key, i), config.clone()));
                }
                Ok(())
            }
            Some(Ok(Converted::Chain(members))) => {
                for (namespace, name) in members {
                    let member = (
                        namespace.clone().unwrap_or_else(|| key.0.clone()),
                        name.clone(),
                    );
                    self.expand_at(&member, &key.0, allow_cross_namespace, out, depth + 1)
                        .map_err(|e| format!("{shown} (chain): {e}"))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
