//! sockit: one binary for the socket programs of a networking course, built
//! to be used for real.
//!
//! # Module map
//!
//! The binary (`src/main.rs`) owns the command line: `cli.rs` defines
//! every flag once, `commands.rs` holds one short function per command
//! that turns its flags into the service's config, binds what a server
//! listens on through [`net`], announces it, and calls the service with a
//! [`context::Context`] (the one shutdown signal from [`shutdown`], and
//! the output sink). Everything below is this library.
//!
//! Every entry point has one shape: what it consumes (bound sockets, or a
//! client's [`messages`]), its config, the context. TCP servers take a
//! [`service::Listen`] (listener, [`transport::Acceptor`], connection
//! cap) and run through [`service::serve_tcp`], which accepts, runs the
//! transport handshake inside each connection's own task, and hands the
//! service a [`transport::Stream`]; TCP clients connect through a
//! [`transport::Connector`] to the same type. No service names
//! `TcpStream`, so TLS or WebSocket is a transport variant, not a change
//! to the services. Data flows stream -> protocol's framing type ->
//! service logic -> protocol's encoder -> stream.
//!
//! Each service is a module with the same inner shape: `protocol`
//! (framing and what to answer; no I/O), `server` (or a file named after
//! its command) and `client`:
//!
//! - [`echo`]: RFC 862 echo over UDP and TCP, with upper-casing, fixed
//!   replies, simulated loss and delay (seeds 000, 003, 004 task 5).
//! - [`json`]: a stream of JSON values answered one compact line each
//!   (seed 004 task 4-4).
//! - [`chat`]: a line-based chat room with nicks and commands, its shared
//!   log of sealed segments (one copy of every line for all members), and
//!   its client (seed 004 tasks 4 to 4-3).
//! - [`lan`]: UDP broadcast send/listen, and device discovery with its
//!   responder, over IPv4 broadcast and IPv6 multicast (seed 004 tasks 6, 7).
//! - [`ping`]: round-trip times to any UDP (or TCP) echo server, with
//!   late, duplicate and reordered replies told apart (seed 002).
//! - [`file`](mod@file): `file send` / `file receive`: files and directories over
//!   TCP, BLAKE3-verified, resumable and written atomically (seed 002).
//!
//! And what they share:
//!
//! - [`transport`]: the stream every TCP service reads and writes (plain
//!   or TLS), the acceptor (`--tls` tells TLS from plaintext by the first
//!   byte) and the connector.
//! - [`identity`]: a server's long-lived key and the `SKT-` ID a person
//!   checks it by; [`trust`]: how a `--tls` client decides it reached
//!   that server (`--pin`, `--ca`, trust on first use).
//! - [`access`]: `--allow`/`--deny`, for every server, TCP and UDP.
//! - [`service`]: the TCP accept loop (connection cap, accept with
//!   backoff, a task per connection, shutdown with a grace period).
//! - [`context`]: the shutdown token and output sink every entry point gets.
//! - [`net`]: binding, resolving, connecting, interfaces.
//! - [`sys`]: every system call std and tokio do not wrap (recvmmsg and
//!   sendmmsg with GSO/GRO, socket addresses, sendfile, sync_file_range,
//!   poll), behind safe functions for the echo server, the file transfer
//!   and the benches. The crate's only `unsafe` code is there.
//! - [`messages`]: where clients' messages come from (arguments or stdin).
//! - `text`: making untrusted bytes safe to print on a terminal.
//! - [`error`]: the typed error all of the above return, and the one
//!   writer of `sockit: error:` lines; `main` prints it.

#![deny(unsafe_code)]

pub mod access;
pub mod chat;
pub mod context;
pub mod echo;
pub mod error;
pub mod file;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod json;
pub mod lan;
pub mod messages;
pub mod net;
pub mod ping;
pub mod service;
pub mod shutdown;
#[allow(unsafe_code)]
pub mod sys;
pub(crate) mod text;
pub mod transport;
pub mod trust;

pub use error::{Error, Result};
