//! File transfer (`sockit file send` / `sockit file receive`): files and
//! directory trees over one TCP connection, verified end to end with
//! BLAKE3, resumable, and written atomically (a file under its final name
//! is always complete).
//!
//! Unlike the other services, the data path here is blocking I/O on
//! threads rather than Tokio tasks: a transfer is a few large sequential
//! reads and writes, and plain threads let the socket, the hashing and the
//! disk overlap on separate cores without the overhead of an async layer.
//! Tokio still accepts connections and carries the shutdown signal.
//!
//! One file per job:
//!
//! - `protocol`: the wire format (documented there) and the path-safety
//!   rules, with no I/O, so both sides share one definition of each.
//! - [`send`]: the sender; walks the paths and streams each file with
//!   `sendfile(2)` while a second thread hashes it.
//! - [`receive`]: the receiver's server and the order of a session, so
//!   that a file offer reads as offer -> accept -> stream -> verdict.
//! - `paths.rs`: where a received entry may go; every directory on the
//!   way inside DIR is checked with `lstat`, and symlinks and special files
//!   are refused, never followed.
//! - `install.rs`: temporary files (owner-only, resumable) and their
//!   durable, atomic install under the final name, with the overwrite
//!   rules, so a file under its final name is always complete.
//! - `pipeline.rs`: the receive, hash and write threads of one file's data
//!   and the buffers they pass around, so the socket, BLAKE3 and the disk
//!   overlap.

mod install;
mod paths;
mod pipeline;
pub(crate) mod protocol;
pub mod receive;
pub mod send;
