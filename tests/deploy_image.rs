//! The container image, built and run as an operator would: the test builds
//! it with `deploy/container/build-image.sh` (the script behind `cargo xtask
//! image`) from the binary under test, then runs it with podman and runc.
//! The command line works inside it (`--version`, `config check` with exit
//! codes 0 and 4), and the daemon in a container that shares a lab's server
//! namespace, with only the capabilities it needs, attaches the filter to the
//! lab's veth: members connect, non-members time out. Stopping the container
//! leaves the filter attached and enforcing; `xdpgate detach` removes it.
//! The container, the image, the pins and the namespaces are removed on drop,
//! also when an assertion fails. Needs root, buildah, podman and runc.
use std::{
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use xdpgate_tests::lab::{
    admin_get, lab_ready, members, outsiders, tcp_connects, tcp_outcomes, xdp_program_ids, xdpgate,
    CliOutput, Lab, TcpServer, Workdir, ADMIN_PORT, TCP_PORT,
};

const BIN: &str = env!("CARGO_BIN_EXE_xdpgate-under-test");
/// The image's build script, shared with `cargo xtask image`.
const BUILD_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/container/build-image.sh"
);
/// What runs the image. crun does not work on these machines.
const TOOLS: [&str; 3] = ["buildah", "podman", "runc"];
/// Where the config is mounted in the container, as the image's CMD expects.
const CONFIG_IN_IMAGE: &str = "/etc/xdpgate/config.yaml";
/// podman's default limits are above what an unprivileged container may set
/// here; these are plenty for the daemon.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// containers-common's default seccomp profile, which podman applies.
const DEFAULT_SECCOMP: &str = "/usr/share/containers/seccomp.json";

fn config(lab: &Lab) -> String {
    format!(
        "filter:
  interfaces: [{}]
  sets:
    members: {{ cidrs: [198.51.100.0/29, \"2001:db8:1::/64\"] }}
  allow:
    - {{ tcp: [{TCP_PORT}], from: [members] }}
",
        lab.server_if
    )
}

fn tools_ready(test: &str) -> bool {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false)
    };
    match TOOLS.into_iter().find(|tool| !on_path(tool)) {
        Some(tool) => {
            println!(
                "SKIP {test}: {tool} is not installed (apt-get install {})",
                TOOLS.join(" ")
            );
            false
        }
        None => true,
    }
}

/// Runs `cmd` to completion and collects what it printed.
fn output(cmd: &mut Command) -> CliOutput {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]);
    cmd
}

/// An image built by the build script from the binary under test, under a
/// tag of this process's own. Removed on drop.
struct TestImage {
    tag: String,
}

impl TestImage {
    fn build(binary: &str) -> TestImage {
        let image = TestImage {
            tag: format!("localhost/xdpgate-test:{}", std::process::id()),
        };
        let started = Instant::now();
        let out = output(Command::new("bash").args([BUILD_SCRIPT, binary, &image.tag]));
        assert_eq!(
            out.code, 0,
            "{BUILD_SCRIPT} {binary} {}: {out:?}",
            image.tag
        );
        let size = output(podman().args(["image", "inspect", "--format", "{{.Size}}", &image.tag]));
        assert_eq!(size.code, 0, "the built image exists: {size:?}");
        println!(
            "built {} in {:.1?}: {} bytes",
            image.tag,
            started.elapsed(),
            size.stdout.trim()
        );
        image
    }

    /// `podman run --rm` of the image with `args`, no network, the files in
    /// `mounts` read-only at their paths in the container.
    fn run(&self, mounts: &[(&Path, &str)], args: &[&str]) -> CliOutput {
        let mut cmd = podman();
        cmd.args(["run", "--rm", "--network", "none"]).args(ULIMITS);
        for (host, container) in mounts {
            cmd.arg("-v")
                .arg(format!("{}:{container}:ro", host.display()));
        }
        output(cmd.arg(&self.tag).args(args))
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let out = output(podman().args(["rmi", "--force", &self.tag]));
        if out.code != 0 {
            eprintln!("cleanup: podman rmi {}: {out:?}", self.tag);
        }
    }
}

/// podman's default seccomp profile allows bpf(2) only to holders of
/// CAP_SYS_ADMIN, the capability CAP_BPF exists to avoid granting. This is
/// that profile with bpf(2) allowed to CAP_BPF instead, written into the
/// workdir, as `seccomp=<file>`; `seccomp=unconfined` where podman keeps its
/// default profile elsewhere.
fn seccomp_option(work: &Workdir) -> String {
    let Ok(text) = std::fs::read_to_string(DEFAULT_SECCOMP) else {
        println!("{DEFAULT_SECCOMP} is missing: running with seccomp=unconfined");
        return "seccomp=unconfined".to_string();
    };
    let mut profile: Value = serde_json::from_str(&text).expect("podman's seccomp profile");
    let rules = profile["syscalls"]
        .as_array_mut()
        .expect("a seccomp profile lists syscalls");
    for rule in rules.iter_mut() {
        if rule["action"] == "SCMP_ACT_ERRNO" {
            if let Some(names) = rule["names"].as_array_mut() {
                names.retain(|name| name != "bpf");
            }
        }
    }
    rules.push(json!({
        "names": ["bpf"],
        "action": "SCMP_ACT_ALLOW",
        "includes": { "caps": ["CAP_BPF"] },
    }));
    let path = work.write("seccomp.json", &profile.to_string());
    format!("seccomp={}", path.display())
}

/// `xdpgate run` in a detached container in the lab's server namespace,
/// with the host's bpffs and the test's config and state directory.
/// Removed on drop; its log is printed first if the test is failing.
struct Container {
    name: String,
}

impl Container {
    fn start(lab: &Lab, work: &Workdir, image: &TestImage, config: &Path) -> Container {
        let container = Container {
            name: format!("xdpgate-test-{}", std::process::id()),
        };
        let pin_dir = work.pin_dir.to_str().expect("utf-8 pin dir");
        let out = output(
            podman()
                .args(["run", "--detach", "--replace", "--name", &container.name])
                .arg(format!("--network=ns:/var/run/netns/{}", lab.server_ns))
                .args(ULIMITS)
                // Only what the daemon needs (see deploy/container/README.md).
                .args([
                    "--cap-drop=ALL",
                    "--cap-add=BPF,NET_ADMIN,PERFMON,NET_BIND_SERVICE",
                ])
                .arg("--security-opt")
                .arg(seccomp_option(work))
                .args(["-v", "/sys/fs/bpf:/sys/fs/bpf"])
                .arg("-v")
                .arg(format!("{}:{CONFIG_IN_IMAGE}:ro", config.display()))
                .arg("-v")
                .arg(format!("{}:/var/lib/xdpgate", work.state_dir.display()))
                .arg(&image.tag)
                .args(["run", "--config", CONFIG_IN_IMAGE, "--pin-dir", pin_dir])
                .arg("--admin-listen")
                .arg(format!("127.0.0.1:{ADMIN_PORT}")),
        );
        assert_eq!(out.code, 0, "podman run --detach: {out:?}");
        container
    }

    fn inspect(&self, format: &str) -> String {
        let out = output(podman().args(["inspect", "--format", format, &self.name]));
        assert_eq!(out.code, 0, "podman inspect {}: {out:?}", self.name);
        out.stdout.trim().to_string()
    }

    fn logs(&self) -> String {
        let out = output(podman().args(["logs", &self.name]));
        format!("{}{}", out.stdout, out.stderr)
    }

    /// Polls /readyz in the server namespace (the container's network)
    /// until it answers 200; panics if the container exits first.
    fn wait_ready(&self, server_ns: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if self.inspect("{{.State.Running}}") != "true" {
                panic!(
                    "the container exited (code {}) before it was ready",
                    self.inspect("{{.State.ExitCode}}")
                );
            }
            match admin_get(server_ns, "/readyz") {
                Ok(reply) if reply.status == 200 => return,
                Ok(reply) => last = format!("{} {}", reply.status, reply.body.trim()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the container is not ready after {timeout:?}: /readyz: {last}");
    }

    /// `podman stop`: SIGTERM, the image's stop signal. Returns the exit code.
    fn stop(&self) -> i32 {
        let out = output(podman().args(["stop", "--time", "30", &self.name]));
        assert_eq!(out.code, 0, "podman stop {}: {out:?}", self.name);
        let code = self.inspect("{{.State.ExitCode}}");
        code.parse()
            .unwrap_or_else(|_| panic!("exit code {code:?}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- container {} log ----\n{}---- end of container log ----",
                self.name,
                self.logs()
            );
        }
        let out = output(podman().args(["rm", "--force", "--time", "0", &self.name]));
        if out.code != 0 {
            eprintln!("cleanup: podman rm {}: {out:?}", self.name);
        }
    }
}

/// The sources among `sources` whose TCP connection to the protected port
/// did not do what their membership says (connect for members, time out for
/// the rest), described.
fn wrong_outcomes(lab: &Lab, sources: &[IpAddr], members: &[IpAddr]) -> Vec<String> {
    tcp_outcomes(&lab.client_ns, sources, TCP_PORT, CONNECT_TIMEOUT)
        .into_iter()
        .filter(|(source, connected)| *connected != members.contains(source))
        .map(|(source, connected)| {
            let what = if connected { "connected" } else { "timed out" };
            format!("{source} {what}")
        })
        .collect()
}

/// The 1-based line of `config` that contains `needle`.
fn line_of(config: &str, needle: &str) -> usize {
    config
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} is in the config"))
}

#[test]
fn the_image_runs_the_cli_and_its_daemon_filters_a_lab_from_a_container() {
    let test = "the_image_runs_the_cli_and_its_daemon_filters_a_lab_from_a_container";
    if !lab_ready(test, &[]) || !tools_ready(test) {
        return;
    }
    // Declared so that they drop in reverse: container, listener, image,
    // pins (detach), namespaces.
    let lab = Lab::new("img");
    let work = Workdir::new("image", BIN);
    let image = TestImage::build(BIN);
    let tcp = TcpServer::start(&lab.server_ns, TCP_PORT);

    // The command line in the image is the binary's.
    let host = xdpgate(Path::new(BIN), &["--version"]);
    let version = image.run(&[], &["--version"]);
    assert_eq!(version.code, 0, "--version in the image: {version:?}");
    assert_eq!(
        version.stdout.trim(),
        format!("xdpgate {}", env!("CARGO_PKG_VERSION")),
        "--version in the image: {version:?}"
    );
    assert_eq!(
        version.stdout, host.stdout,
        "the image's binary is the one built"
    );

    // `config check` on a mounted config: 0 when valid, 4 naming the line
    // when not.
    let good = config(&lab);
    let good_path = work.write("config.yaml", &good);
    let checked = image.run(
        &[(&good_path, CONFIG_IN_IMAGE)],
        &["config", "check", CONFIG_IN_IMAGE],
    );
    assert_eq!(
        checked.code, 0,
        "config check of a valid config: {checked:?}"
    );
    let bad = good.replace("from: [members]", "from: [nonmembers]");
    let bad_path = work.write("invalid.yaml", &bad);
    let refused = image.run(
        &[(&bad_path, CONFIG_IN_IMAGE)],
        &["config", "check", CONFIG_IN_IMAGE],
    );
    assert_eq!(
        refused.code, 4,
        "config check of an invalid config: {refused:?}"
    );
    let line = line_of(&bad, "nonmembers");
    assert!(
        refused
            .stderr
            .contains(&format!("{CONFIG_IN_IMAGE}: line {line}:"))
            && refused.stderr.contains("nonmembers"),
        "the refusal names the file, line {line} and the unknown set: {refused:?}"
    );

    // Without the filter every source gets through: what is dropped later
    // is dropped by the container's filter.
    let (members, outsiders) = (members(), outsiders());
    let everyone: Vec<IpAddr> = members.iter().chain(&outsiders).copied().collect();
    assert!(
        tcp_connects(&lab.client_ns, outsiders[0], TCP_PORT, CONNECT_TIMEOUT),
        "{} connects before the container runs",
        outsiders[0]
    );

    let started = Instant::now();
    let container = Container::start(&lab, &work, &image, &good_path);
    container.wait_ready(&lab.server_ns, Duration::from_secs(20));
    println!("the container was ready in {:.1?}", started.elapsed());
    let accepted_before = tcp.peers().len();
    let wrong = wrong_outcomes(&lab, &everyone, &members);
    assert!(
        wrong.is_empty(),
        "from the container's filter, members connect and non-members time out; wrong: {wrong:?}"
    );
    let accepted = &tcp.peers()[accepted_before..];
    assert!(
        accepted.iter().all(|peer| members.contains(peer)),
        "the listener accepted only members: {accepted:?}"
    );
    let attached = xdp_program_ids(&lab.server_ns, &lab.server_if);
    assert_eq!(attached.len(), 1, "one XDP program on {}", lab.server_if);

    // SIGTERM: the daemon exits cleanly and the node stays protected.
    assert_eq!(
        container.stop(),
        0,
        "the daemon's exit code after podman stop"
    );
    assert_eq!(
        xdp_program_ids(&lab.server_ns, &lab.server_if),
        attached,
        "the same program stays attached after the container stopped"
    );
    let probe = [members[0], outsiders[0]];
    let wrong = wrong_outcomes(&lab, &probe, &members);
    assert!(
        wrong.is_empty(),
        "the filter still enforces with the container stopped; wrong: {wrong:?}"
    );

    // Removing it is explicit.
    let detached = work.cli(&["detach"]);
    assert_eq!(detached.code, 0, "xdpgate detach: {detached:?}");
    assert!(
        xdp_program_ids(&lab.server_ns, &lab.server_if).is_empty(),
        "no XDP program on {} after detach",
        lab.server_if
    );
    assert!(
        !work.pin_dir.exists(),
        "detach removed the pins under {}",
        work.pin_dir.display()
    );
    assert!(
        tcp_connects(&lab.client_ns, outsiders[0], TCP_PORT, CONNECT_TIMEOUT),
        "{} connects again after detach",
        outsiders[0]
    );
    drop(container);
}
