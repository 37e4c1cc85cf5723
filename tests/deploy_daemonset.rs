//! The DaemonSet under `deploy/kubernetes/`, rendered offline (base and
//! k3s overlay) and checked for what a node runs: exactly the privileges the
//! filter needs, the host paths and volumes, the admin listener on the pod
//! IP with the probes and the filter rule that guard it, the rollout and the
//! drain budget, and no secret in an environment variable. Rendering and the
//! tools it needs are `xdpgate_tests::manifests`; each test skips with a
//! message naming what is missing.
use std::collections::BTreeSet;

use serde_json::Value;
use xdpgate_tests::manifests::{config, containers, find, rendered, strings, tools};

/// The capabilities the container gets, exactly (after dropping ALL).
const CAPABILITIES: &[&str] = &["BPF", "NET_ADMIN", "PERFMON", "NET_BIND_SERVICE"];

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

/// One rendering's DaemonSet: its pod, its one container and the config its
/// ConfigMap carries.
struct Rendering<'a> {
    dir: &'a str,
    config: &'a Value,
    configmap: &'a Value,
    ds: &'a Value,
    pod: &'a Value,
    c: &'a Value,
}

impl<'a> Rendering<'a> {
    fn ctx(&self, what: &str) -> String {
        format!("{}: DaemonSet xdpgate: {what}", self.dir)
    }

    /// The mount at `mount_path` and the volume it mounts.
    fn volume_of(&self, mount_path: &str) -> (&'a Value, &'a Value) {
        let (c, pod) = (self.c, self.pod);
        let ctx = |what: &str| self.ctx(what);
        let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
        let volumes = pod["volumes"].as_array().expect("volumes");
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("{}", ctx(&format!("nothing mounted at {mount_path}"))));
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{}", ctx(&format!("no volume {}", mount["name"]))));
        (mount, volume)
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
        runs_on_the_host_network(pod, ctx);
        let list = pod["containers"].as_array().expect("containers");
        assert_eq!(list.len(), 1, "{}", ctx("one container"));
        let c = &list[0];
        let r = Rendering {
            dir,
            config: &config,
            configmap,
            ds,
            pod,
            c,
        };
        has_exactly_its_privileges(&r);
        mounts_the_bpffs_and_the_state_dir(&r);
        reads_its_config_and_keys_from_volumes(&r);
        let admin_port = admin_listener_is_on_the_pod_ip(&r);
        probes_reach_the_admin_port_which_the_filter_guards(&r, admin_port);
        entrypoints_are_host_ports(&r);
        rolls_out_one_node_at_a_time_within_its_budget(&r);
    }
}

fn runs_on_the_host_network(pod: &Value, ctx: impl Fn(&str) -> String) {
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
}

fn has_exactly_its_privileges(r: &Rendering) {
    let Rendering { pod, c, .. } = *r;
    let ctx = |what: &str| r.ctx(what);
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
}

fn mounts_the_bpffs_and_the_state_dir(r: &Rendering) {
    let Rendering { config, c, .. } = *r;
    let ctx = |what: &str| r.ctx(what);
    let volume_of = |mount_path: &str| r.volume_of(mount_path);
    // Mounts: no Bidirectional propagation without privileged (the API
    // server refuses it), the bpffs and the state dir from the host.
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
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
}

fn reads_its_config_and_keys_from_volumes(r: &Rendering) {
    let Rendering {
        config,
        configmap,
        c,
        ..
    } = *r;
    let ctx = |what: &str| r.ctx(what);
    let volume_of = |mount_path: &str| r.volume_of(mount_path);
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
}

/// The admin listener's port, after checking that it listens on the pod IP
/// only.
fn admin_listener_is_on_the_pod_ip(r: &Rendering) -> u16 {
    let Rendering { config, c, .. } = *r;
    let ctx = |what: &str| r.ctx(what);
    let args = strings(&c["args"]);
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
    admin_port
}

fn probes_reach_the_admin_port_which_the_filter_guards(r: &Rendering, admin_port: u16) {
    let Rendering { config, c, .. } = *r;
    let ctx = |what: &str| r.ctx(what);
    let ports = c["ports"].as_array().expect("ports");
    let resolve = |port: &Value| -> u16 {
        if let Some(n) = port.as_u64() {
            return n as u16;
        }
        ports
            .iter()
            .find(|p| p["name"] == *port)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{}", ctx(&format!("unknown port {port}")))) as u16
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
}

fn entrypoints_are_host_ports(r: &Rendering) {
    let Rendering { config, c, .. } = *r;
    let ctx = |what: &str| r.ctx(what);
    let ports = c["ports"].as_array().expect("ports");
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
}

fn rolls_out_one_node_at_a_time_within_its_budget(r: &Rendering) {
    let Rendering {
        config, ds, pod, c, ..
    } = *r;
    let ctx = |what: &str| r.ctx(what);
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
