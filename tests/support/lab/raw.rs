//! Requests the lab's well-behaved clients cannot send: exact bytes written
//! on a TCP or TLS connection to an entrypoint (a path with a backslash, a
//! request with two framings and a second one smuggled behind it, a head
//! trickled byte by byte), the answer read until the server closes the
//! connection; and Python's `h2` (see `h2_client.py`) for the same on
//! HTTP/2, run from the client namespace.
use std::{
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{
    client::Client,
    net::{server_addr, Tool},
    proxy::{ProxyLab, PLAIN_PORT, TLS_PORT},
};

/// What came back on a raw connection.
#[derive(Clone, Debug)]
pub struct RawReply {
    /// Every byte read.
    pub bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) before the wait ended.
    pub closed: bool,
    /// From the first byte written to the close (or to the end of the wait).
    pub took: Duration,
}

impl RawReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status codes of every response in the bytes, in order: each
    /// head is read, then its body skipped by its `content-length` or
    /// chunks (a body that runs to the close ends the list).
    pub fn statuses(&self) -> Vec<u16> {
        let mut statuses = Vec::new();
        let mut rest = &self.bytes[..];
        while let Some(end) = find(rest, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&rest[..end]).into_owned();
            rest = &rest[end + 4..];
            let Some(code) = head
                .strip_prefix("HTTP/1.")
                .and_then(|line| line.get(2..5))
                .and_then(|c| c.parse::<u16>().ok())
            else {
                break;
            };
            statuses.push(code);
            let header = |name: &str| {
                head.lines().skip(1).find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_ascii_lowercase())
                })
            };
            if code == 101 {
                break;
            }
            if (100..200).contains(&code) || code == 204 || code == 304 {
                continue;
            }
            if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
                match skip_chunks(rest) {
                    Some(after) => rest = after,
                    None => break,
                }
            } else if let Some(length) = header("content-length").and_then(|l| l.parse().ok()) {
                rest = rest.get(length..).unwrap_or_default();
            } else {
                break;
            }
        }
        statuses
    }

    /// The first response's status (0 if none came).
    pub fn status(&self) -> u16 {
        self.statuses().first().copied().unwrap_or(0)
    }

    /// A header of the first response (the first line with that name).
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    /// The first response's body: its `content-length` bytes, de-chunked
    /// if it was chunked, or everything up to the close.
    pub fn body(&self) -> String {
        let text = self.text();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return String::new();
        };
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        if !chunked {
            let length = self.header("content-length").and_then(|l| l.parse().ok());
            return match length {
                Some(length) => body.get(..length).unwrap_or(body).to_string(),
                None => body.to_string(),
            };
        }
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            else {
                break;
            };
            if size == 0 || after.len() < size {
                break;
            }
            out.push_str(&after[..size]);
            rest = after.get(size + 2..).unwrap_or("");
        }
        out
    }

    /// The first response's body as JSON (the echo backend's report).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The bytes after a chunked body (and its empty trailer section).
fn skip_chunks(mut rest: &[u8]) -> Option<&[u8]> {
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            let end = find(rest, b"\r\n")?;
            return Some(&rest[end + 2..]);
        }
        rest = rest.get(size + 2..)?;
    }
}

/// Writes `parts` one after another on a new connection from `source` to
/// the plain (`tls` false) or TLS entrypoint, sleeping `gap` between them,
/// then reads until the server closes or `wait` has passed since the first
/// write.
pub fn raw_exchange(
    client: &Client,
    source: IpAddr,
    tls: bool,
    parts: &[&[u8]],
    gap: Duration,
    wait: Duration,
) -> io::Result<RawReply> {
    client.block_on(async {
        let port = if tls { TLS_PORT } else { PLAIN_PORT };
        let tcp = client.connect(source, port).await?;
        if tls {
            let stream = client.tls_stream(tcp, "localhost", &[b"http/1.1"]).await?;
            talk(stream, parts, gap, wait).await
        } else {
            talk(tcp, parts, gap, wait).await
        }
    })
}

/// As [`raw_exchange`] with the whole request written at once; for a
/// request that says `Connection: close` or one the server must refuse.
pub fn raw_request(
    client: &Client,
    source: IpAddr,
    tls: bool,
    request: &[u8],
    wait: Duration,
) -> io::Result<RawReply> {
    raw_exchange(client, source, tls, &[request], Duration::ZERO, wait)
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    parts: &[&[u8]],
    gap: Duration,
    wait: Duration,
) -> io::Result<RawReply> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            // Whatever the server says meanwhile is kept; a close ends it.
            let pause = tokio::time::Instant::now() + gap;
            loop {
                match tokio::time::timeout_at(pause, stream.read(&mut buf)).await {
                    Err(_) => break,
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        return Ok(RawReply {
                            bytes,
                            closed: true,
                            took: started.elapsed(),
                        })
                    }
                    Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
                }
            }
        }
        if stream.write_all(part).await.is_err() {
            return Ok(RawReply {
                bytes,
                closed: true,
                took: started.elapsed(),
            });
        }
        stream.flush().await?;
    }
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                return Ok(RawReply {
                    bytes,
                    closed: false,
                    took: started.elapsed(),
                })
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ok(RawReply {
                    bytes,
                    closed: true,
                    took: started.elapsed(),
                })
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// The venv `cargo xtask setup` makes, `${XDG_CACHE_HOME:-$HOME/.cache}/xdpgate/venv`.
fn venv_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(cache.join("xdpgate").join("venv"))
}

/// The venv's Python if it has `h2`; otherwise prints what is missing and
/// how to get it.
pub fn python_h2_ready(test: &str) -> Option<PathBuf> {
    let Some(python) = venv_dir().map(|v| v.join("bin").join("python")) else {
        println!("SKIP {test}: neither XDG_CACHE_HOME nor HOME is set, so there is no venv");
        return None;
    };
    let has_h2 = std::process::Command::new(&python)
        .args(["-c", "import h2"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_h2 {
        println!(
            "SKIP {test}: Python's h2 is not installed in {} (cargo xtask setup, \
             or {} -m pip install h2)",
            python.display(),
            python.display()
        );
        return None;
    }
    Some(python)
}

/// Runs `h2_client.py` with `plan` from the client namespace (the plan's
/// `host`, `port`, `source`, `ca` and `tls` are filled in from `source` and
/// `tls` unless given) and returns its JSON report.
pub fn h2py(
    proxy: &ProxyLab,
    python: &Path,
    source: IpAddr,
    tls: bool,
    mut plan: Value,
    timeout: Duration,
) -> Value {
    let script = proxy
        .work
        .write("h2_client.py", include_str!("h2_client.py"));
    let port = if tls { TLS_PORT } else { PLAIN_PORT };
    let defaults = serde_json::json!({
        "host": server_addr(source, port).ip().to_string(),
        "port": port,
        "source": source.to_string(),
        "ca": proxy.pki.ca_file.display().to_string(),
        "tls": tls,
        "sni": "localhost",
    });
    for (key, value) in defaults.as_object().expect("an object") {
        if plan.get(key).is_none() {
            plan[key] = value.clone();
        }
    }
    let plan_text = plan.to_string();
    let python_arg = python.display().to_string();
    let script_arg = script.display().to_string();
    let out = Tool::spawn(
        &proxy.lab.client_ns,
        &python_arg,
        &[script_arg.as_str(), plan_text.as_str()],
    )
    .wait(timeout);
    assert!(
        out.status.success(),
        "h2_client.py {plan_text} failed: {}{}",
        out.stdout,
        out.stderr
    );
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("h2_client.py printed no JSON ({e}): {}", out.stdout))
}

/// The status of one plain `GET /` with `Host: host` to 127.0.0.1:`port`,
/// in the calling thread's namespace; 0 when there is no answer.
pub fn loopback_status(port: u16, host: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}
