//! `broadcast send` and `broadcast listen` (seed 004 task 6).
//!
//! The sender puts one datagram per tick on every LAN this host is on: to
//! the directed broadcast address of each up, broadcast-capable IPv4
//! interface, from one socket (see [`net::broadcast_targets`] for why
//! that reaches every segment where the seed's `<broadcast>` reaches only
//! the default route's), or to one address the user names. The listener
//! prints each datagram with its sender, one line each, bytes that are not
//! UTF-8 shown as `\xNN`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use tokio::net::UdpSocket;

use crate::context::Context;
use crate::error::{Error, Result, cause};
use crate::{net, text};

/// What `broadcast send` sends, where and how often.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub message: Vec<u8>,
    pub port: u16,
    pub interval: Duration,
    /// Datagrams per destination; 0 = until stopped.
    pub count: u64,
    /// One destination instead of every interface's broadcast address.
    pub to: Option<IpAddr>,
}

/// Sends `config.message` every `config.interval`, printing a line per
/// datagram to `out`. Stops after `count` rounds or on `shutdown`.
pub async fn send(config: SendConfig, ctx: Context) -> Result<()> {
    let (config, shutdown, out) = (&config, &ctx.shutdown, &mut { ctx.out });
    let local: SocketAddr = match config.to {
        Some(IpAddr::V6(_)) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        _ => (Ipv4Addr::UNSPECIFIED, 0).into(),
    };
    let socket = net::bind_udp_broadcast(local, false)?;
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    while config.count == 0 || round < config.count {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        round += 1;
        send_round(&socket, config, round == 1, out).await?;
    }
    Ok(())
}

/// One datagram to each destination. Interfaces are listed afresh every
/// round, so a board that joins Wi-Fi after starting is still heard; which
/// broadcast addresses are used (and whether derived) is logged on the
/// `first` round only, so `-v` does not repeat it every tick.
async fn send_round(
    socket: &UdpSocket,
    config: &SendConfig,
    first: bool,
    out: &mut impl Write,
) -> Result<()> {
    let destinations: Vec<(SocketAddr, Option<String>)> = match config.to {
        Some(ip) => vec![(SocketAddr::new(ip, config.port), None)],
        None => net::broadcast_targets()?
            .into_iter()
            .map(|t| {
                if first {
                    tracing::info!("broadcast address {t}");
                }
                (
                    SocketAddr::new(t.broadcast.into(), config.port),
                    Some(t.interface),
                )
            })
            .collect(),
    };
    if destinations.is_empty() {
        return Err(Error::Input {
            what: "nowhere to broadcast".into(),
            why: "no up, broadcast-capable IPv4 interface; name a destination with --to".into(),
        });
    }
    let mut failures = Vec::new();
    for (dest, interface) in &destinations {
        let via = interface
            .as_deref()
            .map(|i| format!(" ({i})"))
            .unwrap_or_default();
        match socket.send_to(&config.message, dest).await {
            Ok(n) => writeln!(out, "sent {n} bytes to {dest}{via}").map_err(Error::Stdout)?,
            Err(e) => {
                tracing::warn!("cannot send to {dest}{via}: {}", cause(&e));
                failures.push((dest, e));
            }
        }
    }
    out.flush().map_err(Error::Stdout)?;
    if failures.len() == destinations.len()
        && let Some((dest, e)) = failures.pop()
    {
        return Err(Error::io(format!("cannot send to {dest}"), e));
    }
    Ok(())
}

/// What `broadcast listen` prints.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Stop after this many datagrams; 0 = until stopped.
    pub count: u64,
    pub json: bool,
    /// Whose datagrams are shown (`--allow`, `--deny`).
    pub access: std::sync::Arc<crate::access::Access>,
}

#[derive(Serialize)]
struct Heard<'a> {
    from: SocketAddr,
    bytes: usize,
    /// The datagram as printable text (`\xNN` for bytes that are not UTF-8).
    text: &'a str,
}

/// Prints every datagram that reaches `socket` until `count` or `shutdown`.
pub async fn listen(socket: UdpSocket, config: ListenConfig, ctx: Context) -> Result<()> {
    let (shutdown, out) = (&ctx.shutdown, &mut { ctx.out });
    // The largest UDP payload: a datagram is never cut short.
    let mut buf = vec![0u8; 65_536];
    let mut heard = 0u64;
    while config.count == 0 || heard < config.count {
        let Some((n, from)) =
            super::next_datagram(&socket, &mut buf, &config.access, shutdown).await
        else {
            return Ok(());
        };
        heard += 1;
        let shown = text::escaped(&buf[..n]);
        if config.json {
            let line = serde_json::to_string(&Heard {
                from,
                bytes: n,
                text: &shown,
            })
            .map_err(|e| Error::io("cannot encode JSON", e.into()))?;
            writeln!(out, "{line}")
        } else {
            writeln!(out, "{from}: {shown}")
        }
        .and_then(|()| out.flush())
        .map_err(Error::Stdout)?;
    }
    Ok(())
}
