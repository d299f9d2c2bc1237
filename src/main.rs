//! The `sockit` executable: parse, set up logging, run, report. The
//! command line ([`cli`]) and the wiring from flags to services
//! ([`commands`]) belong to the binary; everything they call is the
//! `sockit` library.

#![deny(unsafe_code)]

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::Cli;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2.
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = sockit::Error::io("cannot start the runtime", e);
            sockit::error::print(&e.report(cli.verbose > 0));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let ctx = sockit::context::Context::stdout(sockit::shutdown::on_signals());
        commands::run(cli.command, ctx, cli.quiet > 0).await
    });
    // Do not wait for stray blocking reads (stdin) when we are done.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e @ sockit::Error::Interrupted) => ExitCode::from(e.exit_code()),
        Err(e) => {
            sockit::error::print(&e.report(cli.verbose > 0));
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to stderr. The level comes from RUST_LOG if set, else from
/// -v/-q around a default of `warn`.
fn init_tracing(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (_, 1) => "error",
        (_, q) if q >= 2 => "off",
        (0, _) => "warn",
        (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
