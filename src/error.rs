//! The typed error every library function returns.
//!
//! Each variant carries what failed and why; its `Display` is already the
//! sentence a user reads after `sockit: error: `, in the shape
//! `<what> (<cause>)`. `main` prints it once and picks the exit code from
//! [`Error::exit_code`], so no module prints errors of its own. Network
//! failures keep their `io::Error` as the source: the one-line message
//! shows it as a short phrase ([`cause`]), and [`Error::report`] (`-v`)
//! adds the whole chain as the system said it.

use std::io;
use std::time::Duration;

/// Everything that can end a sockit command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket could not be opened (port in use, no permission).
    #[error("cannot listen on {proto} {addr} ({})", cause(.source))]
    Bind {
        /// `tcp` or `udp`: with both on one port, the user must know which.
        proto: &'static str,
        /// The address as the user asked for it.
        addr: String,
        source: io::Error,
    },

    /// A host name did not resolve to any address.
    #[error("cannot resolve host '{host}' ({})", resolver_cause(.source))]
    Resolve { host: String, source: io::Error },

    /// A connection could not be made (refused, unreachable, timed out).
    #[error("cannot connect to {addr} ({})", cause(.source))]
    Connect { addr: String, source: io::Error },

    /// The peer did not answer in time.
    #[error("no reply from {peer} (nothing within {} s)", secs(*.waited))]
    NoReply { peer: String, waited: Duration },

    /// The peer refused a UDP datagram (an ICMP port-unreachable came back).
    #[error("no reply from {peer} (connection refused: nothing listens on that UDP port)")]
    UdpRefused { peer: String },

    /// The connection broke, or the peer closed it while we still
    /// expected an answer. Built with [`Error::closed`].
    #[error("connection to {peer} closed ({})", cause(.source))]
    Closed { peer: String, source: io::Error },

    /// Any other I/O failure, with what we were doing at the time.
    #[error("{what} ({})", cause(.source))]
    Io { what: String, source: io::Error },

    /// Writing our own output failed; a broken pipe here is not a failure
    /// (`sockit ... | head` must exit 0), which `main` checks for.
    #[error("cannot write to standard output ({})", cause(.0))]
    Stdout(io::Error),

    /// The user stopped a client with Ctrl-C or SIGTERM: exit 130, the
    /// shell convention for "ended by a signal", and nothing to explain.
    #[error("interrupted")]
    Interrupted,

    /// A transfer went through, but some of its entries did not (each was
    /// reported on its own as it failed).
    #[error("{what} ({failed} of {total} entries failed)")]
    Incomplete {
        /// Which transfer: `transfer incomplete`, `transfer from PEER`.
        what: String,
        failed: usize,
        total: usize,
    },

    /// Input the user gave that was wrong, found while running (exit 1).
    #[error("{what} ({why})")]
    Input { what: String, why: String },

    /// A ping got no reply in time to any of its probes.
    #[error("no reply from {peer} ({sent} probes sent, none answered within {} s{})",
        secs(*.waited), if *.late > 0 { format!("; {late} answered late") } else { String::new() })]
    NoAnswers {
        peer: String,
        sent: u64,
        waited: Duration,
        /// Replies that came after `-W`: the server is there, but slow.
        late: u64,
    },
}

impl Error {
    /// Exit code for this error: 130 when interrupted, 1 for everything
    /// else. (Usage errors never get here: clap reports them, exit 2.)
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted => 130,
            _ => 1,
        }
    }

    /// True when the error is a broken pipe on our own stdout, which means
    /// the reader went away on purpose and the command succeeded.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The connection to `peer` broke with `source` (or, for a reason that
    /// is not an I/O error, `io::Error::other(reason)`).
    pub fn closed(peer: impl Into<String>, source: io::Error) -> Self {
        Error::Closed {
            peer: peer.into(),
            source,
        }
    }

    /// The peer closed the connection (end of stream) early; `why` says
    /// what we were still waiting for.
    pub fn ended(peer: impl Into<String>, why: &str) -> Self {
        Error::closed(peer, io::Error::new(io::ErrorKind::UnexpectedEof, why))
    }

    /// The message `main` prints after `sockit: error: `: the one line,
    /// and with `verbose` every source below it as the system said it
    /// (with its OS error code), one `caused by:` line each.
    pub fn report(&self, verbose: bool) -> String {
        let mut text = self.to_string();
        if verbose {
            let mut source = std::error::Error::source(self);
            while let Some(e) = source {
                text.push_str(&format!("\n  caused by: {e}"));
                source = e.source();
            }
        }
        text
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Writes one `sockit: error: MESSAGE` line to stderr: the one place
/// such lines are written, by `main` for the error that ends a command
/// and by `file send` for each entry that failed while the rest went on.
pub fn print(message: &dyn std::fmt::Display) {
    eprintln!("sockit: error: {message}");
}

/// Shortcut for library results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An I/O error as a short lower-case phrase: `address already in use`
/// rather than `Address already in use (os error 98)`.
pub fn cause(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The resolver's message without the Rust wrapper text.
fn resolver_cause(e: &io::Error) -> String {
    let text = cause(e);
    text.strip_prefix("failed to lookup address information: ")
        .map(|s| s.to_lowercase())
        .unwrap_or(text)
}

/// A duration in seconds as a user typed it: `5`, `0.5`.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_causes_are_short_phrases() {
        let e = io::Error::from_raw_os_error(98);
        assert_eq!(cause(&e), "address already in use");
        let bind = Error::Bind {
            proto: "udp",
            addr: "0.0.0.0:12000".into(),
            source: e,
        };
        assert_eq!(
            bind.to_string(),
            "cannot listen on udp 0.0.0.0:12000 (address already in use)"
        );
    }

    #[test]
    fn timeouts_read_naturally() {
        let e = Error::NoReply {
            peer: "127.0.0.1:9".into(),
            waited: Duration::from_millis(500),
        };
        assert_eq!(
            e.to_string(),
            "no reply from 127.0.0.1:9 (nothing within 0.5 s)"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(Error::Interrupted.exit_code(), 130);
    }

    #[test]
    fn network_errors_keep_their_source() {
        let e = Error::Connect {
            addr: "127.0.0.1:9".into(),
            source: io::Error::from_raw_os_error(111),
        };
        assert_eq!(
            e.report(false),
            "cannot connect to 127.0.0.1:9 (connection refused)"
        );
        assert_eq!(
            e.report(true),
            "cannot connect to 127.0.0.1:9 (connection refused)\n  \
             caused by: Connection refused (os error 111)"
        );
        let ended = Error::ended("127.0.0.1:9", "the server closed it before replying");
        assert_eq!(
            ended.to_string(),
            "connection to 127.0.0.1:9 closed (the server closed it before replying)"
        );
    }
}
