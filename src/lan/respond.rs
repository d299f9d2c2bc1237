//! `sockit respond`: answers discovery probes (seed 004 task 7's callee).
//!
//! Listens on UDP port 37021 over IPv4 (broadcasts reach it) and, where the
//! host has IPv6, on the same port over IPv6 with the link-local group
//! `GROUP_V6` joined on every multicast interface by index. What it
//! answers, how big and how often is decided in `protocol`; this module
//! only moves the datagrams and holds each reply back for its random delay.

use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::protocol::{self, GROUP_V6, Incoming, InstanceId, Limits, RateLimit, Reply, TEXT_REPLY};
use crate::context::Context;
use crate::error::{Result, cause};
use crate::net;

/// The longest a reply is held back.
pub const MAX_DELAY: Duration = Duration::from_millis(50);

/// Who this responder says it is.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shown by `discover` (defaults to the host name).
    pub name: String,
    pub host: String,
    pub limits: Limits,
    /// Whom it answers (`--allow`, `--deny`).
    pub access: std::sync::Arc<crate::access::Access>,
}

/// Joins `GROUP_V6` on every IPv6 multicast interface; returns how many.
/// A host without IPv6 multicast is answered over IPv4 only.
pub fn join_group(socket: &UdpSocket) -> usize {
    let interfaces = match net::multicast_interfaces_v6() {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!("{e}");
            return 0;
        }
    };
    let mut joined = 0;
    for interface in interfaces {
        match socket.join_multicast_v6(&GROUP_V6, interface.index) {
            Ok(()) => joined += 1,
            Err(e) => tracing::debug!(
                "cannot join {GROUP_V6} on {}: {}",
                interface.name,
                cause(&e)
            ),
        }
    }
    joined
}

/// The responder's sockets.
#[derive(Debug)]
pub struct Sockets {
    pub v4: UdpSocket,
    /// `None` when bound to one address, or on a host without IPv6.
    pub v6: Option<UdpSocket>,
    /// The address to announce.
    pub local: SocketAddr,
}

/// Binds the responder's sockets: IPv4 on `bind:port` and, when `bind`
/// is the IPv4 wildcard, IPv6 on the same port with the discovery group
/// joined on every interface (answering over IPv4 only if that fails).
pub fn bind(bind: IpAddr, port: u16) -> Result<Sockets> {
    let v4 = net::bind_udp_broadcast(SocketAddr::new(bind, port), false)?;
    let local = net::local_udp(&v4)?;
    if !(bind.is_unspecified() && bind.is_ipv4()) {
        return Ok(Sockets {
            v4,
            v6: None,
            local,
        });
    }
    let addr = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), local.port());
    let v6 = match net::bind_udp_broadcast(addr, false) {
        Ok(v6) => {
            let joined = join_group(&v6);
            tracing::info!("IPv6: joined {} on {joined} interfaces", GROUP_V6);
            Some(v6)
        }
        Err(e) => {
            tracing::warn!("answering over IPv4 only: {e}");
            None
        }
    };
    Ok(Sockets { v4, v6, local })
}

/// Answers on `v4` and, if given, `v6` until `shutdown` (both sockets are
/// single-stack, so a source address is never an IPv4-mapped one). Prints a line per
/// answer to `out` (rate-limited answers are not printed: a flood must not
/// flood the terminal too).
pub async fn run(sockets: Sockets, config: Config, ctx: Context) {
    let Sockets { v4, v6, .. } = sockets;
    let Context { shutdown, out } = ctx;
    let responder = Arc::new(Responder {
        id: InstanceId::random(),
        limit: std::sync::Mutex::new(RateLimit::new(config.limits, Instant::now())),
        config,
        out: std::sync::Mutex::new(out),
    });
    let v4 = serve(Arc::new(v4), responder.clone(), shutdown.clone());
    match v6 {
        Some(v6) => {
            tokio::join!(v4, serve(Arc::new(v6), responder, shutdown));
        }
        None => v4.await,
    }
}

/// A reply decided on but not yet sent.
enum Answer {
    /// A sockit reply; its `held_us` is filled in when it is sent.
    Sockit { reply: Reply, limit: usize },
    /// The seed callee's text.
    Text,
}

impl Answer {
    /// The datagram, saying it was held for `held`; `None` if it no longer
    /// fits `limit` (it cannot: the check was made with a larger figure).
    fn encode(self, held: Duration) -> Option<Vec<u8>> {
        match self {
            Answer::Sockit { mut reply, limit } => {
                reply.held_us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
                reply.encode_within(limit)
            }
            Answer::Text => Some(TEXT_REPLY.to_vec()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Answer::Sockit { .. } => "sockit probe",
            Answer::Text => "text",
        }
    }
}

struct Responder {
    id: InstanceId,
    config: Config,
    limit: std::sync::Mutex<RateLimit>,
    out: std::sync::Mutex<Box<dyn Write + Send>>,
}

impl Responder {
    /// What to send back for one datagram, or `None` if it gets nothing.
    fn answer(&self, datagram: &[u8], from: SocketAddr, own_port: u16) -> Option<Answer> {
        if from.port() == own_port {
            // Another responder or a seed callee answering someone: replying
            // could start an endless exchange between the two.
            return None;
        }
        let limit = protocol::reply_limit(datagram.len());
        let answer = match protocol::classify(datagram) {
            Incoming::Ignore => return None,
            Incoming::Probe(probe) if probe.id == self.id => return None,
            Incoming::Probe(probe) => {
                let reply = Reply {
                    probe: probe.id.to_string(),
                    seq: probe.seq,
                    id: self.id.to_string(),
                    name: Some(self.config.name.clone()),
                    host: Some(self.config.host.clone()),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    // The most it can be: if that fits, the real one does.
                    held_us: u64::try_from(MAX_DELAY.as_micros() * 2).unwrap_or(u64::MAX),
                };
                reply.encode_within(limit)?;
                Answer::Sockit { reply, limit }
            }
            Incoming::Other if TEXT_REPLY.len() <= limit => Answer::Text,
            Incoming::Other => return None,
        };
        let allowed = match self.limit.lock() {
            Ok(mut limit) => limit.allow(from.ip(), Instant::now()),
            Err(_) => false,
        };
        allowed.then_some(answer)
    }

    fn report(&self, line: std::fmt::Arguments<'_>) {
        if let Ok(mut out) = self.out.lock() {
            // A closed stdout must not stop the answering.
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }
}

async fn serve(socket: Arc<UdpSocket>, responder: Arc<Responder>, shutdown: CancellationToken) {
    let own_port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
    // Probes are small; anything longer is read cut short, which only
    // makes its allowance smaller.
    let mut buf = vec![0u8; 2048];
    loop {
        let Some((n, from)) =
            super::next_datagram(&socket, &mut buf, &responder.config.access, &shutdown).await
        else {
            return;
        };
        let received = Instant::now();
        let Some(answer) = responder.answer(&buf[..n], from, own_port) else {
            continue;
        };
        let delay = protocol::reply_delay(MAX_DELAY);
        let socket = socket.clone();
        let responder = responder.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let kind = answer.kind();
            // The time really held (the timer is coarser than the delay),
            // so the prober's round trip comes out right.
            let Some(reply) = answer.encode(received.elapsed()) else {
                return;
            };
            match socket.send_to(&reply, from).await {
                Ok(_) => responder.report(format_args!("answered {from} ({kind})")),
                Err(e) => tracing::debug!("cannot answer {from}: {}", cause(&e)),
            }
        });
    }
}
