//! Ping (seed 002's round-trip time, and the UDP-pinger lab): numbered,
//! timestamped probes to any UDP echo server (or over one TCP connection),
//! replies matched to their probe, and the figures iputils ping prints plus
//! percentiles. `protocol` is the probe format and the matching/statistics
//! state machine (no I/O); [`client`] sends, receives and prints.

pub mod client;
pub(crate) mod protocol;

pub use protocol::{MAX_SIZE, MIN_SIZE};
