//! Middlewares across changes while the daemon runs: a config reload that
//! adds a route with an `ip_allow` on a new file set takes effect, a rate
//! limit whose settings did not change keeps its buckets across that reload
//! (a client that was limited stays limited) and starts fresh when they do,
//! and editing the set file changes who `ip_allow` admits with no reload.
//! Needs root.
use std::time::Duration;

use xdpgate_tests::lab::{
    lab_ready, outsiders, proxy_config, wait_for, Call, ProxyLab, ProxySetup,
};

const BACKEND_PORT: u16 = 9100;

fn routes(burst: u32) -> String {
    format!(
        "  routes:
    - {{ name: limited, path: /, service: \"127.0.0.1:{BACKEND_PORT}\", middlewares: [limit] }}
    - {{ name: admin, path: /admin, service: \"127.0.0.1:{BACKEND_PORT}\", middlewares: [admins] }}
  middlewares:
    limit: {{ rate_limit: {{ average: 1, period: 1m, burst: {burst} }} }}
    admins: {{ ip_allow: {{ sets: [admins] }} }}
"
    )
}

#[test]
fn middlewares_keep_their_state_across_reloads_and_follow_set_edits() {
    let test = "middlewares_keep_their_state_across_reloads_and_follow_set_edits";
    if !lab_ready(test, &[]) {
        return;
    }
    let mut proxy = ProxyLab::new("mwl", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let _backend = proxy.echo_backend("app", BACKEND_PORT);
    // Start without the admin route and its set.
    proxy.start(&ProxySetup {
        rest: format!(
            "  routes:
    - {{ name: limited, path: /, service: \"127.0.0.1:{BACKEND_PORT}\", middlewares: [limit] }}
  middlewares:
    limit: {{ rate_limit: {{ average: 1, period: 1m, burst: 2 }} }}
"
        ),
        ..ProxySetup::default()
    });
    let (first, second) = (outsiders()[0], outsiders()[1]);
    let status = |call: Call| proxy.send(&call).map(|r| r.status).unwrap_or(0);
    let statuses: Vec<u16> = (0..3).map(|_| status(Call::plain(first))).collect();
    assert_eq!(statuses, [200, 200, 429], "burst 2, one a minute after");

    // Reload: a file set `admins` holding the second client, and a route
    // that only it may use.
    let admins = proxy.work.write("admins.txt", &format!("{second}\n"));
    let with_admins = |burst: u32| {
        let setup = ProxySetup {
            certs: vec![proxy.server_cert.clone()],
            rest: routes(burst),
            ..ProxySetup::default()
        };
        proxy_config(&proxy.lab, &proxy.work, &setup).replace(
            "    members: {",
            &format!(
                "    admins: {{ file: {} }}\n    members: {{",
                admins.display()
            ),
        )
    };
    std::fs::write(&proxy.config, with_admins(2)).unwrap();
    // Before the reload `/admin` goes to the limited route, where the
    // first client gets 429; the new route refuses it with 403.
    wait_for(
        "the reloaded config to guard /admin with ip_allow",
        Duration::from_secs(10),
        || status(Call::plain(first).path("/admin")),
        |status| *status == 403,
    );
    assert_eq!(status(Call::plain(second).path("/admin")), 200);
    assert_eq!(
        status(Call::plain(first)),
        429,
        "the unchanged rate limit kept its buckets across the reload"
    );

    // The set file changes: ip_allow follows, with no reload.
    std::fs::write(&admins, format!("{first}\n")).unwrap();
    wait_for(
        "ip_allow to admit the new member of admins",
        Duration::from_secs(10),
        || status(Call::plain(first).path("/admin")),
        |status| *status == 200,
    );
    assert_eq!(status(Call::plain(second).path("/admin")), 403);

    // Changed settings: a new limiter, fresh buckets.
    std::fs::write(&proxy.config, with_admins(3)).unwrap();
    wait_for(
        "the changed rate limit to start fresh",
        Duration::from_secs(10),
        || status(Call::plain(first)),
        |status| *status == 200,
    );
    let log = proxy.daemon().log();
    assert!(!log.contains("refused"), "no reload was refused:\n{log}");
}
