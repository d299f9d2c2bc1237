//! The echo server: UDP and TCP on one port, sharing one answer policy.
//!
//! [`super::udp`] is the datagram side (a batched hot loop on a thread of
//! its own), [`super::tcp`] the stream side (a task per connection that
//! reads and writes at once). Both stop when the shutdown token is
//! cancelled; [`run`] serves whichever sockets it is given.

use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::protocol::Reply;
pub use super::tcp::run_tcp;
pub use super::udp::{UdpStats, run_udp};
use crate::error::Result;

/// How an echo server answers; built from `sockit echo serve` flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// What each datagram / chunk / line is answered with.
    pub reply: Reply,
    /// Probability of silently dropping a UDP datagram (`--drop`).
    pub drop: f64,
    /// Seed for the drop pattern, so a lossy run can be repeated exactly.
    pub seed: u64,
    /// Time every reply waits before it is sent (`--delay`).
    pub delay: Duration,
}

/// Serves echo on whichever of `tcp` and `udp` are given, until `shutdown`
/// is cancelled.
pub async fn run(
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    config: Config,
    max_connections: usize,
    shutdown: CancellationToken,
) -> Result<()> {
    let tcp_task = async {
        match tcp {
            Some(listener) => {
                run_tcp(listener, config.clone(), max_connections, shutdown.clone()).await
            }
            None => Ok(()),
        }
    };
    let udp_task = async {
        match udp {
            Some(socket) => run_udp(socket, config.clone(), shutdown.clone())
                .await
                .map(|_| ()),
            None => Ok(()),
        }
    };
    // If either side fails, the server stops with that error rather than
    // going on half-working.
    tokio::try_join!(tcp_task, udp_task).map(|_| ())
}
