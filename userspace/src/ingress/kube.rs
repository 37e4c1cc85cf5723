//! The Kubernetes source: Ingresses, TLS Secrets and (when asked for)
//! EndpointSlices, listed and then watched through the API server with
//! kube-runtime's watcher. The watcher relists on its own when a watch ends
//! or the server answers `410 Gone`, and its backoff
//! ([`super::api_client`]) spaces out reconnects;
//! on top of that every `resync` the watches are started afresh, so a missed
//! event cannot last. Objects are only handed on once every watch has listed
//! once, so a half-listed cluster (Ingresses without their Secrets) is never
//! served.
//!
//! Credentials come from the in-cluster service account, or from a kubeconfig
//! named in the config file; never from environment variables (only the
//! in-cluster discovery variables `KUBERNETES_SERVICE_HOST/PORT` are read).
use std::{collections::BTreeMap, pin::Pin, sync::Arc};

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::{
    core::v1::Secret,
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher,
    Api, Client,
};
use tokio::sync::watch;

use super::{
    api_client::{ca_source, client, retried, watch_failure},
    gateway::{self, Gateway, GatewayClass, HttpRoute, ReferenceGrant},
    key_of,
    metrics::IngressMetrics,
    publish,
    traefik::{TraefikMiddleware, API_VERSIONS},
    ObjectKey, Objects,
};
use crate::proxy::{IngressConfig, KubernetesConfig, PublishStatus};

/// What the Kubernetes source holds now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KubeState {
    /// Every watched object, once each watch has listed; empty before.
    pub objects: Objects,
    /// Why the source is not (fully) working right now.
    pub problems: Vec<String>,
    /// Every watch has listed at least once.
    pub synced: bool,
}

/// Starts the watches; the task ends when the receiver is dropped. With
/// `gateway` (the whole Ingress section, when `gateway_api` is on) the
/// Gateway API kinds are watched too and their status is written back.
/// The addresses `config.publish_status` names are written into the
/// Ingresses of `class`.
pub fn spawn(
    config: KubernetesConfig,
    endpoint_slices: bool,
    gateway: Option<IngressConfig>,
    class: String,
    metrics: Arc<IngressMetrics>,
) -> (watch::Receiver<KubeState>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(KubeState::default());
    let task = tokio::spawn(async move {
        let client = loop {
            match client(&config).await {
                Ok(client) => break client,
                Err(e) => {
                    let problem = format!("cannot reach the Kubernetes API: {e:#}");
                    tracing::error!("{problem}; trying again in 5s");
                    tx.send_modify(|s| s.problems = vec![problem]);
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        };
        let mut watches = Watches::new(&config, endpoint_slices, gateway.is_some());
        // Gateway API status: its own task, ended with this one.
        let _status_writer = gateway.map(|section| {
            let task = tokio::spawn(gateway::status::write_loop(
                client.clone(),
                tx.subscribe(),
                section,
            ));
            AbortOnDrop(task)
        });
        // Ingress status: likewise.
        let _publisher = (config.publish_status != PublishStatus::Off).then(|| {
            AbortOnDrop(tokio::spawn(publish::publish_loop(
                client.clone(),
                tx.subscribe(),
                class,
                config.publish_status.clone(),
            )))
        });
        loop {
            tokio::select! {
                _ = watches.run(&client, &tx, &metrics) => {}
                _ = tx.closed() => return,
            }
            tracing::info!("Kubernetes resync: listing every watched object again");
        }
    });
    (rx, task)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One watch: a kind in one namespace (or all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ingress,
    Secret,
    /// Secrets that may hold basic-auth users (not TLS ones).
    AuthSecret,
    EndpointSlice,
    /// Traefik's Middleware, in `traefik::API_VERSIONS[i]`.
    Middleware(usize),
    /// Cluster-wide: one watch whatever the namespaces.
    IngressClass,
    GatewayClass,
    Gateway,
    HttpRoute,
    ReferenceGrant,
}

enum Change {
    Ingress(watcher::Event<Ingress>),
    Secret(watcher::Event<Secret>),
    AuthSecret(watcher::Event<Secret>),
    Slice(watcher::Event<EndpointSlice>),
    Middleware(usize, watcher::Event<DynamicObject>),
    IngressClass(watcher::Event<IngressClass>),
    GatewayClass(watcher::Event<GatewayClass>),
    Gateway(watcher::Event<Gateway>),
    HttpRoute(watcher::Event<HttpRoute>),
    ReferenceGrant(watcher::Event<ReferenceGrant>),
}

impl Change {
    /// The watcher's announcement that it is about to list; it comes before
    /// the list request, so it says nothing about whether the watch works.
    fn is_init(&self) -> bool {
        use watcher::Event::Init;
        matches!(
            self,
            Change::Ingress(Init)
                | Change::Secret(Init)
                | Change::AuthSecret(Init)
                | Change::Slice(Init)
                | Change::Middleware(_, Init)
                | Change::IngressClass(Init)
                | Change::GatewayClass(Init)
                | Change::Gateway(Init)
                | Change::HttpRoute(Init)
                | Change::ReferenceGrant(Init)
        )
    }
}

type Changes = Pin<Box<dyn Stream<Item = (usize, Result<Change, watcher::Error>)> + Send>>;

struct Watches {
    /// `None` = all namespaces.
    scopes: Vec<Option<String>>,
    kinds: Vec<Kind>,
    /// Kinds without a namespace (GatewayClass): one watch, whatever the
    /// scopes.
    cluster_kinds: Vec<Kind>,
    resync: std::time::Duration,
    /// Named when the API server's certificate is refused.
    ca_source: String,
}

/// A watch's objects while it lists, and whether it has listed.
#[derive(Default)]
struct Progress {
    listing: Option<Objects>,
    listed: bool,
    error: Option<String>,
}

impl Watches {
    fn new(config: &KubernetesConfig, endpoint_slices: bool, gateway_api: bool) -> Self {
        let scopes = if config.namespaces.is_empty() {
            vec![None]
        } else {
            config.namespaces.iter().cloned().map(Some).collect()
        };
        let mut kinds = vec![Kind::Ingress, Kind::Secret, Kind::AuthSecret];
        if endpoint_slices {
            kinds.push(Kind::EndpointSlice);
        }
        kinds.extend((0..API_VERSIONS.len()).map(Kind::Middleware));
        kinds.push(Kind::IngressClass);
        if gateway_api {
            kinds.extend([Kind::Gateway, Kind::HttpRoute, Kind::ReferenceGrant]);
        }
        Watches {
            scopes,
            kinds,
            cluster_kinds: if gateway_api {
                vec![Kind::GatewayClass]
            } else {
                Vec::new()
            },
            resync: config.resync,
            ca_source: ca_source(config),
        }
    }

    /// Watches until the next resync.
    async fn run(
        &mut self,
        client: &Client,
        tx: &watch::Sender<KubeState>,
        metrics: &IngressMetrics,
    ) {
        let mut streams: Vec<Changes> = Vec::new();
        let mut ids: Vec<(Kind, Option<String>)> = Vec::new();
        for (s, scope) in self.scopes.iter().enumerate() {
            for kind in &self.kinds {
                let scope = match kind {
                    Kind::IngressClass if s > 0 => continue,
                    Kind::IngressClass => &None,
                    _ => scope,
                };
                let id = ids.len();
                ids.push((*kind, scope.clone()));
                streams.push(stream(client, *kind, scope.as_deref(), id));
            }
        }
        for kind in &self.cluster_kinds {
            let id = ids.len();
            ids.push((*kind, None));
            streams.push(stream(client, *kind, None, id));
        }
        let mut progress: Vec<Progress> = ids.iter().map(|_| Progress::default()).collect();
        let mut objects = tx.borrow().objects.clone();
        let mut changes = futures_util::stream::select_all(streams);
        let deadline = tokio::time::sleep(self.resync);
        tokio::pin!(deadline);
        loop {
            let (id, change) = tokio::select! {
                next = changes.next() => match next {
                    Some(next) => next,
                    None => return,
                },
                _ = &mut deadline => return,
            };
            let (kind, scope) = &ids[id];
            let state = &mut progress[id];
            let publish = match change {
                // A Middleware group whose CRD is not installed holds no
                // objects; it must not keep the source from being ready.
                Err(e) if matches!(kind, Kind::Middleware(_)) && not_found(&e) => {
                    let first = !state.listed || state.error.is_some();
                    if first {
                        tracing::info!(
                            "{kind:?}: the API server does not serve this group (CRD not \
                             installed); taken as empty"
                        );
                    }
                    state.listed = true;
                    state.error = None;
                    if let Kind::Middleware(group) = kind {
                        objects.middlewares.retain(|key, m| {
                            m.api_version != API_VERSIONS[*group]
                                || scope.as_ref().is_some_and(|ns| &key.0 != ns)
                        });
                    }
                    first
                }
                Err(e) => {
                    metrics.watch_reconnects.inc();
                    let cause = watch_failure(&e, &self.ca_source);
                    let message = format!(
                        "the {kind:?} watch{} failed and is retried: {cause}",
                        scope
                            .as_ref()
                            .map(|s| format!(" in {s}"))
                            .unwrap_or_default()
                    );
                    tracing::warn!("{message}");
                    state.error = Some(message);
                    true
                }
                Ok(change) => {
                    let cleared = !change.is_init() && state.error.take().is_some();
                    apply(change, state, &mut objects, scope.as_deref(), metrics) || cleared
                }
            };
            if publish {
                let synced = progress.iter().all(|p| p.listed);
                let problems: Vec<String> =
                    progress.iter().filter_map(|p| p.error.clone()).collect();
                tx.send_modify(|s| {
                    s.synced |= synced;
                    s.problems = problems;
                    if s.synced {
                        s.objects = objects.clone();
                    }
                });
            }
        }
    }
}

fn stream(client: &Client, kind: Kind, namespace: Option<&str>, id: usize) -> Changes {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let config = watcher::Config::default();
    match kind {
        Kind::Ingress => retried(watcher(api::<Ingress>(client, namespace), config))
            .map(move |e| (id, e.map(Change::Ingress)))
            .boxed(),
        // Only TLS Secrets here: the proxy has no business seeing most
        // others.
        Kind::Secret => retried(watcher(
            api::<Secret>(client, namespace),
            config.fields("type=kubernetes.io/tls"),
        ))
        .map(move |e| (id, e.map(Change::Secret)))
        .boxed(),
        // basicAuth users: only the kinds of Secret Traefik reads them from
        // are kept (see `auth_secret`).
        Kind::AuthSecret => retried(watcher(
            api::<Secret>(client, namespace),
            config.fields("type!=kubernetes.io/tls,type!=kubernetes.io/service-account-token"),
        ))
        .map(move |e| (id, e.map(Change::AuthSecret)))
        .boxed(),
        Kind::EndpointSlice => retried(watcher(api::<EndpointSlice>(client, namespace), config))
            .map(move |e| (id, e.map(Change::Slice)))
            .boxed(),
        Kind::IngressClass => retried(watcher(Api::<IngressClass>::all(client.clone()), config))
            .map(move |e| (id, e.map(Change::IngressClass)))
            .boxed(),
        Kind::Middleware(index) => {
            let (group, version) = API_VERSIONS[index]
                .split_once('/')
                .unwrap_or((API_VERSIONS[index], "v1alpha1"));
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, "Middleware"),
                "middlewares",
            );
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            retried(watcher(api, config))
                .map(move |e| (id, e.map(|e| Change::Middleware(index, e))))
                .boxed()
        }
        Kind::GatewayClass => retried(watcher(Api::<GatewayClass>::all(client.clone()), config))
            .map(move |e| (id, e.map(Change::GatewayClass)))
            .boxed(),
        Kind::Gateway => retried(watcher(api::<Gateway>(client, namespace), config))
            .map(move |e| (id, e.map(Change::Gateway)))
            .boxed(),
        Kind::HttpRoute => retried(watcher(api::<HttpRoute>(client, namespace), config))
            .map(move |e| (id, e.map(Change::HttpRoute)))
            .boxed(),
        Kind::ReferenceGrant => retried(watcher(api::<ReferenceGrant>(client, namespace), config))
            .map(move |e| (id, e.map(Change::ReferenceGrant)))
            .boxed(),
    }
}

fn not_found(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

/// A Secret Traefik could read basic-auth users from: `kubernetes.io/
/// basic-auth`, or an Opaque one with exactly one key. Others are not kept.
fn auth_secret(secret: Secret) -> Option<Secret> {
    let keys = secret.data.as_ref().map_or(0, |d| d.len())
        + secret.string_data.as_ref().map_or(0, |d| d.len());
    match secret.type_.as_deref() {
        Some("kubernetes.io/basic-auth") => Some(secret),
        None | Some("Opaque") if keys == 1 => Some(secret),
        _ => None,
    }
}

fn middleware(object: DynamicObject) -> Option<TraefikMiddleware> {
    let mut value = object.data;
    let types = object.types?;
    value["apiVersion"] = types.api_version.into();
    value["kind"] = types.kind.into();
    value["metadata"] = serde_json::to_value(&object.metadata).ok()?;
    TraefikMiddleware::from_value(&value).map(|(_, m)| m)
}

/// Applies one event; returns whether the published objects may change.
fn apply(
    change: Change,
    state: &mut Progress,
    objects: &mut Objects,
    scope: Option<&str>,
    metrics: &IngressMetrics,
) -> bool {
    let on = Target {
        state,
        objects,
        scope,
        metrics,
    };
    match change {
        Change::Ingress(event) => on.apply(event, |o| &mut o.ingresses, Some, |_| true),
        Change::Secret(event) => on.apply(event, |o| &mut o.secrets, Some, |_| true),
        Change::AuthSecret(event) => {
            on.apply(event, |o| &mut o.auth_secrets, auth_secret, |_| true)
        }
        Change::Slice(event) => on.apply(event, |o| &mut o.endpoint_slices, Some, |_| true),
        Change::IngressClass(event) => on.apply(event, |o| &mut o.ingress_classes, Some, |_| true),
        // Both groups share one map; a list replaces only its own group's.
        Change::Middleware(group, event) => on.apply(
            event,
            |o| &mut o.middlewares,
            middleware,
            move |m| m.api_version == API_VERSIONS[group],
        ),
        Change::GatewayClass(event) => on.apply(event, |o| &mut o.gateway.classes, Some, |_| true),
        Change::Gateway(event) => on.apply(event, |o| &mut o.gateway.gateways, Some, |_| true),
        Change::HttpRoute(event) => on.apply(event, |o| &mut o.gateway.http_routes, Some, |_| true),
        Change::ReferenceGrant(event) => {
            on.apply(event, |o| &mut o.gateway.reference_grants, Some, |_| true)
        }
    }
}

struct Target<'a> {
    state: &'a mut Progress,
    objects: &'a mut Objects,
    scope: Option<&'a str>,
    metrics: &'a IngressMetrics,
}

impl Target<'_> {
    /// `keep` turns a watched object into what is held (`None`: not held);
    /// `owned` says which held objects a fresh list of this watch replaces.
    fn apply<K: kube::Resource, V>(
        self,
        event: watcher::Event<K>,
        map: fn(&mut Objects) -> &mut BTreeMap<ObjectKey, V>,
        keep: fn(K) -> Option<V>,
        owned: impl Fn(&V) -> bool,
    ) -> bool {
        let Target {
            state,
            objects,
            scope,
            metrics,
        } = self;
        match event {
            watcher::Event::Init => {
                metrics.watch_relists.inc();
                state.listing = Some(Objects::default());
                false
            }
            watcher::Event::InitApply(object) => {
                let key = key_of(object.meta());
                if let (Some(listing), Some(value)) = (state.listing.as_mut(), keep(object)) {
                    map(listing).insert(key, value);
                }
                false
            }
            watcher::Event::InitDone => {
                let listed = state
                    .listing
                    .take()
                    .map(|mut l| std::mem::take(map(&mut l)));
                let target = map(objects);
                target.retain(|key, v| scope.is_some_and(|ns| key.0 != ns) || !owned(v));
                target.extend(listed.unwrap_or_default());
                state.listed = true;
                true
            }
            watcher::Event::Apply(object) => {
                let key = key_of(object.meta());
                match keep(object) {
                    Some(value) => map(objects).insert(key, value),
                    // It changed into something not held.
                    None => map(objects).remove(&key),
                };
                true
            }
            watcher::Event::Delete(object) => {
                map(objects).remove(&key_of(object.meta()));
                true
            }
        }
    }
}
