//! The echo server: UDP and TCP on one port, sharing one answer policy.
//!
//! `super::udp` is the datagram side (a batched hot loop on a thread of
//! its own), `super::tcp` the stream side (a task per connection that
//! reads and writes at once). Both stop when the shutdown token is
//! cancelled; [`run`] serves whichever sockets it is given.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};

use super::protocol::Reply;
pub use super::tcp::run_tcp;
pub use super::udp::{UdpStats, run_udp};
use crate::context::Context;
use crate::error::Result;
use crate::net;
use crate::service::Listen;

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
    /// Who is answered (`--allow`, `--deny`); UDP checks it per datagram.
    pub access: std::sync::Arc<crate::access::Access>,
}

/// Which sides of the echo server to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sides {
    /// UDP and TCP on the same port (the default).
    Both,
    Udp,
    Tcp,
}

/// The echo server's sockets, bound as `sides` asks.
#[derive(Debug)]
pub struct Sockets {
    pub tcp: Option<TcpListener>,
    pub udp: Option<UdpSocket>,
    /// The address to announce (the TCP side's, or the UDP side's alone).
    pub local: SocketAddr,
}

/// Binds the sides asked for on `addr` (with port 0, both sides get the
/// same free port).
pub fn bind(addr: SocketAddr, sides: Sides) -> Result<Sockets> {
    let sockets = match sides {
        Sides::Udp => {
            let udp = net::bind_udp(addr)?;
            Sockets {
                local: net::local_udp(&udp)?,
                tcp: None,
                udp: Some(udp),
            }
        }
        Sides::Tcp => {
            let tcp = net::bind_tcp(addr)?;
            Sockets {
                local: net::local_addr(&tcp)?,
                tcp: Some(tcp),
                udp: None,
            }
        }
        Sides::Both => {
            let (tcp, udp) = net::bind_pair(addr)?;
            Sockets {
                local: net::local_addr(&tcp)?,
                tcp: Some(tcp),
                udp: Some(udp),
            }
        }
    };
    Ok(sockets)
}

/// What the echo server serves on: the TCP side through the shared
/// accept loop, the UDP side as bound.
#[derive(Debug)]
pub struct Serving {
    pub tcp: Option<Listen>,
    pub udp: Option<UdpSocket>,
}

/// Serves echo on whichever of `tcp` and `udp` are given, until `shutdown`
/// is cancelled.
pub async fn run(sockets: Serving, config: Config, ctx: Context) -> Result<()> {
    let Serving { tcp, udp } = sockets;
    let shutdown = ctx.shutdown;
    let tcp_task = async {
        match tcp {
            Some(listen) => run_tcp(listen, config.clone(), shutdown.clone()).await,
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
