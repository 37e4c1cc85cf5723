//! xdpgate's library: the policy compiler, the XDP filter's loader and map
//! writer, the address sets, the config file, the admin listener and the
//! command line. The `xdpgate` binary is a thin shell over it.

/// mimalloc rather than glibc's malloc: a request allocates and frees many
/// small objects (header maps, boxed futures, body frames), and in a `perf`
/// profile of the proxy benchmark (its HTTP/1.1 and HTTP/2 steps) glibc's
/// malloc and free took about 15% of the daemon's CPU. Set in the library so that the daemon, and the copy
/// of it the integration tests run, use the same allocator. Built without
/// transparent huge pages (`no_thp`): with them, each idle TLS connection
/// held about 11 KiB more resident memory than under glibc; without, less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
