//! Strict reading of a Middleware's `spec` as JSON: every field is taken
//! by name, and whatever is left over when a kind has been read is an
//! error that names it. A field xdpgate does not know is never ignored:
//! ignoring it could mean a weaker policy than the one written.
use std::{collections::BTreeSet, time::Duration};

use serde_json::{Map, Value};

/// What is wrong, and the field it is wrong in (`spec.rateLimit.redis`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub fn error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

pub fn unsupported(field: &str) -> FieldError {
    error(
        field,
        "is not supported by xdpgate; the Middleware is refused rather than applied without it",
    )
}

/// An object's fields, consumed one by one.
pub struct Fields<'v> {
    path: String,
    map: Option<&'v Map<String, Value>>,
    taken: BTreeSet<&'static str>,
}

impl<'v> Fields<'v> {
    pub fn new(value: &'v Value, path: &str) -> Result<Self, FieldError> {
        let map = match value {
            Value::Object(map) => Some(map),
            Value::Null => None,
            _ => return Err(error(path, "must be an object")),
        };
        Ok(Fields {
            path: path.to_string(),
            map,
            taken: BTreeSet::new(),
        })
    }

    pub fn path(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    /// The field, `None` when absent or null.
    pub fn get(&mut self, name: &'static str) -> Option<&'v Value> {
        self.taken.insert(name);
        self.map?.get(name).filter(|v| !v.is_null())
    }

    pub fn text(&mut self, name: &'static str) -> Result<Option<&'v str>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(error(&self.path(name), "must be a string")),
        }
    }

    pub fn boolean(&mut self, name: &'static str) -> Result<bool, FieldError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(error(&self.path(name), "must be true or false")),
        }
    }

    pub fn integer(&mut self, name: &'static str) -> Result<Option<i64>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| error(&self.path(name), "must be a whole number")),
        }
    }

    pub fn strings(&mut self, name: &'static str) -> Result<Vec<String>, FieldError> {
        let path = self.path(name);
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(String::from)
                        .ok_or_else(|| error(&path, "must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(error(&path, "must be a list of strings")),
        }
    }

    /// `name: value` pairs, in name order.
    pub fn string_map(&mut self, name: &'static str) -> Result<Vec<(String, String)>, FieldError> {
        let path = self.path(name);
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(error(&format!("{path}.{k}"), "must be a string")),
                })
                .collect(),
            Some(_) => Err(error(&path, "must be a map of strings")),
        }
    }

    /// Fails on the first field that was not taken.
    pub fn finish(self) -> Result<(), FieldError> {
        let Some(map) = self.map else {
            return Ok(());
        };
        match map.keys().find(|k| !self.taken.contains(k.as_str())) {
            Some(extra) => Err(unsupported(&format!("{}.{extra}", self.path))),
            None => Ok(()),
        }
    }
}

/// A Traefik duration: a whole number of seconds, or Go's syntax
/// (`1m`, `1m30s`, `500ms`, `1.5h`).
pub fn duration(value: &Value, field: &str) -> Result<Duration, FieldError> {
    let bad = || {
        error(
            field,
            "must be seconds (60) or a duration like 1m, 1m30s, 500ms",
        )
    };
    if let Some(seconds) = value.as_u64() {
        return Ok(Duration::from_secs(seconds));
    }
    let text = value.as_str().ok_or_else(bad)?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * nanos;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 1e18 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn durations_read_as_traefik_reads_them() {
        let d = |v: Value| duration(&v, "spec.rateLimit.period");
        assert_eq!(d(json!(60)), Ok(Duration::from_secs(60)));
        assert_eq!(d(json!("60")), Ok(Duration::from_secs(60)));
        assert_eq!(d(json!("1m")), Ok(Duration::from_secs(60)));
        assert_eq!(d(json!("1m30s")), Ok(Duration::from_secs(90)));
        assert_eq!(d(json!("500ms")), Ok(Duration::from_millis(500)));
        assert_eq!(d(json!("1.5h")), Ok(Duration::from_secs(5400)));
        for bad in [json!("1 minute"), json!("m"), json!(""), json!(true)] {
            let e = d(bad.clone()).unwrap_err();
            assert_eq!(e.field, "spec.rateLimit.period", "{bad}");
        }
    }

    #[test]
    fn a_field_left_over_is_named() {
        let spec = json!({ "average": 5, "redis": {} });
        let mut fields = Fields::new(&spec, "spec.rateLimit").unwrap();
        assert_eq!(fields.integer("average"), Ok(Some(5)));
        let e = fields.finish().unwrap_err();
        assert_eq!(e.field, "spec.rateLimit.redis");
    }
}
