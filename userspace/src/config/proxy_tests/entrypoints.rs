//! Entrypoints: names, listen addresses and their uniqueness, redirects,
//! TLS settings and limits.
use super::*;

#[test]
fn entrypoints_need_a_name_and_an_address() {
    let e = refused(
        r#"
        proxy:
          entrypoints:
            "web secure": { listen: "[::]:443" }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web secure",
        "`web secure` is not a valid entrypoint name",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80" }
            websecure:
              tls: {}
    "#,
    );
    assert_at(
        &e,
        4,
        "proxy.entrypoints.websecure",
        "entrypoint `websecure` has no `listen` address",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: []
    "#,
    );
    assert_at(&e, 4, "proxy.entrypoints.web.listen", "lists no address");
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen:
                - "[::]:80"
                - "example.com:80"
    "#,
    );
    assert_at(
        &e,
        6,
        "proxy.entrypoints.web.listen[1]",
        "`example.com:80` is not an IP address and port",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: ":80" }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web.listen",
        "`:80` is not an IP address and port",
    );
}

#[test]
fn listen_addresses_are_unique_across_entrypoints() {
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80" }
            websecure:
              listen:
                - "[::]:443"
                - "[::]:80"
    "#,
    );
    assert_at(
        &e,
        7,
        "proxy.entrypoints.websecure.listen[1]",
        "`[::]:80` is already where entrypoint `web` (line 3) listens",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            websecure: { listen: ["0.0.0.0:443", "[::]:443"], tls: {} }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.websecure.listen[1]",
        "`[::]:443` overlaps `0.0.0.0:443` of this entrypoint: an unspecified address",
    );
}

#[test]
fn no_entrypoint_takes_the_admin_listeners_socket() {
    let e = refused(
        r#"
        admin: { listen: "127.0.0.1:9901" }
        proxy:
          entrypoints:
            web: { listen: "127.0.0.1:80" }
            metrics: { listen: "0.0.0.0:9901" }
    "#,
    );
    assert_at(
        &e,
        5,
        "proxy.entrypoints.metrics.listen",
        "would take the admin listener's socket (admin.listen is `127.0.0.1:9901`)",
    );
    // The check reads admin.listen wherever the section is in the file.
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:8080" }
        admin: { listen: "[::1]:8080" }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web.listen",
        "admin listener's socket",
    );
}

#[test]
fn redirects_go_from_plain_to_an_existing_tls_entrypoint() {
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web: { listen: "[::]:80", redirect: websecur }
            websecure: { listen: "[::]:443", tls: {} }
    "#,
    );
    assert_at(
        &e,
        3,
        "proxy.entrypoints.web.redirect",
        "unknown entrypoint `websecur` (did you mean `websecure`?)",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: "[::]:80"
              redirect:
                to: alt
            alt: { listen: "[::]:8080" }
    "#,
    );
    assert_at(
        &e,
        6,
        "proxy.entrypoints.web.redirect.to",
        "entrypoint `alt` has no `tls`",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: "[::]:80"
              redirect: websecure
              tls: {}
            websecure: { listen: "[::]:443", tls: {} }
    "#,
    );
    assert_at(
        &e,
        6,
        "proxy.entrypoints.web.tls",
        "entrypoint `web` redirects every request to `websecure`",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: "[::]:80"
              redirect: { to: websecure, code: 302 }
    "#,
    );
    assert_at(
        &e,
        5,
        "proxy.entrypoints.web.redirect.code",
        "`302` is not a redirect code xdpgate sends",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            web:
              listen: "[::]:80"
              redirect: { code: 301 }
    "#,
    );
    assert_at(
        &e,
        5,
        "proxy.entrypoints.web.redirect",
        "the redirect has no `to`",
    );
}

#[test]
fn bad_tls_settings_are_named() {
    let e = refused(
        r#"
        proxy:
          entrypoints:
            websecure:
              listen: "[::]:443"
              tls:
                min_version: "1.1"
    "#,
    );
    assert_at(
        &e,
        6,
        "proxy.entrypoints.websecure.tls.min_version",
        "`1.1` is not a TLS version xdpgate accepts",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            websecure:
              listen: "[::]:443"
              tls:
                certs:
                  - { cert: a.crt, key: a.key }
                  - { cert: b.crt }
    "#,
    );
    assert_at(
        &e,
        8,
        "proxy.entrypoints.websecure.tls.certs[1]",
        "`key` is missing",
    );
    let e = refused(
        r#"
        proxy:
          entrypoints:
            websecure:
              listen: "[::]:443"
              tls: { client_ca: "" }
    "#,
    );
    assert_at(
        &e,
        5,
        "proxy.entrypoints.websecure.tls.client_ca",
        "the path is empty",
    );
}

#[test]
fn limits_are_bounded() {
    let limit = |limit: &str| {
        refused(&format!(
            "
            proxy:
              entrypoints:
                web:
                  listen: \"[::]:80\"
                  limits:
                    {limit}
            "
        ))
    };
    let key = |name: &str| format!("proxy.entrypoints.web.limits.{name}");
    let e = limit("max_header_bytes: 512");
    assert_at(
        &e,
        6,
        &key("max_header_bytes"),
        "512 is too small: use at least 1024",
    );
    let e = limit("max_header_bytes: 32KiB");
    assert_at(
        &e,
        6,
        &key("max_header_bytes"),
        "`32KiB` is not a whole number",
    );
    let e = limit("max_connections: 0");
    assert_at(&e, 6, &key("max_connections"), "use at least 1");
    let e = limit("h2_max_concurrent_streams: 0");
    assert_at(&e, 6, &key("h2_max_concurrent_streams"), "use at least 1");
    let e = limit("h2_max_concurrent_streams: 4294967296");
    assert_at(
        &e,
        6,
        &key("h2_max_concurrent_streams"),
        "use at most 4294967295",
    );
    for timeout in ["header_read_timeout", "idle_timeout", "handshake_timeout"] {
        let e = limit(&format!("{timeout}: 0s"));
        assert_at(&e, 6, &key(timeout), "a timeout of 0");
        let e = limit(&format!("{timeout}: 10"));
        assert_at(&e, 6, &key(timeout), "`10` is not a duration");
    }
}
