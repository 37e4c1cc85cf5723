//! xdpgate's library: the policy compiler, the XDP filter's loader and map
//! writer, and the command line. The `xdpgate` binary is a thin shell over it.
pub mod cli;
pub mod cloudflare;
pub mod filter;
pub mod policy;
