//! `xdpgate config check`: validates a config file exactly as `run` would
//! and says what it holds, or what is wrong and where.
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{print_json, Exit};
use crate::config;

pub(super) fn config_check(file: &Path, json: bool) -> Result<Exit> {
    match config::load(file) {
        Ok(config) => {
            let interfaces = if config.filter.interfaces.is_empty() {
                "the default-route interface".to_string()
            } else {
                config.filter.interfaces.join(", ")
            };
            if json {
                print_json(&json!({"file": file.display().to_string(), "valid": true}));
            } else {
                let proxy = config
                    .proxy
                    .as_ref()
                    .map(|p| {
                        format!(
                            "; proxy: {} entrypoints, {} routes, {} services",
                            p.entrypoints.len(),
                            p.routes.len(),
                            p.services.len()
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{}: ok ({} sets, {} allow rules, {} denied sets, on {interfaces}{proxy})",
                    file.display(),
                    config.filter.sets.len(),
                    config.filter.allow.len(),
                    config.filter.deny.len(),
                );
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            if json {
                print_json(&json!({
                    "file": file.display().to_string(), "valid": false, "error": e.to_string(),
                    "line": e.line, "key": e.key,
                }));
            } else {
                eprintln!("xdpgate: {e}");
            }
            Ok(Exit::BadConfig)
        }
    }
}
