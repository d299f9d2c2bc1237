//! What every service entry point is run with besides its sockets and its
//! config: the one shutdown signal and the sink for what it prints.
//!
//! Every entry point has one shape: what it consumes first (a server's
//! bound sockets, a sending client's [`crate::messages::Messages`]; none
//! for a client that only connects), then its config, then the context:
//! `run(sockets, config, ctx)`, `send(messages, config, ctx)`,
//! `discover(config, ctx)`. So a test or another front end can run any of
//! them in-process with a token of its own and a buffer for output instead
//! of the process's stdout.

use std::io::Write;

use tokio_util::sync::CancellationToken;

/// Where a command's data output goes (stdout in the binary).
pub type Output = Box<dyn Write + Send>;

/// The shutdown signal and the output sink.
pub struct Context {
    /// Cancelled on Ctrl-C or SIGTERM (see [`crate::shutdown`]).
    pub shutdown: CancellationToken,
    /// Data output: replies, received lines, tables. Diagnostics go to
    /// stderr through `tracing`, never here.
    pub out: Output,
}

impl Context {
    /// A context printing to this process's standard output.
    pub fn stdout(shutdown: CancellationToken) -> Self {
        Context {
            shutdown,
            out: Box::new(std::io::stdout()),
        }
    }
}
