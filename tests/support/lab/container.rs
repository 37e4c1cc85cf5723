//! The container side of the lab: the image built by
//! `deploy/container/build-image.sh` (the script behind `cargo xtask image`)
//! from the binary under test, and `xdpgate run` in a podman/runc container
//! that shares a lab's server namespace, with only the capabilities it needs
//! and a seccomp profile that lets CAP_BPF call bpf(2). Images and containers
//! are removed on drop, also when an assertion fails.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{
    daemon::{admin_get, CliOutput, Workdir, ADMIN_PORT},
    net::Lab,
};

/// The image's build script, shared with `cargo xtask image`.
const BUILD_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/container/build-image.sh"
);
/// What runs the image. crun does not work on these machines.
const TOOLS: [&str; 3] = ["buildah", "podman", "runc"];
/// Where the config is mounted in the container, as the image's CMD expects.
pub const CONFIG_IN_IMAGE: &str = "/etc/xdpgate/config.yaml";
/// podman's default limits are above what an unprivileged container may set
/// here; these are plenty for the daemon.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];
/// containers-common's default seccomp profile, which podman applies.
const DEFAULT_SECCOMP: &str = "/usr/share/containers/seccomp.json";

/// True when buildah, podman and runc are installed; otherwise prints which
/// one is missing and how to get them.
pub fn container_tools_ready(test: &str) -> bool {
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
pub fn output(cmd: &mut Command) -> CliOutput {
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

/// `podman --runtime runc`.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc"]);
    cmd
}

/// An image built by the build script from the binary under test, under a
/// tag of this process's own. Removed (untagged) on drop.
pub struct TestImage {
    pub tag: String,
}

impl TestImage {
    pub fn build(binary: &str) -> TestImage {
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

    /// The same image under a second tag, `<tag>-<suffix>` (as a registry
    /// would hold a new version): `podman tag`. Its drop removes only that
    /// tag while the first one exists.
    pub fn retag(&self, suffix: &str) -> TestImage {
        let image = TestImage {
            tag: format!("{}-{suffix}", self.tag),
        };
        let out = output(podman().args(["tag", &self.tag, &image.tag]));
        assert_eq!(
            out.code, 0,
            "podman tag {} {}: {out:?}",
            self.tag, image.tag
        );
        image
    }

    /// `podman run --rm` of the image with `args`, no network, the files in
    /// `mounts` read-only at their paths in the container.
    pub fn run(&self, mounts: &[(&Path, &str)], args: &[&str]) -> CliOutput {
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
pub fn seccomp_option(work: &Workdir) -> String {
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
/// with the host's bpffs and the test's config and state directory (at the
/// daemon's default, /var/lib/xdpgate). Removed on drop; its log is printed
/// first if the test is failing.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `name` tells this container from another of the same test
    /// (`xdpgate-test-<name>-<pid>`).
    pub fn start(
        lab: &Lab,
        work: &Workdir,
        image: &TestImage,
        config: &Path,
        name: &str,
    ) -> Container {
        let container = Container {
            name: format!("xdpgate-test-{name}-{}", std::process::id()),
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

    pub fn inspect(&self, format: &str) -> String {
        let out = output(podman().args(["inspect", "--format", format, &self.name]));
        assert_eq!(out.code, 0, "podman inspect {}: {out:?}", self.name);
        out.stdout.trim().to_string()
    }

    pub fn logs(&self) -> String {
        let out = output(podman().args(["logs", &self.name]));
        format!("{}{}", out.stdout, out.stderr)
    }

    /// Polls /readyz in the server namespace (the container's network)
    /// until it answers 200; panics if the container exits first.
    pub fn wait_ready(&self, server_ns: &str, timeout: Duration) {
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
    pub fn stop(&self) -> i32 {
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
