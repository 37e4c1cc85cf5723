//! The Kubernetes manifests under `deploy/kubernetes/`, rendered offline
//! for the deploy tests: the tools they need (kubectl, and the validator's
//! venv, whose Python turns YAML into JSON), `kubectl kustomize`, and
//! lookups in the rendered documents. What the documents must say is each
//! test's business, not this module's.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The tools the deploy tests run.
pub struct Tools {
    pub kubectl: PathBuf,
    pub validator: PathBuf,
    pub python: PathBuf,
}

fn on_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn venv_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(cache.join("xdpgate").join("venv"))
}

/// The tools, or `None` after printing exactly what is missing.
pub fn tools(test: &str) -> Option<Tools> {
    let Some(kubectl) = on_path("kubectl") else {
        println!("SKIP {test}: kubectl is not installed (apt-get install kubernetes-client)");
        return None;
    };
    let venv = venv_dir();
    let validator = venv
        .as_ref()
        .map(|v| v.join("bin").join("kubernetes-validate"))
        .filter(|v| v.is_file());
    let python = venv
        .as_ref()
        .map(|v| v.join("bin").join("python3"))
        .filter(|p| p.exists());
    let (Some(validator), Some(python)) = (validator, python) else {
        println!("SKIP {test}: kubernetes-validate is not installed (cargo xtask setup)");
        return None;
    };
    Some(Tools {
        kubectl,
        validator,
        python,
    })
}

pub fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("kubernetes")
}

/// `kubectl kustomize <dir>`: the rendered YAML stream.
pub fn render(tools: &Tools, dir: &str) -> String {
    let path = kubernetes_dir().join(dir);
    let output = Command::new(&tools.kubectl)
        .arg("kustomize")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed ({}):\n{}",
        path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("rendered YAML is UTF-8")
}

/// Every document of a YAML stream, as JSON (empty documents left out).
pub fn yaml_documents(tools: &Tools, yaml: &str) -> Vec<Value> {
    use std::io::Write as _;
    let mut child = Command::new(&tools.python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
             json.dump(docs, sys.stdout)\n",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the validator's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .expect("write YAML to python");
    let output = child.wait_with_output().expect("wait for python");
    assert!(
        output.status.success(),
        "YAML did not parse: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).expect("python wrote JSON") {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

pub fn rendered(tools: &Tools, dir: &str) -> Vec<Value> {
    let docs = yaml_documents(tools, &render(tools, dir));
    assert!(!docs.is_empty(), "{dir} rendered nothing");
    docs
}

pub fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind}/{name} among {:?}",
                docs.iter().map(kind_name).collect::<Vec<_>>()
            )
        })
}

/// The ConfigMap's `config.yaml`, as text and as JSON.
pub fn config(tools: &Tools, docs: &[Value]) -> (String, Value) {
    let text = find(docs, "ConfigMap", "xdpgate-config")["data"]["config.yaml"]
        .as_str()
        .expect("the ConfigMap has config.yaml")
        .to_owned();
    let mut parsed = yaml_documents(tools, &text);
    assert_eq!(parsed.len(), 1, "config.yaml is one document");
    (text, parsed.remove(0))
}

pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every container and init container of every pod template in `docs`.
pub fn containers(docs: &[Value]) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for doc in docs {
        let spec = &doc["spec"]["template"]["spec"];
        for key in ["initContainers", "containers"] {
            if let Some(list) = spec[key].as_array() {
                for container in list {
                    out.push((
                        format!("{} {}", kind_name(doc), container["name"]),
                        container,
                    ));
                }
            }
        }
    }
    out
}
