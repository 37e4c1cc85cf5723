//! The request path through the running proxy, with `/admin` behind
//! basic_auth and `/` open (issue 12). Every spelling of `/admin` (escaped
//! letters, dot segments, duplicate slashes, escaped dots, in either case of
//! hex) is routed to `/admin` and answered 401 without credentials, and with
//! them the upstream receives exactly the normalised path; every spelling
//! that cannot be normalised safely (an encoded `/`, `\`, NUL, `;`, `%`, `?`,
//! `#`, a literal backslash or `;`, a bad escape, a climb above the root) is
//! a 400 that reaches no upstream. Sent as exact bytes over HTTP/1.1 (plain
//! and TLS), by curl `--path-as-is` (HTTP/1.1 and HTTP/2), and by Python's
//! `h2` over HTTP/2. `path.parameters: strip` and `path.allow_encoded` change
//! the rules as documented. The same spellings against a real nginx upstream
//! are `proxy_request_path_nginx.rs`; the lab both share is
//! `xdpgate_tests::request_path`. Needs root, curl and htpasswd (Python's h2
//! for some parts).
use xdpgate_tests::{
    lab::{lab_ready, outsiders, python_h2_ready, tools_ready, ProxyLab},
    request_path::{
        ask_everywhere, basic, curl_statuses, h1, start, ADMIN_PORT, PUBLIC_PORT, REFUSED,
        SPELLINGS,
    },
};

#[test]
fn every_spelling_of_admin_needs_credentials_and_the_upstream_sees_the_normalised_path() {
    let test =
        "every_spelling_of_admin_needs_credentials_and_the_upstream_sees_the_normalised_path";
    if !lab_ready(test, &[])
        || !tools_ready(test, &[("curl", "curl"), ("htpasswd", "apache2-utils")])
    {
        return;
    }
    let python = python_h2_ready(test);
    let mut proxy = ProxyLab::new("rp1", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let admin = proxy.echo_backend("admin", ADMIN_PORT);
    let public = proxy.echo_backend("public", PUBLIC_PORT);
    start(&mut proxy, admin.addr, public.addr, "");
    let spellings: Vec<&str> = SPELLINGS.iter().map(|(s, _)| *s).collect();
    let login = basic("alice", "wonderland");

    // Without credentials: every spelling is the admin route's 401.
    let mut wrong = Vec::new();
    for (transport, path, seen) in ask_everywhere(&proxy, python.as_deref(), &spellings, None) {
        if seen.status != 401 {
            wrong.push(format!("{transport} GET {path}: {seen:?}"));
        }
    }
    for http2 in [false, true] {
        for (path, code) in spellings
            .iter()
            .zip(curl_statuses(&proxy, http2, &spellings, None))
        {
            if code != 401 {
                wrong.push(format!("curl http2={http2} GET {path}: {code}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "spellings of /admin without credentials must get 401:\n{}",
        wrong.join("\n")
    );
    assert_eq!(admin.served(), 0, "no request reached the admin upstream");
    assert_eq!(public.served(), 0, "no spelling of /admin went to `/`");

    // With credentials: the admin upstream gets exactly the normalised path.
    for (transport, path, seen) in
        ask_everywhere(&proxy, python.as_deref(), &spellings, Some(&login))
    {
        let expected = SPELLINGS.iter().find(|(s, _)| *s == path).unwrap().1;
        if seen.status != 200 || seen.backend.as_deref() != Some("admin") {
            wrong.push(format!("{transport} GET {path} with credentials: {seen:?}"));
        } else if seen.json()["path"] != expected {
            wrong.push(format!(
                "{transport} GET {path}: upstream saw {}, not {expected}",
                seen.json()["path"]
            ));
        }
    }
    let with_user = curl_statuses(&proxy, true, &spellings, Some("alice:wonderland"));
    for (path, code) in spellings.iter().zip(with_user) {
        if code != 200 {
            wrong.push(format!("curl --http2 --user GET {path}: {code}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(public.served(), 0, "no spelling of /admin went to `/`");

    // The query string is left as it came; only the path is normalised.
    let seen = h1(
        &proxy,
        outsiders()[0],
        false,
        "/x/../%61dmin?next=/../%2f&a=%61",
        Some(&login),
    );
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(seen.json()["path"], "/admin");
    assert_eq!(seen.json()["query"], "next=/../%2f&a=%61");
}

#[test]
fn unsafe_paths_get_400_and_reach_no_upstream() {
    let test = "unsafe_paths_get_400_and_reach_no_upstream";
    if !lab_ready(test, &[])
        || !tools_ready(test, &[("curl", "curl"), ("htpasswd", "apache2-utils")])
    {
        return;
    }
    let python = python_h2_ready(test);
    let mut proxy = ProxyLab::new("rp2", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let admin = proxy.echo_backend("admin", ADMIN_PORT);
    let public = proxy.echo_backend("public", PUBLIC_PORT);
    start(&mut proxy, admin.addr, public.addr, "");
    let login = basic("alice", "wonderland");

    let mut wrong = Vec::new();
    for auth in [None, Some(login.as_str())] {
        for (transport, path, seen) in ask_everywhere(&proxy, python.as_deref(), REFUSED, auth) {
            if seen.status != 400 {
                wrong.push(format!(
                    "{transport} GET {path} (auth: {}): {seen:?}",
                    auth.is_some()
                ));
            }
        }
    }
    let curlable: Vec<&str> = REFUSED
        .iter()
        .copied()
        .filter(|p| !p.contains('\\'))
        .collect();
    for http2 in [false, true] {
        for (path, code) in curlable.iter().zip(curl_statuses(
            &proxy,
            http2,
            &curlable,
            Some("alice:wonderland"),
        )) {
            if code != 400 {
                wrong.push(format!("curl http2={http2} --user GET {path}: {code}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe paths must get 400:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        admin.served(),
        0,
        "no refused path reached the admin upstream"
    );
    assert_eq!(
        public.served(),
        0,
        "no refused path reached the open upstream"
    );

    // The same entrypoint still serves an ordinary path.
    let seen = h1(&proxy, outsiders()[0], false, "/hello/world", None);
    assert_eq!(
        (seen.status, seen.backend.as_deref()),
        (200, Some("public"))
    );
    assert_eq!(seen.json()["path"], "/hello/world");
}

#[test]
fn parameters_strip_removes_semicolon_parameters_before_routing() {
    let test = "parameters_strip_removes_semicolon_parameters_before_routing";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("htpasswd", "apache2-utils")]) {
        return;
    }
    let mut proxy = ProxyLab::new("rp3", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let admin = proxy.echo_backend("admin", ADMIN_PORT);
    let public = proxy.echo_backend("public", PUBLIC_PORT);
    start(
        &mut proxy,
        admin.addr,
        public.addr,
        "path: { parameters: strip }",
    );
    let outsider = outsiders()[0];
    let login = basic("alice", "wonderland");
    for (path, expected) in [
        ("/admin;jsessionid=1", "/admin"),
        ("/admin;/x", "/admin/x"),
        ("/x;y/../admin", "/admin"),
        ("/x/..;/admin", "/admin"),
        ("/adm%69n;a=b;c=d/z;q", "/admin/z"),
    ] {
        let seen = h1(&proxy, outsider, false, path, None);
        assert_eq!(seen.status, 401, "GET {path} without credentials: {seen:?}");
        let seen = h1(&proxy, outsider, true, path, Some(&login));
        assert_eq!(
            seen.backend.as_deref(),
            Some("admin"),
            "GET {path}: {seen:?}"
        );
        assert_eq!(seen.json()["path"], expected, "GET {path}");
    }
    assert_eq!(public.served(), 0, "no stripped /admin went to `/`");
    let seen = h1(&proxy, outsider, false, "/a;x/b;y=1?q=;", None);
    assert_eq!(
        (seen.status, seen.backend.as_deref()),
        (200, Some("public"))
    );
    assert_eq!(
        seen.json()["path"],
        "/a/b",
        "parameters gone from every segment"
    );
    assert_eq!(seen.json()["query"], "q=;", "the query is not touched");
    // `..;` is still `..` once stripped: above the root is refused.
    let seen = h1(&proxy, outsider, false, "/..;/admin", None);
    assert_eq!(seen.status, 400, "{seen:?}");
    // An encoded `;` is not a parameter: still refused unless allowed.
    let seen = h1(&proxy, outsider, false, "/admin%3Bx", Some(&login));
    assert_eq!(seen.status, 400, "{seen:?}");
}

#[test]
fn allow_encoded_passes_only_the_listed_escapes_through_unchanged() {
    let test = "allow_encoded_passes_only_the_listed_escapes_through_unchanged";
    if !lab_ready(test, &[]) || !tools_ready(test, &[("htpasswd", "apache2-utils")]) {
        return;
    }
    let mut proxy = ProxyLab::new("rp4", env!("CARGO_BIN_EXE_xdpgate-under-test"));
    let admin = proxy.echo_backend("admin", ADMIN_PORT);
    let public = proxy.echo_backend("public", PUBLIC_PORT);
    start(
        &mut proxy,
        admin.addr,
        public.addr,
        "path: { allow_encoded: [slash, percent] }",
    );
    let outsider = outsiders()[0];
    for (path, expected) in [
        ("/files/a%2Fb", "/files/a%2Fb"),
        ("/files/a%2fb", "/files/a%2Fb"),
        ("/files/100%25", "/files/100%25"),
        ("/files/%2e/a%2Fb", "/files/a%2Fb"),
    ] {
        let seen = h1(&proxy, outsider, false, path, None);
        assert_eq!(
            (seen.status, seen.backend.as_deref()),
            (200, Some("public")),
            "GET {path}: {seen:?}"
        );
        assert_eq!(seen.json()["path"], expected, "GET {path}");
    }
    for path in ["/files/a%5Cb", "/files/a%00", "/files/a%3Bb", "/files/a%3F"] {
        let seen = h1(&proxy, outsider, false, path, None);
        assert_eq!(seen.status, 400, "GET {path} (not allowed): {seen:?}");
    }
    // An allowed `%25` is not decoded again: a double-encoded `..` stays
    // what it is, and does not climb into `/admin`.
    let seen = h1(&proxy, outsider, false, "/x/%252e%252e/admin", None);
    assert_eq!(seen.backend.as_deref(), Some("public"), "{seen:?}");
    assert_eq!(seen.json()["path"], "/x/%252e%252e/admin");
    assert_eq!(admin.served(), 0);
}
