//! The shared store of a `rate_limit` (`store: { redis: ... }`): the same
//! GCRA as the local limiter (governor's: emission interval `t`, tolerance
//! `tau = t * (burst - 1)`), kept in Redis or Valkey so that every node
//! spends one budget. One Lua script per request reads the client's
//! theoretical arrival time, decides and writes it back atomically, taking
//! the time from the server's `TIME`, so the nodes' clocks do not matter.
//! The script is sent by hash (`EVALSHA`) and loaded again when the server
//! answers `NOSCRIPT` (the redis crate's `Script`).
//!
//! Each request gets `timeout` for the answer; the caller applies
//! `on_error` when it is not there. Connections are a small pool
//! ([`StorePool`]) of multiplexed, self-reconnecting `ConnectionManager`s,
//! so a restarted store is used again without a reload. A request that
//! finds its connection broken (the store restarted, or was down when the
//! connection was last tried) tries once more on the fresh connection the
//! manager has begun, within the same budget: after the store returns, no
//! request takes the fallback. Connection attempts are made when requests
//! need them, never retried after a pause, so no request waits out a
//! back-off. Username and password come from files and go nowhere else
//! (not into logs, errors or labels).
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use redis::{
    aio::ConnectionManagerConfig, Client, ConnectionAddr, ErrorKind, IntoConnectionInfo as _,
    RedisConnectionInfo, RedisError, Script, ServerErrorKind,
};

use super::{rate_limit_store_pool::StorePool, RateLimitConfig, RedisStoreConfig, StoreFallback};

/// KEYS[1]: the client's key. ARGV[1]: `t`, ARGV[2]: `tau`, in
/// microseconds. Returns `{1, 0}` to allow, `{0, wait_us}` to refuse.
/// Numbers are formatted with `%.0f`: microseconds since the epoch have 16
/// digits, more than Lua's default `tostring` keeps.
const GCRA: &str = r"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local earliest = tat - tau
if now < earliest then
  return {0, earliest - now}
end
if tat < now then tat = now end
local next = tat + t
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1000)
return {1, 0}
";

/// The store's answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refused; the client may try again after this long.
    Deny(Duration),
}

pub struct RedisLimit {
    pool: StorePool,
    script: Script,
    key_prefix: String,
    t_micros: u64,
    tau_micros: u64,
    timeout: Duration,
    pub on_error: StoreFallback,
    /// Whether the last request failed, so a failing store is logged once
    /// when it starts failing and once when it is back, not per request.
    failing: AtomicBool,
    /// Why the store failed when that was last logged: a new reason is
    /// logged too (refused connections that become refused credentials).
    reason: Mutex<String>,
    address: String,
    /// The middleware's name, for the log.
    middleware: String,
}

impl RedisLimit {
    /// Reads the credential files and prepares the pool; connecting
    /// happens on first use (a store that is down at start is a fallback,
    /// not a failed start).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(
        middleware: &str,
        limit: &RateLimitConfig,
        store: &RedisStoreConfig,
    ) -> Result<RedisLimit> {
        let client = client(store)?;
        // One attempt per connection: the requests that need a connection
        // drive the attempts, so none waits out the manager's back-off.
        let connections = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(store.timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(store.timeout.max(Duration::from_millis(250))))
            .set_number_of_retries(0);
        let pool = StorePool::new(client, connections, store.pool)
            .with_context(|| format!("preparing connections to {}", store.address))?;
        let t = limit.period / limit.average.max(1);
        let t_micros = u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1);
        Ok(RedisLimit {
            pool,
            script: Script::new(GCRA),
            key_prefix: store.key_prefix.clone(),
            t_micros,
            tau_micros: t_micros.saturating_mul(u64::from(limit.burst.max(1) - 1)),
            timeout: store.timeout,
            on_error: store.on_error,
            failing: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            address: store.address.clone(),
            middleware: middleware.to_string(),
        })
    }

    /// Asks the store about one request of `client` (already grouped by
    /// prefix). `Err` says why there is no answer within the budget.
    pub async fn check(&self, client: IpAddr) -> Result<Verdict, String> {
        let (slot, mut connection) = self.pool.take();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}{client}", self.key_prefix))
            .arg(self.t_micros)
            .arg(self.tau_micros);
        let asked = async {
            match invocation.invoke_async::<(i64, i64)>(&mut connection).await {
                // The manager has begun a new connection by now; the
                // script had not run, or ran on a connection that died
                // before it answered (then this request counts twice:
                // the error is on the strict side).
                Err(error) if is_connection_error(&error) => {
                    invocation.invoke_async(&mut connection).await
                }
                other => other,
            }
        };
        let outcome = match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok((1, _))) => Ok(Verdict::Allow),
            Ok(Ok((_, wait))) => Ok(Verdict::Deny(Duration::from_micros(
                u64::try_from(wait).unwrap_or(0),
            ))),
            Ok(Err(error)) => {
                if !is_connection_error(&error) && !error.is_timeout() {
                    // The manager reconnects only after I/O errors.
                    self.pool.renew(slot);
                }
                Err(describe(&error))
            }
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        self.note(&outcome);
        outcome
    }

    fn note(&self, outcome: &Result<Verdict, String>) {
        let Err(why) = outcome else {
            if self.failing.swap(false, Ordering::Relaxed) {
                if let Ok(mut reason) = self.reason.lock() {
                    reason.clear();
                }
                tracing::info!(
                    middleware = %self.middleware,
                    store = %self.address,
                    "the rate limit store answers again"
                );
            }
            return;
        };
        self.failing.store(true, Ordering::Relaxed);
        let Ok(mut reason) = self.reason.lock() else {
            return;
        };
        if *reason == *why {
            return;
        }
        why.clone_into(&mut reason);
        tracing::warn!(
            middleware = %self.middleware,
            store = %self.address,
            fallback = self.on_error.label(),
            "the rate limit store does not answer ({why}); requests get the fallback \
             until it does"
        );
    }
}

/// A connection that broke or could not be made, as opposed to an answer
/// the store gave (refused credentials, a script error) or a budget spent.
fn is_connection_error(error: &RedisError) -> bool {
    !error.is_timeout()
        && (error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal())
}

/// What went wrong, for the log: the kind of error, with the I/O or TLS
/// error's own text where there is one, never a server reply's text (which
/// may echo the command).
fn describe(error: &RedisError) -> String {
    if error.is_timeout() {
        return "timeout".to_string();
    }
    if error.is_connection_refusal() {
        return "connection refused".to_string();
    }
    match error.kind() {
        ErrorKind::AuthenticationFailed => "authentication failed: the store refused the \
            username and password read from username_file and password_file"
            .to_string(),
        ErrorKind::Server(ServerErrorKind::NoPerm) => "permission denied (NOPERM): the store's \
            user may not run EVALSHA, EVAL and SCRIPT LOAD on the key prefix"
            .to_string(),
        // The I/O error's own text: "invalid peer certificate:
        // UnknownIssuer" names a TLS problem.
        ErrorKind::Io if is_tls_failure(error) => format!("TLS handshake failed: {error}"),
        ErrorKind::Io => format!("connection lost: {error}"),
        kind => match error.code() {
            Some(code) => format!("{kind:?} ({code})"),
            None => format!("{kind:?}"),
        },
    }
}

/// Whether rustls is behind `error`: its errors come as I/O errors, which
/// the redis crate keeps behind an `Arc`.
fn is_tls_failure(error: &RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let Some(source) = std::error::Error::source(error) else {
        return false;
    };
    let source = match source.downcast_ref::<Shared>() {
        Some(shared) => &**shared as &(dyn std::error::Error + 'static),
        None => source,
    };
    source
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

fn client(store: &RedisStoreConfig) -> Result<Client> {
    let Some((host, port)) = store.address.rsplit_once(':') else {
        bail!("`{}` is not host:port", store.address);
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port: u16 = port
        .parse()
        .with_context(|| format!("`{port}` in `{}` is not a port", store.address))?;
    let mut settings = RedisConnectionInfo::default().set_db(store.db);
    if let Some(file) = &store.username_file {
        settings = settings.set_username(secret(file, "username")?);
    }
    if let Some(file) = &store.password_file {
        settings = settings.set_password(secret(file, "password")?);
    }
    let Some(tls) = &store.tls else {
        let info = ConnectionAddr::Tcp(host, port).into_connection_info()?;
        return Ok(Client::open(info.set_redis_settings(settings))?);
    };
    let addr = ConnectionAddr::TcpTls {
        host,
        port,
        insecure: false,
        tls_params: None,
    };
    let info = addr.into_connection_info()?.set_redis_settings(settings);
    let root_cert = match &tls.ca {
        Some(ca) => Some(
            std::fs::read(ca)
                .with_context(|| format!("reading the store's CA {}", ca.display()))?,
        ),
        None => None,
    };
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert,
    };
    Client::build_with_tls(info, certificates).context("the store's TLS settings")
}

/// A credential file's first line. The error names the file, never what
/// is in it.
fn secret(file: &std::path::Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the store's {what} file {}", file.display()))?;
    let value = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if value.is_empty() {
        bail!("the store's {what} file {} is empty", file.display());
    }
    Ok(value.to_string())
}
