//! The `xdpgate` binary, built inside the test package so that the
//! integration tests can spawn it (`CARGO_BIN_EXE_xdpgate-under-test`). It is
//! the same one-line shell over `xdpgate::cli` as the real binary.
fn main() -> std::process::ExitCode {
    xdpgate::cli::process_main()
}
