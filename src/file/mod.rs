//! File transfer (`sockit file send` / `sockit file receive`): files and
//! directory trees over one TCP connection, verified end to end with
//! BLAKE3, resumable, and written atomically (a file under its final name
//! is always complete). [`protocol`] is the wire format (documented there)
//! and the path-safety rules; [`receive`] receives; [`send`] sends.
//!
//! Unlike the other services, the data path here is blocking I/O on
//! threads rather than Tokio tasks: a transfer is a few large sequential
//! reads and writes, and plain threads let the socket, the hashing and the
//! disk overlap on separate cores without the overhead of an async layer.
//! Tokio still accepts connections and carries the shutdown signal.

pub mod protocol;
pub mod receive;
pub mod send;
