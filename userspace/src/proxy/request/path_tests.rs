use proptest::prelude::*;

use super::*;
use crate::proxy::{routing::RouteTable, PathType, RouteConfig};

fn strict() -> PathPolicy {
    PathPolicy::default()
}

fn ok(path: &str) -> String {
    normalize(path, &strict())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_owned()
}

fn refused(path: &str) -> PathRejection {
    match normalize(path, &strict()) {
        Ok(p) => panic!("{path} was let through as {p}"),
        Err(e) => e,
    }
}

#[test]
fn spellings_of_admin_become_admin() {
    for path in [
        "/admin",
        "/%61dmin",
        "/%61%64%6D%69%6e",
        "//admin",
        "///admin",
        "/./admin",
        "/x/../admin",
        "/x/y/../../admin",
        "/%2e/admin",
        "/y/%2E%2e/admin",
        "/admin/.",
        "/admin/x/..",
    ] {
        let got = ok(path);
        assert!(got == "/admin" || got == "/admin/", "{path} -> {got}");
    }
    assert_eq!(ok("/admin//x///y"), "/admin/x/y");
    assert_eq!(ok("/admin/./x/"), "/admin/x/");
}

#[test]
fn a_plain_path_is_borrowed_untouched() {
    let path = "/api/v1/items-1_2~3.json";
    assert!(matches!(normalize(path, &strict()), Ok(Cow::Borrowed(p)) if p == path));
    assert_eq!(ok("/"), "/");
    assert_eq!(ok("/.well-known/acme"), "/.well-known/acme");
}

#[test]
fn other_escapes_stay_escaped_in_upper_case() {
    assert_eq!(ok("/a%20b%c3%a9"), "/a%20b%C3%A9");
    assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
    assert_eq!(ok("/a%3ab"), "/a%3Ab");
}

#[test]
fn ambiguous_escapes_are_refused_in_either_case_unless_allowed() {
    for (escape, encoded) in [
        ("%2f", Encoded::Slash),
        ("%2F", Encoded::Slash),
        ("%5c", Encoded::Backslash),
        ("%00", Encoded::Null),
        ("%3b", Encoded::Semicolon),
        ("%25", Encoded::Percent),
        ("%3F", Encoded::QuestionMark),
        ("%23", Encoded::Hash),
    ] {
        let path = format!("/admin{escape}x");
        assert_eq!(refused(&path), PathRejection::Encoded(encoded), "{path}");
        let mut policy = strict();
        policy.allow(encoded);
        let got = normalize(&path, &policy).unwrap();
        assert_eq!(got, format!("/admin{}x", escape.to_uppercase()));
    }
    // Double encoding is an encoded percent.
    assert_eq!(
        refused("/%2561dmin"),
        PathRejection::Encoded(Encoded::Percent)
    );
}

#[test]
fn malformed_and_climbing_paths_are_refused() {
    for path in ["/a%", "/a%2", "/a%zz", "/%u0061dmin", "/a%2g"] {
        assert_eq!(refused(path), PathRejection::BadEscape, "{path}");
    }
    for path in [
        "/..",
        "/../admin",
        "/a/../../admin",
        "/%2e%2e/admin",
        "/.%2E/x",
    ] {
        assert_eq!(refused(path), PathRejection::AboveRoot, "{path}");
    }
    assert_eq!(refused("*"), PathRejection::NotAbsolute);
    assert_eq!(refused(""), PathRejection::NotAbsolute);
    assert_eq!(refused("/a\\..\\admin"), PathRejection::Literal('\\'));
    assert_eq!(refused("/#/../admin"), PathRejection::Literal('#'));
}

#[test]
fn parameters_are_refused_or_stripped_from_every_segment() {
    assert_eq!(refused("/admin;x=1"), PathRejection::Parameter);
    assert_eq!(refused("/;/admin"), PathRejection::Parameter);
    let strip = PathPolicy {
        parameters: PathParameters::Strip,
        ..PathPolicy::default()
    };
    let n = |p: &str| normalize(p, &strip).unwrap().into_owned();
    assert_eq!(n("/admin;jsessionid=1"), "/admin");
    assert_eq!(n("/adm;x/in"), "/adm/in");
    assert_eq!(n("/x/..;/admin"), "/admin");
    assert_eq!(n("/x;a=%2F/../admin;b"), "/admin");
    assert_eq!(
        normalize("/..;/admin", &strip),
        Err(PathRejection::AboveRoot)
    );
}

#[test]
fn rejections_say_what_was_wrong_and_how_to_allow_it() {
    let text = PathRejection::Encoded(Encoded::Slash).to_string();
    assert!(text.contains("encoded slash (%2F)"), "{text}");
    let text = PathRejection::Encoded(Encoded::QuestionMark).to_string();
    assert!(text.contains("encoded question mark (%3F)"), "{text}");
    assert_eq!(
        Encoded::from_name("question_mark"),
        Some(Encoded::QuestionMark)
    );
}

// The property: whatever the path, either it is refused, or the route the
// proxy chooses for the path it forwards is the route an upstream that
// normalises (decodes every escape, drops `;` parameters, resolves dot
// segments and merges slashes) would serve for it. And normalising is
// idempotent: the forwarded path is its own normal form.

/// How a normalising upstream (nginx, a servlet container) reads a path:
/// every escape decoded, parameters stripped, dots resolved (clamped at the
/// root, as RFC 3986 does), slashes merged.
fn upstream_reading(path: &str) -> String {
    let mut bytes = Vec::new();
    let raw = path.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            let hex = std::str::from_utf8(&raw[i + 1..i + 3]).unwrap();
            bytes.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut kept: Vec<String> = Vec::new();
    let segments: Vec<&str> = text.split('/').skip(1).collect();
    for segment in &segments {
        let segment = segment.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s.to_string()),
        }
    }
    let last = segments.last().map(|s| s.split(';').next().unwrap_or(""));
    let slash = matches!(last, Some("" | "." | ".."));
    let mut out = format!("/{}", kept.join("/"));
    if slash && !kept.is_empty() {
        out.push('/');
    }
    out
}

fn table() -> RouteTable {
    let route = |name: &str, path: &str, path_type| RouteConfig {
        name: name.into(),
        host: None,
        path: path.into(),
        path_type,
        service: format!("{name}:80"),
        entrypoints: Vec::new(),
        middlewares: Vec::new(),
        conditions: Default::default(),
        actions: Default::default(),
    };
    RouteTable::new(
        &[
            route("open", "/", PathType::Prefix),
            route("admin", "/admin", PathType::Prefix),
            route("admin-api", "/admin/api", PathType::Prefix),
            route("login", "/login", PathType::Exact),
        ],
        None,
    )
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("admin".to_string()),
        Just("api".to_string()),
        Just("login".to_string()),
        Just("x".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%61dmin".to_string()),
        Just("adm%69n".to_string()),
        Just("a%20b".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("%25".to_string()),
        Just("%3b".to_string()),
        Just("%".to_string()),
        Just("admin;x=1".to_string()),
        Just(";".to_string()),
        Just("..;".to_string()),
        Just("\\".to_string()),
        "[a-z%.;~_-]{1,6}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 0..7).prop_map(|s| format!("/{}", s.join("/")))
}

fn policy() -> impl Strategy<Value = PathPolicy> {
    (any::<bool>(), any::<bool>()).prop_map(|(strip, allow_percent)| {
        let mut policy = PathPolicy {
            parameters: if strip {
                PathParameters::Strip
            } else {
                PathParameters::Reject
            },
            ..PathPolicy::default()
        };
        if allow_percent {
            // An allowed %25 stays %25: the upstream decodes it once to `%`.
            policy.allow(Encoded::Percent);
        }
        policy
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_routed_path_is_the_path_a_normalising_upstream_serves(
        raw in path(), policy in policy()
    ) {
        let table = table();
        if let Ok(forwarded) = normalize(&raw, &policy) {
            let again = normalize(&forwarded, &policy);
            prop_assert_eq!(again.as_deref(), Ok(forwarded.as_ref()), "not idempotent");
            let ours = table.find("web", None, &forwarded).map(|r| r.name.clone());
            let read = upstream_reading(&forwarded);
            let theirs = table.find("web", None, &read).map(|r| r.name.clone());
            prop_assert_eq!(
                &ours, &theirs,
                "{} forwarded as {}, which the upstream reads as {}", raw, forwarded, read
            );
        }
    }
}
