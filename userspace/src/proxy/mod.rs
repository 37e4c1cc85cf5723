//! The ingress proxy: entrypoints (plain and TLS listeners), routing by host
//! and path with Kubernetes Ingress semantics, upstream pools, forwarded
//! headers, access log and request metrics. It runs in the daemon's process
//! beside the filter and shares the filter's address sets (for trusted
//! peers). It knows nothing of XDP.
pub mod access_log;
pub mod balance;
pub mod config;
mod connections;
pub mod forwarded;
pub mod metrics;
pub mod middleware;
pub mod request;
mod route_actions;
pub mod route_rules;
pub mod routing;
mod serve;
pub mod server;
pub mod sticky;
pub mod tls;
pub mod upstream;

pub use config::*;
