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
    time::{Duration, Instant},
};

use xdpgate_tests::lab::{
    container_tools_ready, lab_ready, members, outsiders, tcp_connects, tcp_outcomes,
    xdp_program_ids, xdpgate, Container, Lab, TcpServer, TestImage, Workdir, CONFIG_IN_IMAGE,
    TCP_PORT,
};

const BIN: &str = env!("CARGO_BIN_EXE_xdpgate-under-test");
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

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
    if !lab_ready(test, &[]) || !container_tools_ready(test) {
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
    let container = Container::start(&lab, &work, &image, &good_path, "daemon");
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
