//! `basic_auth`: HTTP Basic authentication against an htpasswd file, re-read
//! when it changes on disk (a Kubernetes Secret update swaps the file). A
//! new file that cannot be read or parsed keeps the users read before. A
//! missing or wrong password gets 401 with `WWW-Authenticate`. Neither the
//! password, its hash, nor the `Authorization` value is ever logged; the
//! header is removed before forwarding when `remove_header` is set.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use anyhow::{anyhow, Context as _, Result};
use arc_swap::ArcSwap;
use base64::{engine::general_purpose::STANDARD, Engine as _};
use hyper::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    Request, StatusCode,
};

use super::{htpasswd::Users, stack::Middleware, BasicAuthConfig};
use crate::proxy::{request::ProxyError, upstream::ProxyBody};

/// The file's identity and contents' age: a change of any means "re-read".
type Stamp = (u64, u64, SystemTime, u64);

pub struct BasicAuth {
    path: PathBuf,
    users: ArcSwap<Users>,
    stamp: Mutex<Option<Stamp>>,
    challenge: HeaderValue,
    remove_header: bool,
    /// The users came with the configuration: there is no file to re-read.
    inline: bool,
    user_header: Option<HeaderName>,
}

impl BasicAuth {
    /// Reads the file; a file that cannot be used refuses the configuration.
    pub fn load(name: &str, config: &BasicAuthConfig) -> Result<Self> {
        let (users, stamp) = match &config.users {
            Some(inline) => {
                let users = Users::parse(&inline.0)
                    .map_err(|why| anyhow!("the users of middleware `{name}`: {why}"))?;
                tracing::info!(middleware = %name, "{} users from its Secret", users.len());
                (users, None)
            }
            None => {
                let stamp = stamp(&config.users_file);
                let users = read_users(&config.users_file)?;
                tracing::info!(
                    middleware = %name,
                    "{} users read from {}",
                    users.len(),
                    config.users_file.display()
                );
                (users, stamp)
            }
        };
        let user_header = config
            .user_header
            .as_deref()
            .map(|h| HeaderName::from_bytes(h.as_bytes()))
            .transpose()
            .context("the user header is not a header name")?;
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", config.realm))
            .context("the realm cannot be put in a header")?;
        Ok(BasicAuth {
            path: config.users_file.clone(),
            users: ArcSwap::from_pointee(users),
            stamp: Mutex::new(stamp),
            challenge,
            remove_header: config.remove_header,
            inline: config.users.is_some(),
            user_header,
        })
    }

    /// Re-reads the file if it changed since the last look. `Err`: it
    /// changed but cannot be used (the old users stay).
    pub fn reload_if_changed(&self) -> Result<()> {
        if self.inline {
            return Ok(());
        }
        let now = stamp(&self.path);
        {
            let mut seen = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return Ok(());
            }
            // Recorded even when the new file is bad: it is reported once,
            // and read again when it changes again.
            *seen = now;
        }
        let users = read_users(&self.path)?;
        tracing::info!(
            "{} users read from {} (it changed)",
            users.len(),
            self.path.display()
        );
        self.users.store(Arc::new(users));
        Ok(())
    }

    /// `Err` is the 401 answer.
    pub async fn check(&self, headers: &mut HeaderMap) -> Result<(), ProxyError> {
        let Some((user, password)) = credentials(headers) else {
            return Err(self.challenge());
        };
        let users = self.users.load_full();
        // bcrypt is slow on purpose; keep it off the threads that serve
        // connections.
        let who = user.clone();
        let verified = tokio::task::spawn_blocking(move || users.verify(&who, &password))
            .await
            .unwrap_or(false);
        if !verified {
            return Err(self.challenge());
        }
        if self.remove_header {
            headers.remove(header::AUTHORIZATION);
        }
        if let Some(name) = &self.user_header {
            match HeaderValue::from_str(&user) {
                Ok(value) => {
                    headers.insert(name.clone(), value);
                }
                // A user name that cannot be a header value must not
                // reach the upstream as someone else's.
                Err(_) => {
                    headers.remove(name);
                }
            }
        }
        Ok(())
    }

    fn challenge(&self) -> ProxyError {
        ProxyError::policy(StatusCode::UNAUTHORIZED, "basic_auth", "unauthorized")
            .with_header(header::WWW_AUTHENTICATE, self.challenge.clone())
    }
}

impl Middleware for BasicAuth {
    async fn request(&self, request: &mut Request<ProxyBody>) -> Result<(), ProxyError> {
        self.check(request.headers_mut()).await
    }
}

fn read_users(path: &Path) -> Result<Users> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the htpasswd file {}", path.display()))?;
    Users::parse(&text).map_err(|why| anyhow!("htpasswd file {}: {why}", path.display()))
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.modified().ok()?, meta.len()))
}

/// User and password from `Authorization: Basic ...`.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(dir: &Path, remove_header: bool) -> BasicAuth {
        let config = BasicAuthConfig {
            users_file: dir.join("htpasswd"),
            users: None,
            user_header: None,
            realm: "admin area".into(),
            remove_header,
        };
        BasicAuth::load("adminauth", &config).unwrap()
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[tokio::test]
    async fn challenges_then_admits_and_strips_the_header() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("htpasswd"),
            "bob:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\n",
        )
        .unwrap();
        let keep = auth(dir.path(), false);
        let refused = keep
            .check(&mut HeaderMap::new())
            .await
            .err()
            .unwrap()
            .into_response();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"admin area\""
        );
        for wrong in [
            basic("bob:hunter3"),
            basic("bob"),
            "Bearer x".into(),
            "Basic !!".into(),
        ] {
            assert!(keep.check(&mut with_auth(&wrong)).await.is_err(), "{wrong}");
        }
        let mut headers = with_auth(&basic("bob:hunter2"));
        assert!(keep.check(&mut headers).await.is_ok());
        assert!(headers.contains_key(header::AUTHORIZATION));

        let strip = auth(dir.path(), true);
        let mut headers = with_auth(&basic("bob:hunter2"));
        assert!(strip.check(&mut headers).await.is_ok());
        assert!(!headers.contains_key(header::AUTHORIZATION));
    }

    #[tokio::test]
    async fn a_changed_file_is_reread_and_a_bad_one_keeps_the_old_users() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, "bob:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\n").unwrap();
        let auth = auth(dir.path(), false);
        // Same size, other content and inode: carol replaces bob.
        std::fs::write(
            dir.path().join("next"),
            "carol:$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1\n",
        )
        .unwrap();
        std::fs::rename(dir.path().join("next"), &file).unwrap();
        auth.reload_if_changed().unwrap();
        assert!(auth
            .check(&mut with_auth(&basic("carol:password")))
            .await
            .is_ok());
        assert!(auth
            .check(&mut with_auth(&basic("bob:hunter2")))
            .await
            .is_err());

        std::fs::write(&file, "dave:secretplain\n").unwrap();
        let error = format!("{:#}", auth.reload_if_changed().err().unwrap());
        assert!(error.contains("line 1"), "{error}");
        assert!(!error.contains("secretplain"), "{error}");
        assert!(auth
            .check(&mut with_auth(&basic("carol:password")))
            .await
            .is_ok());
        // Reported once, not at every look.
        assert!(auth.reload_if_changed().is_ok());
    }
}
