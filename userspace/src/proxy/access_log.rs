//! The access log: one JSON object per request, written when the response
//! body ends, with the fields Traefik's JSON access log users rely on
//! (client IP, method, host, path, status, duration, router, service,
//! upstream address, TLS version, bytes). It never contains credentials:
//! no header values are logged except the User-Agent.
use std::{
    fs::{File, OpenOptions},
    io::{LineWriter, Write as _},
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::json;

/// What is known about a request by the time its response ends.
#[derive(Clone, Debug)]
pub struct AccessRecord {
    pub entrypoint: Arc<str>,
    pub peer: SocketAddr,
    /// The client as the forwarded-header logic established it.
    pub client_ip: IpAddr,
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: Option<String>,
    pub protocol: &'static str,
    pub tls_version: Option<&'static str>,
    /// `None` until a route is found.
    pub router: Option<Arc<str>>,
    /// `None` until the route's service (or a weighted service's member) is chosen.
    pub service: Option<Arc<str>>,
    pub upstream: Option<SocketAddr>,
    pub status: u16,
    pub request_bytes: Option<u64>,
    pub user_agent: Option<String>,
    /// When the proxy answered itself: where the error came from
    /// (`client`, `policy`, `upstream`, `internal`) and its kind.
    pub error: Option<(&'static str, &'static str)>,
}

enum Sink {
    Stdout,
    File(LineWriter<File>),
}

pub struct AccessLog {
    sink: Mutex<Sink>,
}

impl AccessLog {
    /// Appends to `path`, or writes to stdout when `None`.
    pub fn open(path: Option<&Path>) -> Result<AccessLog> {
        let sink = match path {
            None => Sink::Stdout,
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening the access log {}", path.display()))?;
                Sink::File(LineWriter::new(file))
            }
        };
        Ok(AccessLog {
            sink: Mutex::new(sink),
        })
    }

    pub fn write(&self, record: &AccessRecord, duration: Duration, response_bytes: u64) {
        let line = line(record, duration, response_bytes);
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let result = match &mut *sink {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::File(file) => file.write_all(line.as_bytes()),
        };
        if let Err(e) = result {
            tracing::warn!("cannot write the access log: {e}");
        }
    }
}

/// One JSON line.
pub fn line(record: &AccessRecord, duration: Duration, response_bytes: u64) -> String {
    let value = json!({
        "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "entrypoint": &*record.entrypoint,
        "client_ip": record.client_ip.to_string(),
        "client_addr": record.peer.to_string(),
        "method": record.method,
        "host": record.host,
        "path": record.path,
        "query": record.query,
        "protocol": record.protocol,
        "tls_version": record.tls_version,
        "router": record.router.as_deref().unwrap_or(""),
        "service": record.service.as_deref().unwrap_or(""),
        "upstream": record.upstream.map(|a| a.to_string()),
        "status": record.status,
        "duration_ms": duration.as_secs_f64() * 1000.0,
        "request_bytes": record.request_bytes,
        "response_bytes": response_bytes,
        "user_agent": record.user_agent,
        "error": record.error.map(|(source, kind)| json!({"source": source, "kind": kind})),
    });
    let mut text = value.to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_the_fields_operators_filter_on() {
        let record = AccessRecord {
            entrypoint: "websecure".into(),
            peer: "198.51.100.7:50000".parse().unwrap(),
            client_ip: "203.0.113.9".parse().unwrap(),
            method: "GET".into(),
            host: "api.example.com".into(),
            path: "/v1/items".into(),
            query: Some("page=2".into()),
            protocol: "HTTP/2.0",
            tls_version: Some("TLSv1.3"),
            router: Some("api".into()),
            service: Some("api".into()),
            upstream: Some("10.0.0.5:8000".parse().unwrap()),
            status: 200,
            request_bytes: Some(0),
            user_agent: Some("curl/8".into()),
            error: None,
        };
        let text = line(&record, Duration::from_millis(12), 512);
        assert!(text.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["client_ip"], "203.0.113.9");
        assert_eq!(value["client_addr"], "198.51.100.7:50000");
        assert_eq!(value["status"], 200);
        assert_eq!(value["router"], "api");
        assert_eq!(value["upstream"], "10.0.0.5:8000");
        assert_eq!(value["tls_version"], "TLSv1.3");
        assert_eq!(value["response_bytes"], 512);
        assert_eq!(value["duration_ms"], 12.0);
    }
}
