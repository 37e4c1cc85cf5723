//! The files source: a directory of YAML files holding Ingress, Secret,
//! EndpointSlice and Traefik Middleware objects (several documents per file, `kind: List` too),
//! looked at every `poll_interval`. A file is re-read when its identity,
//! size or modification time changes, as the daemon does for its own config.
//! A file that does not parse is reported with its name and line, and the
//! objects it last held stay in force until it parses again; a file that is
//! removed takes its objects with it. Objects of other kinds are ignored, so
//! the directory can hold whole manifests.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use k8s_openapi::api::{
    core::v1::Secret,
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};
use serde::de::DeserializeOwned;

use super::{
    gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant},
    key_of, Objects,
};

type Stamp = (u64, u64, Option<SystemTime>, u64);

#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    /// The objects of the last good read.
    objects: Objects,
    /// Why the file as it is now cannot be used.
    error: Option<String>,
}

#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    dir_error: Option<String>,
    polled: bool,
}

impl FileSource {
    pub fn new(dir: &Path) -> Self {
        FileSource {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            dir_error: None,
            polled: false,
        }
    }

    /// Looks at the directory and re-reads what changed. Returns whether the
    /// objects or the problems changed.
    pub fn poll(&mut self) -> bool {
        let before = (self.objects(), self.problems());
        self.polled = true;
        let listed = match list(&self.dir) {
            Ok(listed) => {
                self.dir_error = None;
                listed
            }
            Err(e) => {
                // Keep the last objects: a directory that vanishes for a
                // moment (a ConfigMap swap) must not drop every route.
                self.dir_error = Some(format!(
                    "cannot read the Ingress directory {}: {e}",
                    self.dir.display()
                ));
                return before != (self.objects(), self.problems());
            }
        };
        self.files.retain(|path, _| listed.contains_key(path));
        for (path, stamp) in listed {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let read = fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse(&text));
            let state = self.files.entry(path.clone()).or_insert(FileState {
                stamp,
                objects: Objects::default(),
                error: None,
            });
            state.stamp = stamp;
            match read {
                Ok(objects) => {
                    state.objects = objects;
                    state.error = None;
                }
                Err(e) => {
                    let message = format!("{}: {e}", path.display());
                    if state.error.as_ref() != Some(&message) {
                        tracing::error!(
                            "Ingress file refused, its last good objects stay: {message}"
                        );
                    }
                    state.error = Some(message);
                }
            }
        }
        before != (self.objects(), self.problems())
    }

    /// Whether the directory has been looked at once.
    pub fn polled(&self) -> bool {
        self.polled
    }

    /// Every file's objects, in file name order (a later file's object of the
    /// same kind, namespace and name replaces an earlier one's).
    pub fn objects(&self) -> Objects {
        let mut all = Objects::default();
        for state in self.files.values() {
            all.extend(&state.objects);
        }
        all
    }

    pub fn problems(&self) -> Vec<String> {
        self.dir_error
            .iter()
            .cloned()
            .chain(self.files.values().filter_map(|f| f.error.clone()))
            .collect()
    }
}

/// The YAML and JSON files in `dir` (not hidden, not in subdirectories;
/// symlinks followed, as Kubernetes mounts ConfigMaps through them).
fn list(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Stamp>> {
    use std::os::unix::fs::MetadataExt as _;
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let yaml = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
        if name.starts_with('.') || !yaml {
            continue;
        }
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            let stamp = (meta.dev(), meta.ino(), meta.modified().ok(), meta.len());
            files.insert(path, stamp);
        }
    }
    Ok(files)
}

/// Every Ingress, Secret and EndpointSlice in a YAML text of one or more
/// documents. The first document that cannot be read fails the whole text,
/// with its line.
pub fn parse(text: &str) -> Result<Objects, String> {
    let mut objects = Objects::default();
    for (line, document) in documents(text) {
        let value: serde_yaml::Value = serde_yaml::from_str(&document).map_err(|e| {
            let at = e.location().map_or(line, |l| line + l.line() - 1);
            format!("line {at}: {e}")
        })?;
        if value.is_null() {
            continue;
        }
        add(value, &mut objects).map_err(|e| format!("document at line {line}: {e}"))?;
    }
    Ok(objects)
}

/// Splits at `---` lines; each document with the line it starts on (1-based).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            out.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    out.push((start, current));
    out
}

fn add(value: serde_yaml::Value, objects: &mut Objects) -> Result<(), String> {
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or("the object has no `kind`")?
        .to_string();
    match kind.as_str() {
        "List" => {
            let items = value
                .get("items")
                .and_then(|i| i.as_sequence())
                .cloned()
                .unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                add(item, objects).map_err(|e| format!("items[{i}]: {e}"))?;
            }
        }
        "Ingress" => {
            let ingress: Ingress = typed(value, &kind)?;
            objects.ingresses.insert(key_of(&ingress.metadata), ingress);
        }
        "Secret" => {
            let secret: Secret = typed(value, &kind)?;
            objects.secrets.insert(key_of(&secret.metadata), secret);
        }
        "EndpointSlice" => {
            let slice: EndpointSlice = typed(value, &kind)?;
            objects
                .endpoint_slices
                .insert(key_of(&slice.metadata), slice);
        }
        "IngressClass" => {
            let class: IngressClass = typed(value, &kind)?;
            objects
                .ingress_classes
                .insert(key_of(&class.metadata), class);
        }
        "Middleware" => {
            let json = serde_json::to_value(&value).map_err(|e| format!("Middleware: {e}"))?;
            // Other groups' Middleware kinds are not ours, like other kinds.
            if let Some((key, middleware)) = super::traefik::TraefikMiddleware::from_value(&json) {
                objects.middlewares.insert(key, middleware);
            } else if super::traefik::API_VERSIONS
                .contains(&json["apiVersion"].as_str().unwrap_or(""))
            {
                return Err("Middleware has no metadata.name".to_string());
            }
        }
        // The Gateway API (read whether or not `gateway_api` is on; only
        // then are they translated).
        "GatewayClass" => {
            let class: GatewayClass = typed(value, &kind)?;
            objects
                .gateway
                .classes
                .insert(key_of(&class.metadata), class);
        }
        "Gateway" => {
            let gateway: Gateway = typed(value, &kind)?;
            objects
                .gateway
                .gateways
                .insert(key_of(&gateway.metadata), gateway);
        }
        "HTTPRoute" => {
            let route: HttpRoute = typed(value, &kind)?;
            objects
                .gateway
                .http_routes
                .insert(key_of(&route.metadata), route);
        }
        "ReferenceGrant" => {
            let grant: ReferenceGrant = typed(value, &kind)?;
            objects
                .gateway
                .reference_grants
                .insert(key_of(&grant.metadata), grant);
        }
        _ => {}
    }
    Ok(())
}

fn typed<T: DeserializeOwned + HasMeta>(value: serde_yaml::Value, kind: &str) -> Result<T, String> {
    let object: T = serde_yaml::from_value(value).map_err(|e| format!("{kind}: {e}"))?;
    if object.name().is_empty() {
        return Err(format!("{kind} has no metadata.name"));
    }
    Ok(object)
}

trait HasMeta {
    fn name(&self) -> &str;
}

macro_rules! has_meta {
    ($($t:ty),*) => {$(
        impl HasMeta for $t {
            fn name(&self) -> &str {
                self.metadata.name.as_deref().unwrap_or("")
            }
        }
    )*};
}
has_meta!(Ingress, Secret, EndpointSlice, IngressClass);
has_meta!(GatewayClass, Gateway, HttpRoute, ReferenceGrant);

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: api, namespace: honeydue }
spec:
  ingressClassName: xdpgate
  rules:
    - host: api.example.com
      http:
        paths:
          - { path: /, pathType: Prefix, backend: { service: { name: api, port: { number: 8000 } } } }
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Secret
    metadata: { name: api-tls, namespace: honeydue }
    stringData: { tls.crt: a, tls.key: b }
  - apiVersion: v1
    kind: Service
    metadata: { name: api }
";

    #[test]
    fn documents_and_lists_are_read_and_other_kinds_ignored() {
        let objects = parse(TWO).unwrap();
        let key = |n: &str| ("honeydue".to_string(), n.to_string());
        assert!(objects.ingresses.contains_key(&key("api")));
        assert!(objects.secrets.contains_key(&key("api-tls")));
        assert_eq!(objects.ingresses.len() + objects.secrets.len(), 2);
    }

    #[test]
    fn an_error_names_the_line_of_its_document() {
        let text =
            format!("{TWO}---\nkind: Ingress\nmetadata: {{ name: x }}\nspec: {{ rules: 5 }}\n");
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with("document at line 23:"), "{e}");
        let e = parse("kind: Ingress\nmetadata: [unclosed\n").unwrap_err();
        assert!(e.starts_with("line 2:") || e.starts_with("line 3:"), "{e}");
    }

    #[test]
    fn a_broken_file_keeps_its_last_objects_and_a_removed_one_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api.yaml");
        fs::write(&file, TWO).unwrap();
        let mut source = FileSource::new(dir.path());
        assert!(source.poll());
        assert_eq!(source.objects().ingresses.len(), 1);
        fs::write(&file, "kind: Ingress\nspec: [\n").unwrap();
        assert!(source.poll());
        assert_eq!(source.objects().ingresses.len(), 1);
        let problems = source.problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("api.yaml: line"), "{problems:?}");
        assert!(!source.poll());
        fs::remove_file(&file).unwrap();
        assert!(source.poll());
        assert!(source.objects().is_empty());
        assert!(source.problems().is_empty());
    }
}
