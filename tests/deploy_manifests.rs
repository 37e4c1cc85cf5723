//! The Kubernetes manifests under `deploy/kubernetes/`, rendered and checked
//! offline: no cluster, no network.
//!
//! * `kubectl kustomize` renders the base and the k3s overlay (and the
//!   optional ServiceMonitor). The kustomizations are written for kubectl
//!   1.20's embedded kustomize v2.0.3 (Debian's `kubernetes-client`) and
//!   work with newer ones too.
//! * `kubernetes-validate --strict` checks every rendered document against
//!   the Kubernetes OpenAPI schemas of the versions in [`KUBERNETES_VERSIONS`].
//! * The IngressClass, the RBAC rules, the k3s overlay and the
//!   ServiceMonitor are checked here, on the rendered objects; the
//!   DaemonSet's security properties, probes and drain budget, and the
//!   absence of secrets in `env`, in `deploy_daemonset.rs`.
//! * The config inside the ConfigMap goes through `xdpgate config check`.
//!
//! YAML is turned into JSON by the validator's own Python (PyYAML is one of
//! its dependencies), so this test needs no YAML crate.
//!
//! Needs `kubectl` on PATH and the validator in
//! `${XDG_CACHE_HOME:-$HOME/.cache}/xdpgate/venv`; each test skips with a
//! message naming what is missing otherwise.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use xdpgate_tests::manifests::{
    config, find, kind_name, kubernetes_dir, render, rendered, strings, tools, yaml_documents,
    Tools,
};

/// Kubernetes versions the rendered manifests must validate against: the
/// version k3s ships today and the newest the validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.34", "1.37"];

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

    the_servicemonitor_validates_apart_and_selects_the_metrics_service(&tools);
}

/// The ServiceMonitor's CRD is no core schema: it is validated apart,
/// with only its own kind allowed to be unknown, and checked by hand.
fn the_servicemonitor_validates_apart_and_selects_the_metrics_service(tools: &Tools) {
    let yaml = render(tools, "optional/servicemonitor");
    let docs = yaml_documents(tools, &yaml);
    assert_eq!(
        docs.len(),
        1,
        "the servicemonitor component is one ServiceMonitor"
    );
    validate(tools, "servicemonitor", &yaml, 1, &["ServiceMonitor"]);
    let monitor = find(&docs, "ServiceMonitor", "xdpgate");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], "xdpgate");
    let base = rendered(tools, "base");
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
