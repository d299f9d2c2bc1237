//! JSON over TCP (seed 004 task 4-4): a stream of values in, each value
//! back as one compact line. `protocol` frames the stream, `server`
//! answers it, [`client`] is `json send`.

pub mod client;
pub(crate) mod protocol;

pub use protocol::{DEFAULT_MAX_SIZE, parse_value};
pub mod server;
