//! `proxy.ingress`: Kubernetes Ingress objects as an extra source of routes.
//! It names the class this proxy answers for, the entrypoints the routes
//! serve and the one that gets the Ingresses' certificates, and where the
//! objects come from: a directory of YAML files, the Kubernetes API, or both.
//! The objects themselves are read at run time (`crate::ingress`), so nothing
//! here depends on them.
use std::time::Duration;

use super::{entrypoints::Entrypoint, unknown};
use crate::{
    config::{
        values::{boolean, duration, file_path, suggest, valid_name},
        yaml::Val,
        ConfigError,
    },
    proxy::{GatewayConfig, GatewayEntrypoint, IngressConfig, KubernetesConfig, PublishStatus},
};

/// The class written in `spec.ingressClassName` when none is configured.
const DEFAULT_CLASS: &str = "xdpgate";
/// The GatewayClass `spec.controllerName` that is ours unless configured.
pub const DEFAULT_GATEWAY_CONTROLLER: &str = "xdpgate.io/gateway-controller";

pub(super) fn read_ingress(
    v: Val,
    path: &str,
    entrypoints: &[Entrypoint],
) -> Result<IngressConfig, ConfigError> {
    let table = v.table(
        path,
        &[
            "class",
            "entrypoints",
            "tls_entrypoint",
            "endpoint_slices",
            "files",
            "poll_interval",
            "kubernetes",
            "allow_cross_namespace",
            "gateway_api",
            "gateway_controller",
        ],
    )?;
    let mut config = IngressConfig::new(DEFAULT_CLASS);
    if let Some(v) = table.get("class") {
        let path = table.key_path("class");
        let class = v.text(&path, "an IngressClass name like xdpgate")?.trim();
        if !valid_name(class) {
            return Err(v.error(
                &path,
                format!("`{class}` is not an IngressClass name: use letters, digits, `-` or `.`"),
            ));
        }
        config.class = class.to_string();
    }
    if let Some(v) = table.get("entrypoints") {
        for (path, item) in v.list(&table.key_path("entrypoints"), "[websecure]")? {
            let name = item.text(&path, "an entrypoint name")?.trim();
            let entrypoint = find_entrypoint(item, &path, name, entrypoints)?;
            if let Some(redirect) = &entrypoint.config.redirect {
                return Err(item.error(
                    &path,
                    format!(
                        "entrypoint `{name}` redirects every request to `{}`; Ingress routes \
                         cannot be served there (leave it out)",
                        redirect.to
                    ),
                ));
            }
            if config.entrypoints.iter().any(|e| e == name) {
                return Err(item.error(&path, format!("entrypoint `{name}` is listed twice")));
            }
            config.entrypoints.push(name.to_string());
        }
    }
    match table.get("tls_entrypoint") {
        Some(v) => {
            let path = table.key_path("tls_entrypoint");
            let name = v.text(&path, "a TLS entrypoint name")?.trim();
            let entrypoint = find_entrypoint(v, &path, name, entrypoints)?;
            if entrypoint.config.tls.is_none() {
                return Err(v.error(
                    &path,
                    format!(
                        "entrypoint `{name}` has no `tls`: Ingress certificates need a TLS \
                         entrypoint"
                    ),
                ));
            }
            config.tls_entrypoint = Some(name.to_string());
        }
        None => {
            config.tls_entrypoint = entrypoints
                .iter()
                .find(|e| e.config.tls.is_some())
                .map(|e| e.config.name.clone());
        }
    }
    if let Some(v) = table.get("endpoint_slices") {
        config.endpoint_slices = boolean(v, &table.key_path("endpoint_slices"))?;
    }
    if let Some(v) = table.get("allow_cross_namespace") {
        config.allow_cross_namespace = boolean(v, &table.key_path("allow_cross_namespace"))?;
    }
    if let Some(v) = table.get("files") {
        config.files = Some(file_path(v, &table.key_path("files"))?);
    }
    if let Some(v) = table.get("poll_interval") {
        let path = table.key_path("poll_interval");
        config.poll_interval = duration(v, &path)?;
        if config.poll_interval < Duration::from_millis(100) {
            return Err(v.error(
                &path,
                "poll the Ingress files at most every 100ms (e.g. `poll_interval: 1s`)",
            ));
        }
    }
    if let Some(v) = table.get("kubernetes") {
        config.kubernetes = Some(read_kubernetes(v, &table.key_path("kubernetes"))?);
    }
    read_gateway(&table, entrypoints, &mut config)?;
    if config.files.is_none() && config.kubernetes.is_none() {
        return Err(v.error(
            path,
            "the Ingress source has neither `files` nor `kubernetes`: add \
             `files: /etc/xdpgate/ingress.d` or `kubernetes: {}` (in-cluster)",
        ));
    }
    Ok(config)
}

/// `gateway_api: true` (and `gateway_controller`, which needs it).
fn read_gateway(
    table: &crate::config::yaml::Table<'_>,
    entrypoints: &[Entrypoint],
    config: &mut IngressConfig,
) -> Result<(), ConfigError> {
    let enabled = match table.get("gateway_api") {
        Some(v) => boolean(v, &table.key_path("gateway_api"))?,
        None => false,
    };
    let mut controller_name = DEFAULT_GATEWAY_CONTROLLER.to_string();
    if let Some(v) = table.get("gateway_controller") {
        let path = table.key_path("gateway_controller");
        let name = v.text(
            &path,
            "a controller name like xdpgate.io/gateway-controller",
        )?;
        let name = name.trim();
        let (domain, rest) = name.split_once('/').unwrap_or(("", ""));
        if !domain.contains('.') || rest.is_empty() || name.contains(char::is_whitespace) {
            return Err(v.error(
                &path,
                format!(
                    "`{name}` is not a controller name: a domain, `/` and a path, like \
                     {DEFAULT_GATEWAY_CONTROLLER}"
                ),
            ));
        }
        if !enabled {
            return Err(v.error(
                &path,
                "gateway_controller has no effect without `gateway_api: true`",
            ));
        }
        controller_name = name.to_string();
    }
    if enabled {
        config.gateway = Some(GatewayConfig {
            controller_name,
            entrypoints: entrypoints
                .iter()
                .map(|e| GatewayEntrypoint {
                    name: e.config.name.clone(),
                    ports: e.config.listen.iter().map(|a| a.port()).collect(),
                    tls: e.config.tls.is_some(),
                    redirects: e.config.redirect.is_some(),
                })
                .collect(),
        });
    }
    Ok(())
}

fn find_entrypoint<'e>(
    v: Val,
    path: &str,
    name: &str,
    entrypoints: &'e [Entrypoint],
) -> Result<&'e Entrypoint, ConfigError> {
    entrypoints
        .iter()
        .find(|e| e.config.name == name)
        .ok_or_else(|| {
            v.error(
                path,
                unknown(
                    "entrypoint",
                    name,
                    entrypoints.iter().map(|e| e.config.name.as_str()),
                    "it is not defined under proxy.entrypoints",
                ),
            )
        })
}

fn read_kubernetes(v: Val, path: &str) -> Result<KubernetesConfig, ConfigError> {
    let table = v.table(
        path,
        &[
            "kubeconfig",
            "service_account_dir",
            "namespaces",
            "resync",
            "publish_status",
        ],
    )?;
    let mut config = KubernetesConfig::default();
    if let Some(v) = table.get("kubeconfig") {
        config.kubeconfig = Some(file_path(v, &table.key_path("kubeconfig"))?);
    }
    if let Some(v) = table.get("service_account_dir") {
        let path = table.key_path("service_account_dir");
        if config.kubeconfig.is_some() {
            return Err(v.error(
                &path,
                "service_account_dir is for the in-cluster service account; with a \
                 `kubeconfig` the credentials are the kubeconfig's (give one or the other)",
            ));
        }
        config.service_account_dir = file_path(v, &path)?;
    }
    if let Some(v) = table.get("publish_status") {
        config.publish_status = read_publish_status(v, &table.key_path("publish_status"))?;
    }
    if let Some(v) = table.get("namespaces") {
        for (path, item) in v.list(&table.key_path("namespaces"), "[honeydue]")? {
            let name = item.text(&path, "a namespace name")?.trim();
            if !valid_name(name) || name.contains('.') || name.contains('_') {
                return Err(item.error(
                    &path,
                    format!("`{name}` is not a namespace name (lower-case letters, digits, `-`)"),
                ));
            }
            if config.namespaces.iter().any(|n| n == name) {
                return Err(item.error(&path, format!("namespace `{name}` is listed twice")));
            }
            config.namespaces.push(name.to_string());
        }
    }
    if let Some(v) = table.get("resync") {
        let path = table.key_path("resync");
        config.resync = duration(v, &path)?;
        if config.resync < Duration::from_secs(10) {
            return Err(v.error(
                &path,
                "a resync relists every object from the API server: make it 10s or longer \
                 (default 5m)",
            ));
        }
    }
    Ok(config)
}

/// Node address types (`status.addresses[].type`) a Node can carry.
const NODE_ADDRESS_TYPES: &[&str] = &[
    "ExternalIP",
    "InternalIP",
    "Hostname",
    "ExternalDNS",
    "InternalDNS",
];

/// `publish_status: off | nodes | { addresses: [...] } | { nodes: {...} }`.
fn read_publish_status(v: Val, path: &str) -> Result<PublishStatus, ConfigError> {
    if let Ok(word) = v.text(path, "") {
        return match word.trim() {
            "off" | "false" => Ok(PublishStatus::Off),
            "nodes" => Ok(PublishStatus::default()),
            other => Err(v.error(
                path,
                format!(
                    "`{other}` is not a publish_status: `off`, `nodes`, \
                     `{{ addresses: [203.0.113.10, lb.example.com] }}` or \
                     `{{ nodes: {{ selector: {{ ... }}, address_types: [ExternalIP] }} }}`"
                ),
            )),
        };
    }
    let table = v.table(path, &["addresses", "nodes"])?;
    match (table.get("addresses"), table.get("nodes")) {
        (Some(_), Some(nodes)) => Err(nodes.error(
            &table.key_path("nodes"),
            "publish `addresses` or `nodes`, not both",
        )),
        (Some(list), None) => {
            let path = table.key_path("addresses");
            let mut addresses = Vec::new();
            for (path, item) in list.list(&path, "[203.0.113.10, lb.example.com]")? {
                let text = item.text(&path, "an IP address or a host name")?.trim();
                if text.parse::<std::net::IpAddr>().is_err() && !host_name(text) {
                    return Err(item.error(
                        &path,
                        format!("`{text}` is neither an IP address nor a host name"),
                    ));
                }
                if addresses.iter().any(|a| a == text) {
                    return Err(item.error(&path, format!("`{text}` is listed twice")));
                }
                addresses.push(text.to_string());
            }
            if addresses.is_empty() {
                return Err(list.error(
                    &path,
                    "no address to publish: list some, or say `publish_status: off`",
                ));
            }
            Ok(PublishStatus::Addresses(addresses))
        }
        (None, Some(nodes)) => read_publish_nodes(nodes, &table.key_path("nodes")),
        (None, None) => Err(v.error(
            path,
            "say what to publish: `addresses: [...]` or `nodes: {}`",
        )),
    }
}

fn read_publish_nodes(v: Val, path: &str) -> Result<PublishStatus, ConfigError> {
    let table = v.table(path, &["selector", "address_types"])?;
    let PublishStatus::Nodes {
        mut selector,
        mut address_types,
    } = PublishStatus::default()
    else {
        unreachable!("the default publishes the nodes")
    };
    if let Some(v) = table.get("selector") {
        let path = table.key_path("selector");
        for (label, _, value) in v.named_table(&path)?.entries() {
            let label_path = format!("{path}.{label}");
            let value = value.text(&label_path, "a label value")?.trim();
            selector.insert(label.to_string(), value.to_string());
        }
    }
    if let Some(v) = table.get("address_types") {
        address_types.clear();
        for (path, item) in v.list(&table.key_path("address_types"), "[ExternalIP, InternalIP]")? {
            let kind = item.text(&path, "a Node address type")?.trim();
            if !NODE_ADDRESS_TYPES.contains(&kind) {
                return Err(item.error(
                    &path,
                    format!(
                        "`{kind}` is not a Node address type{}",
                        suggest(kind, NODE_ADDRESS_TYPES)
                    ),
                ));
            }
            if address_types.iter().any(|a| a == kind) {
                return Err(item.error(&path, format!("`{kind}` is listed twice")));
            }
            address_types.push(kind.to_string());
        }
        if address_types.is_empty() {
            return Err(v.error(
                &table.key_path("address_types"),
                "name at least one Node address type, like [ExternalIP, InternalIP]",
            ));
        }
    }
    Ok(PublishStatus::Nodes {
        selector,
        address_types,
    })
}

/// A DNS name: dot-separated labels of letters, digits and `-`.
fn host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}
