//! The middlewares an Ingress names in its annotations: xdpgate's
//! `xdpgate.io/middlewares` (names under `proxy.middlewares`) first, then
//! Traefik's `traefik.ingress.kubernetes.io/router.middlewares`, whose
//! `<namespace>-<name>@kubernetescrd` references resolve to Traefik
//! Middleware objects ([`super::traefik`]) and, when no such object exists,
//! to a config-file middleware of that name (with a warning naming the
//! xdpgate equivalent).
//!
//! Any reference that cannot be honoured (unknown, invalid, in another
//! namespace while that is not allowed) is an [`Invalid`]; the caller makes
//! the Ingress's routes answer 503 rather than serve them with less.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::Ingress;

use super::{
    traefik::{Catalog, PROVIDER},
    translate::{Invalid, MIDDLEWARES_ANNOTATION, TRAEFIK_MIDDLEWARES_ANNOTATION},
};
use crate::proxy::MiddlewareConfig;

/// What resolving one Ingress's references needs, and where it writes.
pub struct Asked<'a> {
    pub namespace: &'a str,
    /// The config file's middleware names.
    pub known: &'a BTreeSet<String>,
    pub catalog: &'a Catalog,
    pub allow_cross_namespace: bool,
    pub warnings: &'a mut Vec<String>,
    /// The Middleware objects' layers named, by xdpgate name.
    pub configs: &'a mut BTreeMap<String, MiddlewareConfig>,
}

impl Asked<'_> {
    /// The xdpgate middleware names, in order, none twice.
    pub fn resolve(&mut self, ingress: &Ingress) -> Result<Vec<String>, Invalid> {
        let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
        let mut names: Vec<String> = Vec::new();
        if let Some(list) = annotations.get(MIDDLEWARES_ANNOTATION) {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                self.file_middleware(name.to_string(), &mut names)?;
            }
        }
        let Some(list) = annotations.get(TRAEFIK_MIDDLEWARES_ANNOTATION) else {
            return Ok(names);
        };
        let mut equivalent = Vec::new();
        for reference in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let bare = reference.split('@').next().unwrap_or(reference);
            let crd = reference.ends_with(PROVIDER);
            if let Some(key) = crd
                .then(|| self.catalog.find(bare, self.namespace))
                .flatten()
            {
                let mut layers = Vec::new();
                self.catalog
                    .expand(
                        &key,
                        self.namespace,
                        self.allow_cross_namespace,
                        &mut layers,
                    )
                    .map_err(|e| ("middleware", format!("`{reference}`: {e}")))?;
                for (name, config) in layers {
                    if !names.contains(&name) {
                        names.push(name.clone());
                    }
                    self.configs.insert(name, config);
                }
                continue;
            }
            let name = traefik_name(reference, self.namespace, self.known);
            equivalent.push(name.clone());
            self.file_middleware(name, &mut names).map_err(|(r, m)| {
                let objects = if crd {
                    "no Middleware object of that name either; "
                } else {
                    ""
                };
                (r, format!("{objects}{m}, from Traefik's `{reference}`"))
            })?;
        }
        if !equivalent.is_empty() {
            self.warnings.push(format!(
                "annotation {TRAEFIK_MIDDLEWARES_ANNOTATION} names config-file middlewares; it \
                 is honoured, but write `{MIDDLEWARES_ANNOTATION}: {}` instead",
                equivalent.join(",")
            ));
        }
        Ok(names)
    }

    fn file_middleware(&self, name: String, names: &mut Vec<String>) -> Result<(), Invalid> {
        if !self.known.contains(&name) {
            let defined = if self.known.is_empty() {
                "none are defined".to_string()
            } else {
                format!(
                    "defined: {}",
                    self.known.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err((
                "middleware",
                format!("unknown middleware `{name}` (proxy.middlewares; {defined})"),
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
        Ok(())
    }
}

/// The xdpgate middleware a Traefik reference `<namespace>-<name>@<provider>`
/// means. The namespace may itself hold `-`, so the first split whose
/// remainder is a known middleware wins; else the Ingress's own namespace, or
/// the text up to the first `-`, is taken off (and the name reported unknown).
fn traefik_name(reference: &str, namespace: &str, known: &BTreeSet<String>) -> String {
    let bare = reference.split('@').next().unwrap_or(reference);
    let splits = bare.match_indices('-').map(|(i, _)| &bare[i + 1..]);
    if let Some(name) = splits.clone().find(|rest| known.contains(*rest)) {
        return name.to_string();
    }
    match bare.strip_prefix(&format!("{namespace}-")) {
        Some(name) => name.to_string(),
        None => bare
            .split_once('-')
            .map_or(bare, |(_, name)| name)
            .to_string(),
    }
}
