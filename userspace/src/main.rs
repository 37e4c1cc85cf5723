//! The `xdpgate` binary: a thin shell over the library's `cli` module.
fn main() -> std::process::ExitCode {
    xdpgate::cli::process_main()
}
