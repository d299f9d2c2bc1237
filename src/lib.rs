//! sockit: one binary for the socket programs of a networking course, built
//! to be used for real.
//!
//! # Module map
//!
//! `main.rs` parses the command line with [`cli`], sets up logging and the
//! one shutdown signal ([`shutdown`]), and calls [`run::run`], which binds
//! sockets through [`net`] and starts the service the command names. Each
//! service is a module of its own with the same inner shape: `protocol`
//! (framing and what to answer; no I/O), `server` (`run` takes an already
//! bound socket and the shutdown token, so tests start servers on port 0
//! in-process) and `client`. Data flows socket -> protocol's framing type ->
//! server logic -> protocol's encoder -> socket. Framing and answer rules
//! live in `protocol`; the servers move bytes between sockets and it.
//!
//! - [`echo`]: RFC 862 echo over UDP and TCP, with upper-casing, fixed
//!   replies, simulated loss and delay (seeds 000, 003, 004 task 5).
//! - [`json`]: a stream of JSON values answered one compact line each
//!   (seed 004 task 4-4).
//! - [`chat`]: a line-based chat room with nicks and commands, and its
//!   client (seed 004 tasks 4 to 4-3).
//! - [`lan`]: UDP broadcast send/listen, and device discovery with its
//!   responder, over IPv4 broadcast and IPv6 multicast (seed 004 tasks 6, 7).
//! - [`file`]: files and directories over TCP, BLAKE3-verified,
//!   resumable and written atomically (seed 002 file I/O).
//! - [`service`]: what every TCP server shares (connection cap, accept
//!   with backoff, a task per connection, shutdown with a grace period).
//! - [`messages`]: where clients' messages come from (arguments or stdin).
//! - [`sys`]: every system call std and tokio do not wrap (recvmmsg and
//!   sendmmsg with GSO/GRO, socket addresses, sendfile, sync_file_range,
//!   poll), behind safe functions for the echo server, the file transfer
//!   and the benches. The crate's only `unsafe` code is there.
//! - [`text`]: making untrusted bytes safe to print on a terminal.
//! - [`error`]: the typed error all of the above return; `main` prints it.
//! - [`ping`]: round-trip times to any UDP (or TCP) echo server, with
//!   late, duplicate and reordered replies told apart (seed 002).
//!
//! Every service has the same shape: a `cli` subcommand, a branch in
//! [`run`], and a module with `protocol`/`server`/`client` (lan names its
//! files after its commands instead).

#![deny(unsafe_code)]

pub mod chat;
pub mod echo;
pub mod error;
pub mod file;
pub mod json;
pub mod lan;
pub mod messages;
pub mod net;
pub mod ping;
pub mod service;
pub mod shutdown;
#[allow(unsafe_code)]
pub mod sys;
pub mod text;
pub mod transport;

pub use error::{Error, Result};
