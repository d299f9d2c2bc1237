//! Echo (RFC 862) with the seeds' twists: upper-casing (seed 000), a fixed
//! reply (seeds 003 and 004), simulated loss and delay (the UDP-pinger lab).
//! `protocol` decides what to answer; `server` serves it over `udp`
//! and `tcp` on one port; `client` is `echo send`.

pub mod client;
pub(crate) mod protocol;

pub use protocol::Reply;
pub mod server;
pub(crate) mod tcp;
pub(crate) mod udp;
