//! `rate_limit.store`: where a cluster-wide rate limit keeps its state
//! (Traefik 3.4's `rateLimit.redis`). Only the shape is checked here; the
//! credential and CA files are read when the limit is built, so a reload
//! picks up a rotated password.
use super::{entrypoints::count, targets::target};
use crate::{
    config::{
        values::{duration, file_path, suggest},
        yaml::Val,
        ConfigError,
    },
    proxy::{RedisStoreConfig, RedisTlsConfig, StoreFallback},
};

/// A budget longer than this would hold every request that long whenever
/// the store is down; the fallback exists so that it does not.
const MAX_TIMEOUT_MS: u128 = 1_000;

/// `store: { redis: { ... } }`; `store: local` (or no `store`) is `None`.
pub(super) fn read_store(
    v: Val,
    path: &str,
    middleware: &str,
) -> Result<Option<RedisStoreConfig>, ConfigError> {
    if let Ok(text) = v.text(path, "") {
        if text.trim() == "local" {
            return Ok(None);
        }
    }
    let table = v.table(path, &["redis"])?;
    let Some(redis) = table.get("redis") else {
        return Err(v.error(
            path,
            "`store` needs `redis`, e.g. `store: { redis: { address: \"redis.infra:6379\" } }`, \
             or `store: local`",
        ));
    };
    read_redis(redis, &table.key_path("redis"), middleware).map(Some)
}

fn read_redis(v: Val, path: &str, middleware: &str) -> Result<RedisStoreConfig, ConfigError> {
    // Traefik takes these inline; here a secret never sits in the config.
    if let crate::config::yaml::Value::Map(entries) = &v.node.value {
        if let Some(entry) = entries
            .iter()
            .find(|e| e.key == "password" || e.key == "username")
        {
            return Err(ConfigError::new(
                &crate::config::yaml::join(path, &entry.key),
                Some(entry.key_line),
                format!(
                    "the store's {0} is read from a file: write `{0}_file: /path/to/file` \
                     (a secret never sits in the config)",
                    entry.key
                ),
            ));
        }
    }
    let table = v.table(
        path,
        &[
            "address",
            "tls",
            "username_file",
            "password_file",
            "db",
            "timeout",
            "on_error",
            "pool",
            "key_prefix",
        ],
    )?;
    let Some(address) = table.get("address") else {
        return Err(v.error(path, "the store has no `address`: give host:port"));
    };
    let address_path = table.key_path("address");
    let text = address.text(&address_path, "host:port")?;
    let mut store = RedisStoreConfig {
        address: target(text).map_err(|message| address.error(&address_path, message))?,
        tls: None,
        username_file: None,
        password_file: None,
        db: 0,
        timeout: std::time::Duration::from_millis(20),
        on_error: StoreFallback::Local,
        pool: 4,
        key_prefix: format!("xdpgate:rate_limit:{middleware}:"),
    };
    if let Some(v) = table.get("tls") {
        let path = table.key_path("tls");
        let tls = v.table(&path, &["ca"])?;
        store.tls = Some(RedisTlsConfig {
            ca: match tls.get("ca") {
                Some(v) => Some(file_path(v, &tls.key_path("ca"))?),
                None => None,
            },
        });
    }
    if let Some(v) = table.get("username_file") {
        store.username_file = Some(file_path(v, &table.key_path("username_file"))?);
    }
    if let Some(v) = table.get("password_file") {
        store.password_file = Some(file_path(v, &table.key_path("password_file"))?);
    }
    if let Some(v) = table.get("db") {
        store.db = count(v, &table.key_path("db"), 0, 1024)? as i64;
    }
    if let Some(v) = table.get("timeout") {
        let path = table.key_path("timeout");
        store.timeout = duration(v, &path)?;
        if store.timeout.is_zero() || store.timeout.as_millis() > MAX_TIMEOUT_MS {
            return Err(v.error(
                &path,
                format!(
                    "a store timeout of {:?} is out of range: give 1ms-1s (every request waits \
                     up to this long when the store is down)",
                    store.timeout
                ),
            ));
        }
    }
    if let Some(v) = table.get("on_error") {
        let path = table.key_path("on_error");
        let text = v.text(&path, "local, allow or deny")?.trim();
        store.on_error = match text {
            "local" => StoreFallback::Local,
            "allow" => StoreFallback::Allow,
            "deny" => StoreFallback::Deny,
            other => {
                return Err(v.error(
                    &path,
                    format!(
                        "`{other}` is not a fallback: use local (this node's own limit), allow \
                         or deny{}",
                        suggest(other, &["local", "allow", "deny"])
                    ),
                ))
            }
        };
    }
    if let Some(v) = table.get("pool") {
        store.pool = count(v, &table.key_path("pool"), 1, 64)?;
    }
    if let Some(v) = table.get("key_prefix") {
        let path = table.key_path("key_prefix");
        let text = v.text(&path, "a key prefix")?;
        if text.is_empty() || text.len() > 128 || text.chars().any(char::is_control) {
            return Err(v.error(
                &path,
                "a key prefix is 1-128 characters without control characters",
            ));
        }
        store.key_prefix = text.to_string();
    }
    Ok(store)
}
