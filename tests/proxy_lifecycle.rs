//! The proxy across the daemon's life: `/readyz` says ready only once both
//! entrypoints accept connections; SIGTERM with requests in flight (they
//! finish with 200; for `drain.accept_grace` new connections are still
//! served while `/readyz` says 503 draining; then new connections are
//! refused; the daemon exits once the last request is done, and the filter
//! stays on the interface); a request still running at `grace_timeout` is
//! cut off and the daemon exits on time; and a config reload that adds a
//! route while `h2load` keeps the TLS entrypoint busy (no request fails, and
//! the new route is served right away). Needs root and h2load.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, TcpStream},
    sync::Mutex,
    time::{Duration, Instant},
};

use xdpgate_tests::lab::{
    admin_get, in_netns, lab_ready, members, outsiders, tools_ready, wait_for, xdp_program_ids,
    Call, H2loadSummary, ProxyLab, ProxySetup, Tool, ADMIN_PORT, PLAIN_PORT, TLS_PORT,
};

const BACKEND_PORT: u16 = 9100;
const NEW_BACKEND_PORT: u16 = 9101;

/// Timing matters in both tests (a drain window, a load run), so they take
/// turns rather than share two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether the process is still running (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Inside the server namespace: polls `/readyz` until it answers 200, then
/// at once connects to both entrypoints. Returns what the connects did.
fn connect_as_soon_as_ready(server_ns: &str) -> Vec<(u16, Result<(), String>)> {
    in_netns(server_ns, || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "the daemon did not get ready");
            let ready = TcpStream::connect(("127.0.0.1", ADMIN_PORT)).and_then(|mut admin| {
                admin.write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")?;
                let mut answer = String::new();
                admin.read_to_string(&mut answer)?;
                Ok(answer.starts_with("HTTP/1.1 200"))
            });
            if matches!(ready, Ok(true)) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let ready = Instant::now();
        [PLAIN_PORT, TLS_PORT]
            .into_iter()
            .map(|port| {
                let connected = TcpStream::connect(("127.0.0.1", port)).map(drop);
                // How long after "ready" the port does accept, to tell a
                // late bind from a port that never opens.
                let outcome = connected.map_err(|e| {
                    let accepting = (0..2000).find_map(|_| {
                        std::thread::sleep(Duration::from_millis(1));
                        TcpStream::connect(("127.0.0.1", port))
                            .ok()
                            .map(|_| ready.elapsed())
                    });
                    format!("{e}; the port accepted {accepting:?} after /readyz said 200")
                });
                (port, outcome)
            })
            .collect()
    })
}

#[test]
fn once_readyz_says_ready_both_entrypoints_accept_connections() {
    let test = "once_readyz_says_ready_both_entrypoints_accept_connections";
    if !lab_ready(test, &[]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut proxy = ProxyLab::new("lw", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let setup = ProxySetup {
        rest: format!("  default_service: \"127.0.0.1:{BACKEND_PORT}\"\n"),
        ..ProxySetup::default()
    };
    let mut refused = Vec::new();
    for round in 0..5 {
        proxy.start_unready(&setup);
        for (port, connected) in connect_as_soon_as_ready(&proxy.lab.server_ns) {
            if let Err(e) = connected {
                refused.push(format!("start {round}: port {port}: {e}"));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "/readyz said 200 before the entrypoints were bound:\n{}",
        refused.join("\n")
    );
}

#[test]
fn sigterm_finishes_requests_in_flight_and_stops_accepting_after_the_grace() {
    let test = "sigterm_finishes_requests_in_flight_and_stops_accepting_after_the_grace";
    if !lab_ready(test, &[]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut proxy = ProxyLab::new("ld", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let backend = proxy.echo_backend("app", BACKEND_PORT);
    proxy.start(&ProxySetup {
        rest: format!(
            "  default_service: \"127.0.0.1:{BACKEND_PORT}\"
  drain: {{ accept_grace: 2s, grace_timeout: 10s }}
"
        ),
        ..ProxySetup::default()
    });
    let pid = proxy.pid();
    let (member, outsider): (IpAddr, IpAddr) = (members()[0], outsiders()[6]);

    // Three long requests: plain HTTP/1.1, TLS HTTP/1.1, TLS HTTP/2.
    let long = "/delay/2000";
    let first: Vec<_> = [
        Call::plain(member).path(long),
        Call::tls(member).host("localhost").path(long),
        Call::tls(outsider).sni("localhost").h2().path(long),
    ]
    .into_iter()
    .map(|call| proxy.client.spawn(call))
    .collect();
    wait_for(
        "the three long requests to reach the backend",
        Duration::from_secs(5),
        || backend.served(),
        |n| *n >= 3,
    );

    // SIGTERM: draining starts.
    // SAFETY: signalling the daemon this test started and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let sigterm = Instant::now();
    let readyz = wait_for(
        "/readyz to fail once draining",
        Duration::from_secs(1),
        || admin_get(&proxy.lab.server_ns, "/readyz").map(|r| (r.status, r.body)),
        |reply| matches!(reply, Ok((503, _))),
    );
    let body = readyz.map(|(_, body)| body).unwrap_or_default();
    assert!(body.contains("draining"), "/readyz says why: {body}");

    // Within accept_grace new connections are served, quick and long ones.
    let during_grace = proxy
        .client
        .spawn(Call::plain(outsider).path("/delay/3000"));
    let quick = proxy
        .send(&Call::tls(member).host("localhost").path("/during-grace"))
        .expect("a new connection during accept_grace");
    assert_eq!(quick.status, 200, "served during accept_grace");
    assert!(
        sigterm.elapsed() < Duration::from_secs(2),
        "still within the grace"
    );

    // After it, new connections are refused while the daemon still drains.
    let refused_at = wait_for(
        "new connections to be refused after accept_grace (2s)",
        Duration::from_secs(4),
        || {
            let plain = proxy
                .client
                .block_on(proxy.client.connect(member, PLAIN_PORT));
            let tls = proxy
                .client
                .block_on(proxy.client.connect(member, TLS_PORT));
            (
                plain.err().map(|e| e.kind()),
                tls.err().map(|e| e.kind()),
                sigterm.elapsed(),
            )
        },
        |(plain, tls, _)| plain.is_some() && tls.is_some(),
    );
    println!(
        "refusing connections {:?} after SIGTERM: {refused_at:?}",
        refused_at.2
    );
    assert!(
        refused_at.2 >= Duration::from_millis(1900),
        "not before accept_grace ended"
    );
    assert_eq!(refused_at.0, Some(std::io::ErrorKind::ConnectionRefused));
    assert!(
        running(pid),
        "the daemon still runs: a request is in flight"
    );

    // Every request in flight finished with 200, and then the daemon exits.
    for (i, task) in first.into_iter().chain([during_grace]).enumerate() {
        let reply = proxy.client.block_on(task).expect("request task");
        let status = reply.map(|r| r.status).map_err(|e| e.to_string());
        assert_eq!(status, Ok(200), "request {i} in flight at SIGTERM");
    }
    let status = proxy.daemon().terminate(Duration::from_secs(12));
    println!(
        "the daemon exited {:?} after SIGTERM: {status}",
        sigterm.elapsed()
    );
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        sigterm.elapsed() < Duration::from_secs(6),
        "it exits once the last request is done, not at grace_timeout"
    );

    // The filter stays attached; `status` says the daemon is not running.
    let attached = xdp_program_ids(&proxy.lab.server_ns, &proxy.lab.server_if);
    assert!(
        !attached.is_empty(),
        "the XDP program stays on {}",
        proxy.lab.server_if
    );
    let status = proxy.work.cli(&["status"]);
    assert_eq!(
        status.code, 6,
        "xdpgate status after the daemon exited: {status:?}"
    );
    let status = proxy.work.status();
    assert_eq!(
        status["daemon"]["running"], false,
        "status --json: {status}"
    );
}

#[test]
fn a_request_still_running_at_grace_timeout_is_cut_off_and_the_daemon_exits() {
    let test = "a_request_still_running_at_grace_timeout_is_cut_off_and_the_daemon_exits";
    if !lab_ready(test, &[]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut proxy = ProxyLab::new("lg", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let backend = proxy.echo_backend("app", BACKEND_PORT);
    proxy.start(&ProxySetup {
        rest: format!(
            "  default_service: \"127.0.0.1:{BACKEND_PORT}\"
  drain: {{ accept_grace: 1s, grace_timeout: 2s }}
"
        ),
        ..ProxySetup::default()
    });
    let stuck: Vec<_> = [
        Call::plain(members()[0]),
        Call::tls(members()[0]).host("localhost"),
        Call::tls(outsiders()[6]).sni("localhost").h2(),
    ]
    .into_iter()
    .map(|call| {
        let call = call.path("/delay/20000").timeout(Duration::from_secs(30));
        proxy.client.spawn(call)
    })
    .collect();
    wait_for(
        "the requests to reach the backend",
        Duration::from_secs(5),
        || backend.served(),
        |n| *n >= 3,
    );
    let sigterm = Instant::now();
    let status = proxy.daemon().terminate(Duration::from_secs(10));
    let took = sigterm.elapsed();
    println!(
        "the daemon exited {took:?} after SIGTERM (accept_grace 1s + grace_timeout 2s): {status}"
    );
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "it exits once accept_grace and grace_timeout have passed, not before, not much after: {took:?}"
    );
    for (i, task) in stuck.into_iter().enumerate() {
        let outcome = proxy.client.block_on(task).expect("request task");
        let ended = sigterm.elapsed();
        match outcome {
            Ok(reply) => panic!("request {i} got {} after the drain", reply.status),
            Err(e) => {
                println!("request {i} cut off: {e}");
                assert!(
                    ended < Duration::from_secs(6),
                    "request {i} ended {ended:?} after SIGTERM"
                );
            }
        }
    }
}

#[test]
fn a_reload_that_adds_a_route_under_load_fails_no_request() {
    let test = "a_reload_that_adds_a_route_under_load_fails_no_request";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("h2load", "nghttp2-client")]) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut proxy = ProxyLab::new("lr", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let old = proxy.echo_backend("old", BACKEND_PORT);
    let _new = proxy.echo_backend("new", NEW_BACKEND_PORT);
    let base = format!("  default_service: \"127.0.0.1:{BACKEND_PORT}\"\n");
    let mut setup = ProxySetup {
        rest: base.clone(),
        ..ProxySetup::default()
    };
    proxy.start(&setup);
    let member = members()[0];
    let before = proxy
        .send(&Call::tls(member).host("localhost").path("/new/thing"))
        .expect("a request before the reload");
    assert_eq!(before.backend().as_deref(), Some("old"));

    let url = format!("https://192.0.2.1:{TLS_PORT}/");
    let load = Tool::spawn(
        &proxy.lab.client_ns,
        "h2load",
        &["-n", "20000", "-c", "10", &url],
    );
    wait_for(
        "h2load to get going",
        Duration::from_secs(10),
        || old.served(),
        |n| *n >= 2000,
    );
    setup.rest = format!(
        "  routes:\n    - {{ name: new, path: /new, service: \"127.0.0.1:{NEW_BACKEND_PORT}\" }}\n{base}"
    );
    proxy.write_config(&setup);
    // SAFETY: signalling the daemon this test started and has not reaped.
    unsafe { libc::kill(proxy.pid() as libc::pid_t, libc::SIGHUP) };
    let reloaded = Instant::now();
    let served_then = wait_for(
        "the new route to be served",
        Duration::from_secs(5),
        || {
            let reply = proxy.send(&Call::tls(member).host("localhost").path("/new/thing"));
            (reply.ok().and_then(|r| r.backend()), old.served())
        },
        |(backend, _)| backend.as_deref() == Some("new"),
    );
    println!(
        "the new route served {:?} after SIGHUP, with {} of h2load's 20000 requests done",
        reloaded.elapsed(),
        served_then.1
    );
    assert!(
        served_then.1 < 20000,
        "the reload happened while h2load was still running"
    );

    let out = load.wait(Duration::from_secs(120));
    let summary =
        H2loadSummary::parse(&out.stdout).unwrap_or_else(|| panic!("no h2load summary: {out:?}"));
    println!(
        "h2load -n 20000 -c 10 across the reload: {:.0} req/s, {} succeeded, {} failed, \
         {} errored; time for request: {}",
        summary.requests_per_second,
        summary.succeeded,
        summary.failed,
        summary.errored,
        summary.request_time
    );
    assert_eq!(
        (
            summary.succeeded,
            summary.failed,
            summary.errored,
            summary.timeout
        ),
        (20000, 0, 0, 0),
        "no request failed across the reload: {}",
        out.stdout
    );
    assert_eq!(summary.status[0], 20000, "all 2xx: {}", out.stdout);
    let status = proxy.work.status();
    let reloads = &status["daemon"]["status"]["reloads"];
    assert!(
        reloads["ok"].as_u64().is_some_and(|n| n >= 1),
        "status counts the reload: {status}"
    );
    assert_eq!(reloads["failed"], 0, "{status}");
}
