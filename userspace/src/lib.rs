//! xdpgate's library: the policy compiler, the XDP filter's loader and map
//! writer, the address sets, the config file, the admin listener and the
//! command line. The `xdpgate` binary is a thin shell over it.
pub mod admin;
pub mod cli;
pub mod cloudflare;
pub mod config;
pub mod daemon;
pub mod filter;
pub mod ingress;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod sets;
pub mod status;
