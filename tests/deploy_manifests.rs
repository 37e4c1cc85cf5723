//! The Kubernetes manifests under `deploy/kubernetes/`, rendered and checked
//! offline: no cluster, no network.
//!
//! * `kubectl kustomize` renders the base and the k3s overlay (and the
//!   optional ServiceMonitor). The kustomizations are written for kubectl
//!   1.20's embedded kustomize v2.0.3 (Debian's `kubernetes-client`) and
//!   work with newer ones too.
//! * `kubernetes-validate --strict` checks every rendered document against
//!   the Kubernetes OpenAPI schemas of the versions in [`KUBERNETES_VERSIONS`].
//! * The DaemonSet's security properties, the probes, the drain budget, the
//!   RBAC rules and the absence of secrets in `env` are checked here, on the
//!   rendered objects.
//! * The config inside the ConfigMap goes through `xdpgate config check`.
//!
//! YAML is turned into JSON by the validator's own Python (PyYAML is one of
//! its dependencies), so this test needs no YAML crate.
//!
//! Needs `kubectl` on PATH and the validator in
//! `${XDG_CACHE_HOME:-$HOME/.cache}/xdpgate/venv`; each test skips with a
//! message naming what is missing otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Kubernetes versions the rendered manifests must validate against: the
/// version k3s ships today and the newest the validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.34", "1.37"];

/// The capabilities the container gets, exactly (after dropping ALL).
const CAPABILITIES: &[&str] = &["BPF", "NET_ADMIN", "PERFMON", "NET_BIND_SERVICE"];

struct Tools {
    kubectl: PathBuf,
    validator: PathBuf,
    python: PathBuf,
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
fn tools(test: &str) -> Option<Tools> {
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

fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("kubernetes")
}

/// `kubectl kustomize <dir>`: the rendered YAML stream.
fn render(tools: &Tools, dir: &str) -> String {
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
fn yaml_documents(tools: &Tools, yaml: &str) -> Vec<Value> {
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

fn rendered(tools: &Tools, dir: &str) -> Vec<Value> {
    let docs = yaml_documents(tools, &render(tools, dir));
    assert!(!docs.is_empty(), "{dir} rendered nothing");
    docs
}

fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no {kind}/{name} among {:?}",
                docs.iter().map(kind_name).collect::<Vec<_>>()
            )
        })
}

/// Runs the validator in strict mode on `yaml`. Returns its output lines;
/// fails unless it exits 0 and reports every document as passed, except the
/// kinds in `unknown_kinds`, which may only be reported as schema-less.
fn validate(tools: &Tools, label: &str, yaml: &str, documents: usize, unknown_kinds: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{label}.yaml"));
    std::fs::write(&file, yaml).expect("write rendered YAML");
    for version in KUBERNETES_VERSIONS {
        let output = Command::new(&tools.validator)
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "{label} does not validate against Kubernetes {version}:\n{text}"
        );
        let mut passed = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let schema_less = unknown_kinds
                .iter()
                .any(|kind| line.contains(&format!("Couldn't find schema for kind {kind} ")));
            assert!(
                line.contains(" passed for resource ") || schema_less,
                "{label} against Kubernetes {version}: unexpected validator output: {line}\n{text}"
            );
            passed += 1;
        }
        assert_eq!(
            passed, documents,
            "{label} against Kubernetes {version}: not every document was validated:\n{text}"
        );
    }
}

/// The ConfigMap's `config.yaml`, as text and as JSON.
fn config(tools: &Tools, docs: &[Value]) -> (String, Value) {
    let text = find(docs, "ConfigMap", "xdpgate-config")["data"]["config.yaml"]
        .as_str()
        .expect("the ConfigMap has config.yaml")
        .to_owned();
    let mut parsed = yaml_documents(tools, &text);
    assert_eq!(parsed.len(), 1, "config.yaml is one document");
    (text, parsed.remove(0))
}

/// A humantime duration of the forms the config uses (`5s`, `1m 30s`,
/// `500ms`), in milliseconds.
fn duration_ms(text: &str) -> u64 {
    let mut total = 0;
    for part in text.split_whitespace() {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        let value: u64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text:?}"));
        let unit = &part[digits.len()..];
        total += value
            * match unit {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => panic!("unexpected unit in duration {text:?}"),
            };
    }
    total
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listen:?}"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every container and init container of every pod template in `docs`.
fn containers(docs: &[Value]) -> Vec<(String, &Value)> {
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

#[test]
fn the_base_the_k3s_overlay_and_the_servicemonitor_validate_against_the_kubernetes_schemas() {
    let test =
        "the_base_the_k3s_overlay_and_the_servicemonitor_validate_against_the_kubernetes_schemas";
    let Some(tools) = tools(test) else { return };
    for dir in ["base", "overlays/k3s"] {
        let yaml = render(&tools, dir);
        let docs = yaml_documents(&tools, &yaml);
        let kinds: BTreeSet<String> = docs.iter().map(kind_name).collect();
        for expected in [
            "Namespace/xdpgate",
            "ServiceAccount/xdpgate",
            "ClusterRole/xdpgate",
            "ClusterRoleBinding/xdpgate",
            "IngressClass/xdpgate",
            "ConfigMap/xdpgate-config",
            "DaemonSet/xdpgate",
            "Service/xdpgate-metrics",
        ] {
            assert!(
                kinds.contains(expected),
                "{dir}: {expected} missing from {kinds:?}"
            );
        }
        // Core kinds only: a CRD kind here would need its CRD installed first.
        validate(&tools, &dir.replace('/', "-"), &yaml, docs.len(), &[]);
        for doc in &docs {
            assert!(
                doc["kind"] != "Secret",
                "{dir}: {} ships a Secret; secrets are created by the operator, not committed",
                kind_name(doc)
            );
            let cluster_scoped = [
                "Namespace",
                "ClusterRole",
                "ClusterRoleBinding",
                "IngressClass",
            ];
            if !cluster_scoped.contains(&doc["kind"].as_str().unwrap_or_default()) {
                assert_eq!(
                    doc["metadata"]["namespace"],
                    "xdpgate",
                    "{dir}: {} is not in namespace xdpgate",
                    kind_name(doc)
                );
            }
        }
    }

    // The IngressClass names the controller the daemon answers for.
    let base = rendered(&tools, "base");
    let class = find(&base, "IngressClass", "xdpgate");
    assert_eq!(
        class["spec"]["controller"],
        xdpgate::ingress::translate::CONTROLLER,
        "the shipped IngressClass must be one the daemon takes as its own"
    );

    // The ServiceMonitor's CRD is no core schema: it is validated apart,
    // with only its own kind allowed to be unknown, and checked by hand.
    let yaml = render(&tools, "optional/servicemonitor");
    let docs = yaml_documents(&tools, &yaml);
    assert_eq!(
        docs.len(),
        1,
        "the servicemonitor component is one ServiceMonitor"
    );
    validate(&tools, "servicemonitor", &yaml, 1, &["ServiceMonitor"]);
    let monitor = find(&docs, "ServiceMonitor", "xdpgate");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], "xdpgate");
    let base = rendered(&tools, "base");
    let service = find(&base, "Service", "xdpgate-metrics");
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("the ServiceMonitor selects by matchLabels");
    for (key, value) in wanted {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the ServiceMonitor's selector {key}={value} does not match the metrics Service"
        );
    }
    let port_names: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    for endpoint in monitor["spec"]["endpoints"].as_array().expect("endpoints") {
        assert!(
            port_names.contains(&&endpoint["port"]),
            "ServiceMonitor endpoint port {} is not a port of the metrics Service",
            endpoint["port"]
        );
        assert_eq!(endpoint["path"], "/metrics");
    }
}

#[test]
fn the_daemonset_has_exactly_the_privileges_probes_and_budget_it_needs() {
    let test = "the_daemonset_has_exactly_the_privileges_probes_and_budget_it_needs";
    let Some(tools) = tools(test) else { return };
    for dir in ["base", "overlays/k3s"] {
        let docs = rendered(&tools, dir);
        let (_, config) = config(&tools, &docs);
        let configmap = find(&docs, "ConfigMap", "xdpgate-config");
        let ds = find(&docs, "DaemonSet", "xdpgate");
        let pod = &ds["spec"]["template"]["spec"];
        let ctx = |what: &str| format!("{dir}: DaemonSet xdpgate: {what}");

        assert_eq!(pod["hostNetwork"], true, "{}", ctx("hostNetwork"));
        assert_eq!(
            pod["dnsPolicy"],
            "ClusterFirstWithHostNet",
            "{}",
            ctx("dnsPolicy")
        );
        assert_eq!(
            pod["serviceAccountName"],
            "xdpgate",
            "{}",
            ctx("serviceAccountName")
        );
        assert!(
            pod["hostPID"] != true && pod["hostIPC"] != true,
            "{}",
            ctx("no hostPID/hostIPC")
        );

        let list = pod["containers"].as_array().expect("containers");
        assert_eq!(list.len(), 1, "{}", ctx("one container"));
        let c = &list[0];
        let sc = &c["securityContext"];
        assert_ne!(sc["privileged"], true, "{}", ctx("not privileged"));
        assert_eq!(
            sc["allowPrivilegeEscalation"],
            false,
            "{}",
            ctx("allowPrivilegeEscalation")
        );
        assert_eq!(
            sc["readOnlyRootFilesystem"],
            true,
            "{}",
            ctx("readOnlyRootFilesystem")
        );
        assert_eq!(
            sc["runAsUser"],
            0,
            "{}",
            ctx("runAsUser 0 (capabilities, bpffs)")
        );
        let seccomp = if sc["seccompProfile"].is_null() {
            &pod["securityContext"]["seccompProfile"]
        } else {
            &sc["seccompProfile"]
        };
        assert_eq!(
            seccomp["type"],
            "RuntimeDefault",
            "{}",
            ctx("seccompProfile")
        );
        assert_eq!(
            strings(&sc["capabilities"]["drop"]),
            ["ALL"],
            "{}",
            ctx("drop ALL")
        );
        let added: BTreeSet<&str> = strings(&sc["capabilities"]["add"]).into_iter().collect();
        let expected: BTreeSet<&str> = CAPABILITIES.iter().copied().collect();
        assert_eq!(added, expected, "{}", ctx("capabilities added"));

        // Mounts: no Bidirectional propagation without privileged (the API
        // server refuses it), the bpffs and the state dir from the host.
        let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
        let volumes = pod["volumes"].as_array().expect("volumes");
        let volume_of = |mount_path: &str| -> (&Value, &Value) {
            let mount = mounts
                .iter()
                .find(|m| m["mountPath"] == mount_path)
                .unwrap_or_else(|| panic!("{}", ctx(&format!("nothing mounted at {mount_path}"))));
            let volume = volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("{}", ctx(&format!("no volume {}", mount["name"]))));
            (mount, volume)
        };
        for mount in mounts {
            assert_ne!(
                mount["mountPropagation"],
                "Bidirectional",
                "{}",
                ctx("Bidirectional propagation needs a privileged container")
            );
        }
        let (bpf_mount, bpf_volume) = volume_of("/sys/fs/bpf");
        assert_eq!(
            bpf_volume["hostPath"]["path"],
            "/sys/fs/bpf",
            "{}",
            ctx("bpffs hostPath")
        );
        assert_eq!(
            bpf_mount["mountPropagation"],
            "HostToContainer",
            "{}",
            ctx("bpffs propagation")
        );
        assert_ne!(
            bpf_mount["readOnly"],
            true,
            "{}",
            ctx("bpffs must be writable for pins")
        );
        let state_dir = config["state_dir"].as_str().unwrap_or("/var/lib/xdpgate");
        let (_, state_volume) = volume_of(state_dir);
        assert_eq!(
            state_volume["hostPath"]["path"],
            state_dir,
            "{}",
            ctx("state hostPath")
        );
        assert_eq!(
            state_volume["hostPath"]["type"],
            "DirectoryOrCreate",
            "{}",
            ctx("state type")
        );

        // The config file and the admins file come from the ConfigMap,
        // mounted as a directory (a subPath mount would never update).
        let args = strings(&c["args"]);
        let config_path = args
            .iter()
            .position(|a| *a == "--config")
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{}", ctx("args carry --config")));
        for file in [config_path.to_string(), {
            config["filter"]["sets"]["admins"]["file"]
                .as_str()
                .expect("admins set file")
                .to_owned()
        }] {
            let (dir_path, key) = file.rsplit_once('/').unwrap();
            let (mount, volume) = volume_of(dir_path);
            assert!(mount["subPath"].is_null(), "{}", ctx("no subPath mounts"));
            assert_eq!(
                volume["configMap"]["name"],
                "xdpgate-config",
                "{}",
                ctx(&file)
            );
            assert!(
                configmap["data"][key].is_string(),
                "{}",
                ctx(&format!("ConfigMap has no {key}"))
            );
        }

        // TLS keys come from a Secret volume mounted where the config looks.
        for ep in config["proxy"]["entrypoints"]
            .as_object()
            .expect("entrypoints")
            .values()
        {
            for pair in ep["tls"]["certs"].as_array().into_iter().flatten() {
                for file in [
                    pair["cert"].as_str().unwrap(),
                    pair["key"].as_str().unwrap(),
                ] {
                    let (dir_path, _) = file.rsplit_once('/').unwrap();
                    let (_, volume) = volume_of(dir_path);
                    assert!(
                        volume["secret"]["secretName"].is_string(),
                        "{}",
                        ctx(&format!("{file} is not on a Secret volume"))
                    );
                }
            }
        }

        // Probes reach the admin listener, which must therefore listen on
        // the node's address: the pod IP from the downward API, passed as
        // `--admin-ip`, not 0.0.0.0 (which would also put it on the CNI
        // bridge, in reach of every pod on the node). The filter must keep
        // the internet off its port.
        let admin_listen = config["admin"]["listen"]
            .as_str()
            .unwrap_or("127.0.0.1:9901");
        let admin_port = port_of(admin_listen);
        let admin_ip = args
            .iter()
            .position(|a| *a == "--admin-ip")
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{}", ctx("args carry --admin-ip $(POD_IP)")));
        assert_eq!(*admin_ip, "$(POD_IP)", "{}", ctx("--admin-ip"));
        assert!(
            !args.iter().any(|a| a.starts_with("--admin-listen")),
            "{}",
            ctx("--admin-listen would override --admin-ip")
        );
        let pod_ip = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "POD_IP")
            .unwrap_or_else(|| panic!("{}", ctx("env POD_IP")));
        assert_eq!(
            pod_ip["valueFrom"]["fieldRef"]["fieldPath"],
            "status.podIP",
            "{}",
            ctx("POD_IP comes from the downward API")
        );
        assert!(
            !admin_listen.starts_with("0.0.0.0") && !admin_listen.starts_with("[::]"),
            "{}",
            ctx("the admin listener must not bind every address of the node")
        );
        let ports = c["ports"].as_array().expect("ports");
        let resolve = |port: &Value| -> u16 {
            if let Some(n) = port.as_u64() {
                return n as u16;
            }
            ports
                .iter()
                .find(|p| p["name"] == *port)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{}", ctx(&format!("unknown port {port}"))))
                as u16
        };
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{}", ctx(probe));
            assert_eq!(
                resolve(&get["port"]),
                admin_port,
                "{}",
                ctx(&format!("{probe} port"))
            );
            assert!(
                get["host"].is_null(),
                "{}",
                ctx(&format!("{probe} targets the pod IP"))
            );
        }
        let rules = config["filter"]["allow"].as_array().expect("filter.allow");
        let guarded = rules.iter().any(|rule| {
            rule["tcp"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p.as_u64() == Some(admin_port.into()))
                && strings(&rule["from"]) == ["nodes"]
        });
        assert!(
            guarded,
            "{}",
            ctx(&format!(
                "no `tcp: [{admin_port}], from: [nodes]` rule in the config"
            ))
        );
        for (listen, name) in config["proxy"]["entrypoints"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, ep)| (ep["listen"].as_str().expect("one listen address"), name))
        {
            let port = port_of(listen);
            assert!(
                ports
                    .iter()
                    .any(|p| p["containerPort"] == port && p["hostPort"] == port),
                "{}",
                ctx(&format!(
                    "entrypoint {name} ({port}) is not a declared host port"
                ))
            );
        }

        let strategy = &ds["spec"]["updateStrategy"];
        assert_eq!(
            strategy["type"],
            "RollingUpdate",
            "{}",
            ctx("updateStrategy")
        );
        assert_eq!(
            strategy["rollingUpdate"]["maxUnavailable"],
            1,
            "{}",
            ctx("maxUnavailable")
        );
        assert_eq!(
            strategy["rollingUpdate"]["maxSurge"],
            0,
            "{}",
            ctx("maxSurge")
        );

        let drain = &config["proxy"]["drain"];
        let drain_ms = duration_ms(drain["accept_grace"].as_str().unwrap_or("5s"))
            + duration_ms(drain["grace_timeout"].as_str().unwrap_or("30s"));
        let grace_s = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace_s * 1000 > drain_ms,
            "{}",
            ctx(&format!(
                "terminationGracePeriodSeconds {grace_s} is not above the drain ({drain_ms} ms)"
            ))
        );

        let resources = &c["resources"];
        for key in ["cpu", "memory"] {
            assert!(
                resources["requests"][key].is_string(),
                "{}",
                ctx(&format!("requests.{key}"))
            );
        }
        assert!(
            resources["limits"]["memory"].is_string(),
            "{}",
            ctx("limits.memory")
        );
        assert!(
            c["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("ghcr.io/") && i.contains(':')),
            "{}",
            ctx("a tagged image")
        );
    }
}

#[test]
fn no_environment_variable_carries_a_secret() {
    let test = "no_environment_variable_carries_a_secret";
    let Some(tools) = tools(test) else { return };
    for dir in ["base", "overlays/k3s"] {
        let docs = rendered(&tools, dir);
        for (name, container) in containers(&docs) {
            for env in container["env"].as_array().into_iter().flatten() {
                assert!(
                    env["valueFrom"]["secretKeyRef"].is_null(),
                    "{dir}: {name}: env {} reads a Secret; mount it as a file",
                    env["name"]
                );
                let var = env["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                for word in ["PASSWORD", "SECRET", "TOKEN", "KEY", "HTPASSWD"] {
                    assert!(
                        !var.contains(word),
                        "{dir}: {name}: env {var} looks like a secret"
                    );
                }
            }
            for from in container["envFrom"].as_array().into_iter().flatten() {
                assert!(
                    from["secretRef"].is_null(),
                    "{dir}: {name}: envFrom reads a Secret; mount it as a file"
                );
            }
        }
    }
}

#[test]
fn the_configmap_config_passes_xdpgate_config_check() {
    let test = "the_configmap_config_passes_xdpgate_config_check";
    let Some(tools) = tools(test) else { return };
    for dir in ["base", "overlays/k3s"] {
        let docs = rendered(&tools, dir);
        let (text, _) = config(&tools, &docs);
        let scratch = tempfile::tempdir().expect("tempdir");
        let file = scratch.path().join("config.yaml");
        std::fs::write(&file, &text).expect("write config.yaml");
        let output = Command::new(env!("CARGO_BIN_EXE_xdpgate-under-test"))
            .args(["config", "check"])
            .arg(&file)
            .output()
            .expect("run xdpgate config check");
        assert!(
            output.status.success(),
            "{dir}: the ConfigMap's config.yaml is refused ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The admins set file in the same ConfigMap holds entries.
        let admins = find(&docs, "ConfigMap", "xdpgate-config")["data"]["admins.txt"]
            .as_str()
            .expect("admins.txt");
        assert!(
            admins
                .lines()
                .map(|l| l.split('#').next().unwrap().trim())
                .any(|l| !l.is_empty()),
            "{dir}: admins.txt has no entry, so the admins set could never load"
        );
    }
}

#[test]
fn rbac_is_read_only_and_limited_to_what_an_ingress_watch_needs() {
    let test = "rbac_is_read_only_and_limited_to_what_an_ingress_watch_needs";
    let Some(tools) = tools(test) else { return };
    let docs = rendered(&tools, "overlays/k3s");
    let role = find(&docs, "ClusterRole", "xdpgate");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let verbs: BTreeSet<&str> = strings(&rule["verbs"]).into_iter().collect();
        // Reads, except the status subresources of Ingresses and of the
        // Gateway API's objects, which xdpgate writes (and nothing else).
        let status_only = strings(&rule["resources"])
            .iter()
            .all(|r| r.ends_with("/status"));
        let allowed = if status_only {
            BTreeSet::from(["patch", "update"])
        } else {
            BTreeSet::from(["get", "list", "watch"])
        };
        assert_eq!(verbs, allowed, "verbs of {rule}");
        assert!(rule["resourceNames"].is_null() && rule["nonResourceURLs"].is_null());
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                granted.insert(format!("{group}/{resource}"));
            }
        }
    }
    let expected: BTreeSet<String> = [
        "networking.k8s.io/ingresses",
        "networking.k8s.io/ingressclasses",
        "networking.k8s.io/ingresses/status",
        "/nodes",
        "/secrets",
        "discovery.k8s.io/endpointslices",
        "traefik.io/middlewares",
        "traefik.containo.us/middlewares",
        "gateway.networking.k8s.io/gatewayclasses",
        "gateway.networking.k8s.io/gateways",
        "gateway.networking.k8s.io/httproutes",
        "gateway.networking.k8s.io/referencegrants",
        "gateway.networking.k8s.io/gatewayclasses/status",
        "gateway.networking.k8s.io/gateways/status",
        "gateway.networking.k8s.io/httproutes/status",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(granted, expected);

    let binding = find(&docs, "ClusterRoleBinding", "xdpgate");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "xdpgate");
    let subjects = binding["subjects"].as_array().expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], "xdpgate");
    assert_eq!(subjects[0]["namespace"], "xdpgate");

    // Nothing uses the API yet: the token stays out of the pod.
    let pod = &find(&docs, "DaemonSet", "xdpgate")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
}

#[test]
fn the_k3s_overlay_targets_edge_nodes_and_ships_the_k3s_config_that_disables_traefik() {
    let test = "the_k3s_overlay_targets_edge_nodes_and_ships_the_k3s_config_that_disables_traefik";
    let Some(tools) = tools(test) else { return };
    let base = rendered(&tools, "base");
    let k3s = rendered(&tools, "overlays/k3s");
    let base_pod = &find(&base, "DaemonSet", "xdpgate")["spec"]["template"]["spec"];
    let pod = &find(&k3s, "DaemonSet", "xdpgate")["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["node-role.kubernetes.io/edge"], "true");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert!(base_pod["nodeSelector"]["node-role.kubernetes.io/edge"].is_null());
    // The overlay replaces the toleration list: it must keep the base's.
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    for toleration in base_pod["tolerations"]
        .as_array()
        .expect("base tolerations")
    {
        assert!(
            tolerations.contains(toleration),
            "the overlay lost {toleration}"
        );
    }
    for key in [
        "node-role.kubernetes.io/control-plane",
        "CriticalAddonsOnly",
    ] {
        assert!(
            tolerations
                .iter()
                .any(|t| t["key"] == key && t["operator"] == "Exists"),
            "the k3s overlay does not tolerate {key}"
        );
    }
    // Apart from the DaemonSet, the overlay renders the base unchanged.
    let without_ds = |docs: &[Value]| -> Vec<Value> {
        docs.iter()
            .filter(|d| d["kind"] != "DaemonSet")
            .cloned()
            .collect()
    };
    assert_eq!(without_ds(&base), without_ds(&k3s));

    // k3s-config.yaml is k3s's own config file, not a manifest.
    let path = kubernetes_dir().join("overlays/k3s/k3s-config.yaml");
    let text = std::fs::read_to_string(&path).expect("overlays/k3s/k3s-config.yaml");
    let parsed = yaml_documents(&tools, &text);
    assert_eq!(parsed.len(), 1);
    assert!(
        strings(&parsed[0]["disable"]).contains(&"traefik"),
        "k3s-config.yaml: {text}"
    );
    assert!(
        parsed[0]["kind"].is_null(),
        "k3s-config.yaml must not look like a manifest"
    );
    assert!(
        k3s.iter()
            .all(|d| d["kind"].is_string() && d["apiVersion"].is_string()),
        "the overlay rendered something that is not a manifest"
    );
}
