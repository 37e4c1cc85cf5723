//! An entrypoint's request policy: `path` (the request-path rules applied
//! before routing), `underscore_headers` and `upgrades`. Defaults are the
//! safe ones; each key loosens one rule, and `h2c` can never be listed.
use super::{super::yaml::Table, unknown};
use crate::{
    config::{yaml::Val, ConfigError},
    proxy::{Encoded, PathParameters, PathPolicy, RequestPolicy, UnderscoreHeaders},
};

pub(super) fn read_request_policy(entrypoint: &Table) -> Result<RequestPolicy, ConfigError> {
    let mut policy = RequestPolicy::default();
    if let Some(v) = entrypoint.get("path") {
        policy.path = read_path(v, &entrypoint.key_path("path"))?;
    }
    if let Some(v) = entrypoint.get("underscore_headers") {
        let path = entrypoint.key_path("underscore_headers");
        policy.underscore_headers = match v.text(&path, "keep, drop or reject")?.trim() {
            "keep" => UnderscoreHeaders::Keep,
            "drop" => UnderscoreHeaders::Drop,
            "reject" => UnderscoreHeaders::Reject,
            other => {
                return Err(v.error(
                    &path,
                    format!(
                        "`{other}` is not a choice here: use drop (the default: such headers \
                         are removed), reject (400) or keep"
                    ),
                ))
            }
        };
    }
    if let Some(v) = entrypoint.get("upgrades") {
        policy.upgrades = read_upgrades(v, &entrypoint.key_path("upgrades"))?;
    }
    Ok(policy)
}

fn read_path(v: Val, path: &str) -> Result<PathPolicy, ConfigError> {
    let table = v.table(path, &["allow_encoded", "parameters"])?;
    let mut policy = PathPolicy::default();
    if let Some(v) = table.get("allow_encoded") {
        let example = "[slash, percent]";
        for (item_path, item) in v.list(&table.key_path("allow_encoded"), example)? {
            let name = item.text(&item_path, "an encoded character's name")?.trim();
            let Some(encoded) = Encoded::from_name(name) else {
                return Err(item.error(
                    &item_path,
                    unknown(
                        "encoded character",
                        name,
                        Encoded::ALL.iter().map(|e| e.name()),
                        "use slash, backslash, null, semicolon, percent, question_mark or hash",
                    ),
                ));
            };
            policy.allow(encoded);
        }
    }
    if let Some(v) = table.get("parameters") {
        let path = table.key_path("parameters");
        policy.parameters = match v.text(&path, "reject or strip")?.trim() {
            "reject" => PathParameters::Reject,
            "strip" => PathParameters::Strip,
            other => {
                return Err(v.error(
                    &path,
                    format!(
                        "`{other}` is not a choice here: use reject (the default: 400 for a `;` \
                         in the path) or strip (remove `;...` from every segment)"
                    ),
                ))
            }
        };
    }
    Ok(policy)
}

fn read_upgrades(v: Val, path: &str) -> Result<Vec<String>, ConfigError> {
    let mut upgrades = Vec::new();
    for (item_path, item) in v.list(path, "[websocket]")? {
        let name = item.text(&item_path, "a protocol name")?.trim();
        if name.eq_ignore_ascii_case("h2c") {
            return Err(item.error(
                &item_path,
                "h2c cannot be forwarded as an upgrade: the HTTP/2 requests inside it would \
                 reach the upstream without routing or middlewares",
            ));
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(item.error(
                &item_path,
                format!("`{name}` is not a protocol name like websocket"),
            ));
        }
        upgrades.push(name.to_ascii_lowercase());
    }
    Ok(upgrades)
}
