//! The `xdpgate` binary: a thin shell over the library's `cli` module.
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = xdpgate::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("xdpgate: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(xdpgate::cli::main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdpgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
