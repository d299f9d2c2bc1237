//! `sockit chat`: the course's chat room (seed 004 tasks 4 to 4-3), for
//! the seed's own clients, `nc`, and ten thousand people at once.
//!
//! - `protocol`: line framing with the pause rule, commands, nicks, and
//!   the text of every line the server sends.
//! - `log`: the room's output, stored once and read by every member.
//! - `hub`: the server's rooms (`/join`, `/rooms`) and its nicks, unique
//!   across them (`/msg` reaches any room).
//! - `link`: `--redis`, the same rooms on several servers (one Redis
//!   stream per room, nicks claimed in Redis, presence events).
//! - `cluster`: what a server knows of the other servers' members.
//! - `history`: each room's last lines, for `/history` and `--replay`.
//! - `room`: one room's members, each member's place in its log; the fan-out
//!   and the flow control (the room goes at its slowest reader's pace,
//!   within a window) are documented there.
//! - [`server`]: one task per connection reading, relaying and writing;
//!   when it stops reading (flood rule, full window) and when it cuts a
//!   member off (stall timeout).
//! - [`client`]: `chat join`.

pub mod client;
pub(crate) mod cluster;
pub mod history;
pub(crate) mod hub;
pub(crate) mod link;
pub(crate) mod log;
pub(crate) mod protocol;
pub(crate) mod room;

pub use protocol::{DEFAULT_MAX_LINE, valid_nick};
pub mod server;
