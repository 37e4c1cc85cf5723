//! Publishing where the Ingresses of our class are reached: the addresses
//! in `.status.loadBalancer.ingress` that `kubectl get ingress` shows and
//! that tools such as external-dns read (`proxy.ingress.kubernetes.
//! publish_status`).
//!
//! xdpgate runs as a DaemonSet on the host network, so an Ingress is reached
//! on the addresses of the nodes that run it, not on one Service's. Each
//! daemon knows only its own node, and a daemon that published just its own
//! address would overwrite the others' in turn, forever. So every daemon
//! publishes the same list, computed from shared facts: by default the
//! addresses of every Ready Node whose labels match a selector (set it to
//! the DaemonSet's nodeSelector), or a fixed list from the config. Equal
//! inputs give equal lists, sorted, and a list already in place is not
//! written again: the daemons agree instead of taking turns.
//!
//! [`patches`] and [`node_addresses`] are pure; [`publish_loop`] follows the
//! Kubernetes source (and, for `nodes`, a watch of the Node objects) and
//! writes merge patches of the `ingresses/status` subresource.
use std::{collections::BTreeMap, net::IpAddr};

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::{core::v1::Node, networking::v1::Ingress};
use kube::{
    api::{Patch, PatchParams},
    runtime::watcher,
    Api, Client,
};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{api_client::retried, kube::KubeState, translate::is_ours, ObjectKey, Objects};
use crate::proxy::PublishStatus;

/// What a Node contributes: its labels, whether it is Ready, its addresses
/// by type (in the Node's order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub addresses: Vec<(String, String)>,
}

impl NodeFacts {
    pub fn of(node: &Node) -> NodeFacts {
        let status = node.status.as_ref();
        NodeFacts {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            addresses: status
                .and_then(|s| s.addresses.as_ref())
                .map(|a| {
                    a.iter()
                        .map(|a| (a.type_.clone(), a.address.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// The addresses to publish for `nodes`: per Ready Node whose labels hold
/// every pair of `selector`, its addresses of the first type in
/// `address_types` it has. Sorted and without repeats, so that every
/// daemon computes the same list.
pub fn node_addresses(
    nodes: &BTreeMap<String, NodeFacts>,
    selector: &BTreeMap<String, String>,
    address_types: &[String],
) -> Vec<String> {
    let mut addresses: Vec<String> = nodes
        .values()
        .filter(|n| n.ready)
        .filter(|n| selector.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
        .flat_map(|n| {
            let wanted = address_types
                .iter()
                .find(|t| n.addresses.iter().any(|(kind, _)| kind == *t));
            n.addresses
                .iter()
                .filter(move |(kind, _)| Some(kind) == wanted)
                .map(|(_, address)| address.clone())
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// `.status.loadBalancer.ingress`: `{ip}` for an address, `{hostname}` for
/// a name.
pub fn load_balancer_entries(addresses: &[String]) -> Value {
    Value::Array(
        addresses
            .iter()
            .map(|a| match a.parse::<IpAddr>() {
                Ok(_) => json!({ "ip": a }),
                Err(_) => json!({ "hostname": a }),
            })
            .collect(),
    )
}

/// The Ingresses of our class (`class`, or an IngressClass of our
/// controller) whose published addresses differ from `entries`, with the
/// merge patch each needs. Other Ingresses are never touched.
pub fn patches(objects: &Objects, class: &str, entries: &Value) -> Vec<(ObjectKey, Value)> {
    objects
        .ingresses
        .iter()
        .filter(|(_, ingress)| is_ours(ingress, class, objects))
        .filter(|(_, ingress)| published(ingress).as_ref() != Some(entries))
        .map(|(key, _)| {
            let patch = json!({ "status": { "loadBalancer": { "ingress": entries } } });
            (key.clone(), patch)
        })
        .collect()
}

/// What the Ingress publishes now, as JSON (an entry's fields that are
/// unset are left out, as in ours).
fn published(ingress: &Ingress) -> Option<Value> {
    let entries = ingress
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?;
    serde_json::to_value(entries).ok()
}

type NodeEvents =
    std::pin::Pin<Box<dyn Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Send>>;

/// Follows the Kubernetes source and writes the published addresses into
/// our Ingresses until the source ends. A failed write is logged and tried
/// again on the next change or after 10 s; a failing Node watch is logged
/// and publishes nothing (the routes do not depend on it).
pub async fn publish_loop(
    client: Client,
    mut state: watch::Receiver<KubeState>,
    class: String,
    publish: PublishStatus,
) {
    let mut nodes: NodeEvents = match &publish {
        PublishStatus::Nodes { .. } => retried(watcher(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
        ))
        .boxed(),
        _ => futures_util::stream::pending().boxed(),
    };
    let mut known = KnownNodes::default();
    let mut writer = StatusWriter {
        client,
        written: BTreeMap::new(),
    };
    let mut retry = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        let addresses = match &publish {
            PublishStatus::Off => return,
            PublishStatus::Addresses(list) => Some(list.clone()),
            PublishStatus::Nodes {
                selector,
                address_types,
            } => known
                .listed
                .then(|| node_addresses(&known.facts, selector, address_types)),
        };
        let objects = {
            let current = state.borrow_and_update();
            current.synced.then(|| current.objects.clone())
        };
        // Nothing to publish yet (or no Node matches): leave the statuses
        // as they are rather than blank every Ingress.
        if let (Some(objects), Some(addresses)) = (objects, addresses.filter(|a| !a.is_empty())) {
            writer.publish(&objects, &class, &addresses).await;
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            event = nodes.next() => match event {
                Some(event) => known.follow(event),
                None => return,
            },
            _ = retry.tick() => writer.written.clear(),
        }
    }
}

/// Writes the statuses, remembering what it wrote so that a write the
/// watch has not reported back yet is not repeated (until the retry tick
/// forgets it).
struct StatusWriter {
    client: Client,
    written: BTreeMap<ObjectKey, Value>,
}

impl StatusWriter {
    async fn publish(&mut self, objects: &Objects, class: &str, addresses: &[String]) {
        let entries = load_balancer_entries(addresses);
        for (key, patch) in patches(objects, class, &entries) {
            if self.written.get(&key) == Some(&patch) {
                continue;
            }
            let api = Api::<Ingress>::namespaced(self.client.clone(), &key.0);
            match api
                .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        "published {} in the status of Ingress {}/{}",
                        addresses.join(", "),
                        key.0,
                        key.1
                    );
                    self.written.insert(key, patch);
                }
                Err(e) => {
                    self.written.remove(&key);
                    tracing::warn!(
                        "cannot write the status of Ingress {}/{}: {e}; trying again",
                        key.0,
                        key.1
                    );
                }
            }
        }
    }
}

/// The Nodes as the watch delivered them.
#[derive(Default)]
struct KnownNodes {
    facts: BTreeMap<String, NodeFacts>,
    /// A list in progress.
    listing: Option<BTreeMap<String, NodeFacts>>,
    /// Listed at least once: until then nothing is published.
    listed: bool,
    /// The watch is failing (logged once per failure).
    failing: bool,
}

impl KnownNodes {
    fn follow(&mut self, event: Result<watcher::Event<Node>, watcher::Error>) {
        let name = |node: &Node| node.metadata.name.clone().unwrap_or_default();
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if !self.failing {
                    tracing::warn!(
                        "the Node watch for publish_status failed and is retried: {e}; \
                         no Ingress status is written until it works"
                    );
                }
                self.failing = true;
                return;
            }
        };
        // `Init` comes before the list request: no sign that it works.
        self.failing &= matches!(event, watcher::Event::Init);
        match event {
            watcher::Event::Init => self.listing = Some(BTreeMap::new()),
            watcher::Event::InitApply(node) => {
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(name(&node), NodeFacts::of(&node));
                }
            }
            watcher::Event::InitDone => {
                self.facts = self.listing.take().unwrap_or_default();
                self.listed = true;
            }
            watcher::Event::Apply(node) => {
                self.facts.insert(name(&node), NodeFacts::of(&node));
            }
            watcher::Event::Delete(node) => {
                self.facts.remove(&name(&node));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: Value, ready: &str, addresses: Value) -> NodeFacts {
        let node: Node = serde_json::from_value(json!({
            "metadata": { "name": "n", "labels": labels },
            "status": {
                "conditions": [{ "type": "Ready", "status": ready }],
                "addresses": addresses
            }
        }))
        .unwrap();
        NodeFacts::of(&node)
    }

    #[test]
    fn the_published_nodes_are_the_ready_selected_ones_by_preferred_address_type() {
        let edge = json!({ "xdpgate.io/edge": "true" });
        let nodes: BTreeMap<String, NodeFacts> = [
            (
                "b",
                node(
                    edge.clone(),
                    "True",
                    json!([{ "type": "InternalIP", "address": "10.0.0.2" },
                           { "type": "ExternalIP", "address": "203.0.113.2" }]),
                ),
            ),
            (
                "a",
                node(
                    edge.clone(),
                    "True",
                    json!([{ "type": "InternalIP", "address": "10.0.0.1" }]),
                ),
            ),
            (
                "down",
                node(
                    edge.clone(),
                    "False",
                    json!([{ "type": "ExternalIP", "address": "203.0.113.9" }]),
                ),
            ),
            (
                "inner",
                node(
                    json!({}),
                    "True",
                    json!([{ "type": "ExternalIP", "address": "203.0.113.8" }]),
                ),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let types = ["ExternalIP".to_string(), "InternalIP".to_string()];
        let selector: BTreeMap<String, String> =
            [("xdpgate.io/edge".to_string(), "true".to_string())].into();
        assert_eq!(
            node_addresses(&nodes, &selector, &types),
            ["10.0.0.1", "203.0.113.2"],
            "ExternalIP where a node has one, else InternalIP; not the NotReady \
             node nor the unselected one; sorted"
        );
        assert_eq!(
            node_addresses(&nodes, &BTreeMap::new(), &types),
            ["10.0.0.1", "203.0.113.2", "203.0.113.8"]
        );
        // Every daemon sees the same Nodes in whatever order: the same list.
        let reversed: BTreeMap<String, NodeFacts> = nodes
            .iter()
            .rev()
            .map(|(k, v)| (format!("z{k}"), v.clone()))
            .collect();
        assert_eq!(
            node_addresses(&reversed, &selector, &types),
            node_addresses(&nodes, &selector, &types)
        );
    }

    fn ingress(ns: &str, name: &str, class: &str, published: Option<Value>) -> Ingress {
        let mut value = json!({
            "metadata": { "name": name, "namespace": ns },
            "spec": { "ingressClassName": class }
        });
        if let Some(entries) = published {
            value["status"] = json!({ "loadBalancer": { "ingress": entries } });
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_our_ingresses_whose_status_differs_are_patched() {
        let entries =
            load_balancer_entries(&["203.0.113.2".to_string(), "lb.example.com".to_string()]);
        assert_eq!(
            entries,
            json!([{ "ip": "203.0.113.2" }, { "hostname": "lb.example.com" }])
        );
        let mut objects = Objects::default();
        for ingress in [
            ingress("honeydue", "api", "xdpgate", None),
            ingress("honeydue", "done", "xdpgate", Some(entries.clone())),
            ingress(
                "honeydue",
                "stale",
                "xdpgate",
                Some(json!([{ "ip": "198.51.100.1" }])),
            ),
            ingress("other", "nginx", "nginx", None),
        ] {
            objects
                .ingresses
                .insert(super::super::key_of(&ingress.metadata), ingress);
        }
        let patched: Vec<(String, String)> = patches(&objects, "xdpgate", &entries)
            .into_iter()
            .map(|(key, patch)| {
                assert_eq!(patch["status"]["loadBalancer"]["ingress"], entries);
                key
            })
            .collect();
        assert_eq!(
            patched,
            [
                ("honeydue".to_string(), "api".to_string()),
                ("honeydue".to_string(), "stale".to_string())
            ]
        );
    }
}
