//! The LAN commands (seed 004 tasks 6 and 7): [`broadcast`] sends and
//! listens to UDP broadcasts; [`discover`] finds the devices that run
//! [`respond`] (or the seed's callee) on every segment this host is on,
//! over IPv4 broadcast and IPv6 link-local multicast. `protocol` holds
//! the discovery wire format and the anti-amplification rules.

pub mod broadcast;
pub mod discover;
pub(crate) mod protocol;

pub use protocol::{Limits, MAX_NAME, clip_name};
pub mod respond;

use std::net::SocketAddr;

use tokio::net::UdpSocket;

use crate::access::Access;
use tokio_util::sync::CancellationToken;

/// The next datagram on `socket` from a peer `access` allows (its
/// length and sender), or `None` once `shutdown` is cancelled. Refused
/// datagrams are dropped and counted. Receive errors are skipped: on
/// Linux they are ICMP errors about earlier sends (a peer that left), not
/// about us.
async fn next_datagram(
    socket: &UdpSocket,
    buf: &mut [u8],
    access: &Access,
    shutdown: &CancellationToken,
) -> Option<(usize, SocketAddr)> {
    loop {
        tokio::select! {
            r = socket.recv_from(buf) => match r {
                Ok((_, from)) if !access.is_open() && !access.permits(from.ip()) => {
                    access.refuse(from, "a datagram");
                }
                Ok(got) => return Some(got),
                Err(e) => tracing::debug!("receive error: {}", crate::error::cause(&e)),
            },
            _ = shutdown.cancelled() => return None,
        }
    }
}
