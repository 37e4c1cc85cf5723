//! The model test: random sequences of what the daemon hears (config edits
//! good and bad, set files changing, Cloudflare refreshes accepted and
//! refused, Ingress snapshots complete and incomplete, SIGHUP, interfaces
//! coming and going) driven through the real [`Controller`] and
//! [`Reconciler`] against fakes of the sets subsystem, the kernel and the
//! proxy. After every sequence the fakes hold `desired(last valid inputs)`,
//! no route of an incomplete Ingress snapshot ever reached the proxy, and
//! one more reconcile writes nothing.
use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use ipnet::IpNet;
use proptest::prelude::*;

use super::{
    controller::Controller,
    desired::{desired, IngressInput, Inputs},
    reconcile::{AppliedProxy, Reconciler},
    shared::Shared,
    writers::{KernelWriter, ProxyWriter, SetsWriter},
};
use crate::{
    config,
    ingress::{files, source::Snapshot, translate::SecretCert},
    policy::{self, CompiledPolicy},
    proxy::ProxyConfig,
    sets::{LoadedSet, SetSpec, SetsSnapshot, SourceSpec},
    status::{DaemonStatus, InterfaceStatus, SetStatus},
};

const MEMBERS_FILE: &str = "/model/members.txt";
const INTERFACES: [&str; 2] = ["eth0", "eth1"];
/// A host the fake proxy refuses, as the real one refuses a route whose
/// certificate does not load.
const REFUSED_HOST: &str = "refused.example";

/// What the outside world holds: set files, Cloudflare's list, interfaces.
#[derive(Default)]
struct World {
    files: BTreeMap<PathBuf, Vec<IpNet>>,
    cloudflare: Vec<IpNet>,
    present: BTreeMap<String, u32>,
    next_index: u32,
}

type Shared_<T> = Arc<Mutex<T>>;

struct FakeSets {
    world: Shared_<World>,
    specs: Mutex<Vec<SetSpec>>,
}

impl SetsWriter for FakeSets {
    fn reconfigure(&self, specs: Vec<SetSpec>) -> impl Future<Output = ()> {
        *self.specs.lock().unwrap() = specs;
        std::future::ready(())
    }

    fn snapshot(&self) -> Arc<SetsSnapshot> {
        let world = self.world.lock().unwrap();
        let mut snapshot = SetsSnapshot::default();
        for spec in self.specs.lock().unwrap().iter() {
            let mut prefixes: Vec<IpNet> = Vec::new();
            for source in &spec.sources {
                match source {
                    SourceSpec::Inline(nets) => prefixes.extend(nets),
                    SourceSpec::File(path) => {
                        prefixes.extend(world.files.get(path).into_iter().flatten())
                    }
                    SourceSpec::Cloudflare(_) => prefixes.extend(&world.cloudflare),
                }
            }
            prefixes.sort();
            prefixes.dedup();
            let status = SetStatus {
                name: spec.name.clone(),
                size: prefixes.len(),
                loaded: true,
                sources: Vec::new(),
            };
            snapshot
                .sets
                .insert(spec.name.clone(), LoadedSet { prefixes, status });
        }
        Arc::new(snapshot)
    }
}

#[derive(Default)]
struct KernelState {
    policy: Option<CompiledPolicy>,
    attached: BTreeMap<String, u32>,
    writes: usize,
}

struct FakeKernel {
    world: Shared_<World>,
    state: Shared_<KernelState>,
}

impl KernelWriter for FakeKernel {
    fn armed(&self) -> bool {
        self.state.lock().unwrap().policy.is_some()
    }

    fn apply(&mut self, policy: &CompiledPolicy) -> Result<u64, String> {
        let mut state = self.state.lock().unwrap();
        state.policy = Some(policy.clone());
        state.writes += 1;
        Ok(state.writes as u64)
    }

    fn attach(
        &mut self,
        interface: &str,
        _choice: crate::filter::XdpModeChoice,
    ) -> Result<InterfaceStatus, String> {
        let index = self.world.lock().unwrap().present.get(interface).copied();
        let mut state = self.state.lock().unwrap();
        state.writes += 1;
        let index = index.ok_or_else(|| format!("no interface {interface}"))?;
        state.attached.insert(interface.to_string(), index);
        Ok(InterfaceStatus {
            name: interface.to_string(),
            mode: "driver".into(),
            how: "attached".into(),
            wanted_mode: None,
        })
    }

    fn release_unlisted(&mut self, keep: &[String]) -> Result<Vec<String>, String> {
        let mut state = self.state.lock().unwrap();
        state.writes += 1;
        let gone: Vec<String> = state
            .attached
            .keys()
            .filter(|name| !keep.contains(name))
            .cloned()
            .collect();
        state.attached.retain(|name, _| keep.contains(name));
        Ok(gone)
    }

    fn present(&self, names: &[String]) -> BTreeMap<String, u32> {
        let world = self.world.lock().unwrap();
        names
            .iter()
            .filter_map(|n| Some((n.clone(), *world.present.get(n)?)))
            .collect()
    }
}

#[derive(Default)]
struct ProxyState {
    config: Option<ProxyConfig>,
    certs: Vec<SecretCert>,
    trusted: Vec<IpNet>,
    sets: BTreeMap<String, Vec<IpNet>>,
    writes: usize,
    /// Every configuration ever committed.
    history: Vec<ProxyConfig>,
}

struct FakeProxy(Shared_<ProxyState>);

impl ProxyWriter for FakeProxy {
    type Prepared = ProxyConfig;

    fn write_certs(&mut self, certs: &[SecretCert]) -> Result<bool, String> {
        let mut state = self.0.lock().unwrap();
        let changed = state.certs != certs;
        if changed {
            state.certs = certs.to_vec();
            state.writes += 1;
        }
        Ok(changed)
    }

    fn prepare(&self, config: &ProxyConfig) -> Result<ProxyConfig, String> {
        match config
            .routes
            .iter()
            .find(|r| r.host.as_deref() == Some(REFUSED_HOST))
        {
            Some(_) => Err(format!("the certificate for {REFUSED_HOST} does not load")),
            None => Ok(config.clone()),
        }
    }

    fn commit(&self, prepared: ProxyConfig, _certs_changed: bool) {
        let mut state = self.0.lock().unwrap();
        state.history.push(prepared.clone());
        state.config = Some(prepared);
        state.writes += 1;
    }

    fn set_trusted(&self, trusted: &[IpNet]) {
        let mut state = self.0.lock().unwrap();
        state.trusted = trusted.to_vec();
        state.writes += 1;
    }

    fn set_sets(&self, sets: &BTreeMap<String, Vec<IpNet>>) {
        let mut state = self.0.lock().unwrap();
        state.sets = sets.clone();
        state.writes += 1;
    }

    fn housekeep(&self) {}
}

/// One config file the model may write.
#[derive(Clone, Debug)]
struct ConfigShape {
    /// Bit i: INTERFACES[i] is configured (none: eth0).
    interfaces: u8,
    port: u16,
    /// `members`, `cloudflare`, or a set that does not exist.
    from: &'static str,
    members_file: bool,
    route_host: &'static str,
    trusted: bool,
    ingress: bool,
}

impl ConfigShape {
    fn interfaces(&self) -> Vec<&'static str> {
        let picked: Vec<_> = (0..INTERFACES.len())
            .filter(|i| self.interfaces & (1 << i) != 0)
            .map(|i| INTERFACES[i])
            .collect();
        if picked.is_empty() {
            vec![INTERFACES[0]]
        } else {
            picked
        }
    }

    fn text(&self) -> String {
        let members_file = if self.members_file {
            format!(", file: {MEMBERS_FILE}")
        } else {
            String::new()
        };
        let trusted = if self.trusted { "[cloudflare]" } else { "[]" };
        let ingress = if self.ingress {
            "  ingress: { files: /model/ingress }\n"
        } else {
            ""
        };
        format!(
            "filter:\n  interfaces: [{}]\n  sets:\n    members: {{ cidrs: [198.51.100.0/29]{members_file} }}\n    \
             cloudflare: {{ cloudflare: {{}} }}\n  allow:\n    - {{ tcp: [{}], from: [{}] }}\n\
             proxy:\n  trusted: {trusted}\n  entrypoints:\n    web: {{ listen: \"127.0.0.1:18080\" }}\n  \
             routes:\n    - {{ host: {}, path: /, service: \"backend:8000\" }}\n{ingress}",
            self.interfaces().join(", "),
            self.port,
            self.from,
            self.route_host,
        )
    }
}

#[derive(Clone, Debug)]
enum Event {
    Config(ConfigShape),
    Unparsable,
    SetFile(usize),
    Cloudflare { accepted: bool, list: usize },
    Ingress { complete: bool, hosts: u8 },
    Hangup,
    InterfaceUp(usize),
    InterfaceDown(usize),
}

fn net(s: &str) -> IpNet {
    s.parse().expect("a test prefix")
}

fn lists() -> [Vec<IpNet>; 3] {
    [
        vec![net("192.0.2.0/24")],
        vec![net("192.0.2.0/24"), net("2001:db8::/32")],
        vec![net("203.0.113.0/24"), net("10.9.0.0/16")],
    ]
}

const INGRESS_HOSTS: [&str; 3] = ["i1.example", "i2.example", REFUSED_HOST];

fn ingress_yaml(host: &str, name: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  ingressClassName: xdpgate\n  rules:\n    - host: {host}\n      http:\n        paths:\n          \
         - path: /\n            pathType: Prefix\n            backend: {{ service: {{ name: web, port: {{ number: 80 }} }} }}\n"
    )
}

fn snapshot(complete: bool, hosts: u8) -> Snapshot {
    let mut text = String::new();
    for (i, host) in INGRESS_HOSTS.iter().enumerate() {
        if hosts & (1 << i) != 0 {
            // An incomplete snapshot's routes are marked, to find them if
            // they ever reach the proxy.
            let host = if complete {
                host.to_string()
            } else {
                format!("partial-{host}")
            };
            text.push_str(&format!("---\n{}", ingress_yaml(&host, &format!("web{i}"))));
        }
    }
    Snapshot {
        objects: files::parse(&text).expect("the model's Ingress YAML parses"),
        problems: if complete {
            Vec::new()
        } else {
            vec!["the Kubernetes source has not listed every object yet".into()]
        },
        complete,
    }
}

fn shapes() -> impl Strategy<Value = ConfigShape> {
    (
        0u8..4,
        prop::sample::select(vec![22u16, 443, 8472]),
        prop::sample::select(vec!["members", "cloudflare", "membres"]),
        any::<bool>(),
        prop::sample::select(vec!["a.example", "b.example", REFUSED_HOST]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(interfaces, port, from, members_file, route_host, trusted, ingress)| ConfigShape {
                interfaces,
                port,
                from,
                members_file,
                route_host,
                trusted,
                ingress,
            },
        )
}

fn events() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => shapes().prop_map(Event::Config),
        1 => Just(Event::Unparsable),
        2 => (0usize..3).prop_map(Event::SetFile),
        2 => (any::<bool>(), 0usize..3).prop_map(|(accepted, list)| Event::Cloudflare { accepted, list }),
        3 => (any::<bool>(), 0u8..8).prop_map(|(complete, hosts)| Event::Ingress { complete, hosts }),
        1 => Just(Event::Hangup),
        2 => (0usize..2).prop_map(Event::InterfaceUp),
        2 => (0usize..2).prop_map(Event::InterfaceDown),
    ]
}

type Model = Controller<FakeSets, FakeKernel, FakeProxy>;

struct Harness {
    world: Shared_<World>,
    kernel: Shared_<KernelState>,
    proxy: Shared_<ProxyState>,
    controller: Model,
    /// The config file as last written.
    text: String,
    _state_dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let state_dir = tempfile::tempdir().expect("a temporary directory");
        let world = Arc::new(Mutex::new(World::default()));
        world.lock().unwrap().present.insert("eth0".into(), 1);
        world.lock().unwrap().next_index = 2;
        // As the real service starts from the embedded snapshot: Cloudflare's
        // set is never empty, and every list the model feeds it is not either.
        world.lock().unwrap().cloudflare = lists()[0].clone();
        let kernel = Arc::new(Mutex::new(KernelState::default()));
        let proxy = Arc::new(Mutex::new(ProxyState::default()));
        let first = ConfigShape {
            interfaces: 1,
            port: 443,
            from: "cloudflare",
            members_file: false,
            route_host: "a.example",
            trusted: true,
            ingress: true,
        };
        let text = first.text();
        let config = config::parse(&text, Path::new("model.yaml")).expect("the first config");
        let shared = Shared::new(DaemonStatus::default(), state_dir.path().into(), true);
        let sets = FakeSets {
            world: world.clone(),
            specs: Mutex::new(Vec::new()),
        };
        let fake_kernel = FakeKernel {
            world: world.clone(),
            state: kernel.clone(),
        };
        let inputs = Inputs {
            interfaces: config.filter.interfaces.clone(),
            config,
            present: BTreeMap::new(),
            sets: Arc::new(SetsSnapshot::default()),
            ingress: IngressInput::default(),
            tls_dir: state_dir.path().join("ingress-tls"),
        };
        let reconciler = Reconciler::new(sets, fake_kernel, shared.clone());
        let mut controller = Controller::new(inputs, reconciler, shared);
        let desired = controller.start().await.expect("the first reconcile");
        // As the daemon does: the proxy starts with what the first reconcile wanted.
        let want = desired.proxy.expect("the model runs a proxy");
        {
            let mut state = proxy.lock().unwrap();
            state.config = Some(want.config.clone());
            state.trusted = want.trusted.clone();
            state.sets = want.sets.clone();
        }
        controller
            .reconciler_mut()
            .adopt_proxy(FakeProxy(proxy.clone()), AppliedProxy::started_with(&want));
        Harness {
            world,
            kernel,
            proxy,
            controller,
            text,
            _state_dir: state_dir,
        }
    }

    async fn reload(&mut self) -> bool {
        let loaded = config::parse(&self.text, Path::new("model.yaml"))
            .map(|c| {
                let interfaces = c.filter.interfaces.clone();
                (c, interfaces)
            })
            .map_err(|e| e.to_string());
        self.controller.reload(loaded).await
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Config(shape) => {
                self.text = shape.text();
                self.reload().await;
            }
            Event::Unparsable => {
                self.text = "filter: [unclosed".into();
                self.reload().await;
            }
            Event::Hangup => {
                self.reload().await;
            }
            Event::SetFile(list) => {
                self.world
                    .lock()
                    .unwrap()
                    .files
                    .insert(MEMBERS_FILE.into(), lists()[list].clone());
                self.controller.sets_changed().await;
            }
            Event::Cloudflare { accepted, list } => {
                // A refused list changes the sets' status, not their contents.
                if accepted {
                    self.world.lock().unwrap().cloudflare = lists()[list].clone();
                }
                self.controller.sets_changed().await;
            }
            Event::Ingress { complete, hosts } => {
                self.controller
                    .ingress_changed(&snapshot(complete, hosts))
                    .await;
            }
            Event::InterfaceUp(i) => {
                {
                    let mut world = self.world.lock().unwrap();
                    if !world.present.contains_key(INTERFACES[i]) {
                        let index = world.next_index;
                        world.next_index += 1;
                        world.present.insert(INTERFACES[i].into(), index);
                    }
                }
                self.controller.tick().await;
            }
            Event::InterfaceDown(i) => {
                // The kernel takes the program off an interface that goes away.
                self.world.lock().unwrap().present.remove(INTERFACES[i]);
                self.kernel.lock().unwrap().attached.remove(INTERFACES[i]);
                self.controller.tick().await;
            }
        }
    }

    fn writes(&self) -> (usize, usize) {
        (
            self.kernel.lock().unwrap().writes,
            self.proxy.lock().unwrap().writes,
        )
    }

    /// The fakes hold exactly what the last valid inputs ask for.
    fn assert_converged(&self) {
        let want = desired(self.controller.inputs());
        let kernel = self.kernel.lock().unwrap();
        let compiled = policy::compile(&want.policy).expect("the model's policies compile");
        assert_eq!(
            kernel.policy.as_ref(),
            Some(&compiled),
            "the kernel's policy"
        );
        assert_eq!(kernel.attached, want.attach, "the interfaces filtered");
        let sets = self.controller.reconciler().sets().specs.lock().unwrap();
        assert_eq!(*sets, want.sets, "the sets subsystem's specs");
        let proxy = self.proxy.lock().unwrap();
        let want_proxy = want.proxy.expect("the model runs a proxy");
        assert_eq!(
            proxy.config.as_ref(),
            Some(&want_proxy.config),
            "the proxy's routes"
        );
        assert_eq!(
            proxy.trusted, want_proxy.trusted,
            "the proxy's trusted peers"
        );
        assert_eq!(proxy.sets, want_proxy.sets, "the proxy's sets");
        assert_eq!(proxy.certs, want_proxy.certs, "the Ingress certificates");
        for config in &proxy.history {
            assert!(
                !config
                    .routes
                    .iter()
                    .any(|r| r.host.as_deref().is_some_and(|h| h.starts_with("partial-"))),
                "a route from an incomplete Ingress snapshot reached the proxy: {:?}",
                config.routes
            );
        }
    }
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_sequence_converges_to_the_desired_state_and_a_second_reconcile_writes_nothing(
        events in prop::collection::vec(events(), 1..40)
    ) {
        block_on(async {
            let mut harness = Harness::start().await;
            for event in events {
                harness.handle(event).await;
            }
            harness.assert_converged();
            let before = harness.writes();
            let mut inputs = harness.controller.inputs().clone();
            harness
                .controller
                .reconciler_mut()
                .reconcile(&mut inputs)
                .await
                .expect("the inputs in force reconcile");
            harness.controller.sets_changed().await;
            harness.controller.tick().await;
            assert_eq!(harness.writes(), before, "a second reconcile wrote something");
        });
    }
}
