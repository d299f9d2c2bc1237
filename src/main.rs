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
            eprintln!(
                "sockit: error: cannot start the runtime ({})",
                sockit::error::cause(&e)
            );
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let ctx = commands::Context {
            shutdown: sockit::shutdown::on_signals(),
            // ping's -q (summary only) is the global -q.
            quiet: cli.quiet > 0,
        };
        commands::run(cli.command, ctx).await
    });
    // Do not wait for stray blocking reads (stdin) when we are done.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e @ sockit::Error::Interrupted) => ExitCode::from(e.exit_code()),
        Err(e) => {
            eprintln!("sockit: error: {e}");
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
