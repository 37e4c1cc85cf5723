//! The value readers that every section of the config shares: paths,
//! durations, booleans, names and the "did you mean" hint. They sit apart
//! from [`super::read`] (the top of the schema) so that the `proxy:` section's
//! reader can use them without importing the module that imports it.
use std::{path::PathBuf, time::Duration};

use super::{
    yaml::{closest_name, Val},
    ConfigError,
};

/// A name (of a set, an entrypoint, a service, a route) becomes a metric
/// label value, and a set's name a file name.
pub(crate) const MAX_NAME: usize = 64;

/// 1-[`MAX_NAME`] letters, digits, `_`, `-` or `.`, and not `.` or `..`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub(in crate::config) fn file_path(v: Val, path: &str) -> Result<PathBuf, ConfigError> {
    let text = v.text(path, "a path")?;
    if text.trim().is_empty() {
        return Err(v.error(path, "the path is empty"));
    }
    Ok(PathBuf::from(text))
}

pub(in crate::config) fn duration(v: Val, path: &str) -> Result<Duration, ConfigError> {
    let text = v.text(path, "a duration like 500ms or 6h")?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        v.error(
            path,
            format!("`{text}` is not a duration like 500ms, 30s or 6h: {e}"),
        )
    })
}

pub(in crate::config) fn boolean(v: Val, path: &str) -> Result<bool, ConfigError> {
    match v.text(path, "true or false")? {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        other => Err(v.error(path, format!("`{other}` is not true or false"))),
    }
}

/// ` (did you mean `x`?)` when `wanted` looks like a typo of one of `known`.
pub(in crate::config) fn suggest(wanted: &str, known: &[&str]) -> String {
    closest_name(wanted, known.iter().copied())
        .map(|near| format!(" (did you mean `{near}`?)"))
        .unwrap_or_default()
}
