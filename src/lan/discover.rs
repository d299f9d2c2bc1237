//! `sockit discover`: find the devices on the LAN (seed 004 task 7's caller).
//!
//! A probe goes to every IPv4 interface's directed broadcast address and to
//! the IPv6 group `GROUP_V6` on every multicast interface, and is sent
//! again twice within the window (UDP may lose any one of them). Replies
//! come back to this run's own ephemeral port; sockit replies name the
//! probe they answer, so another run's replies and any probe (our own
//! included) are ignored. Seed callees, which answer anything with
//! `receive message`, are listed too, with name `-`. Every address is
//! listed once, with the shortest round trip seen.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::protocol::{GROUP_V6, InstanceId, Probe, Reply, TEXT_REPLY};
use crate::context::Context;
use crate::error::{Error, Result, cause};
use crate::{net, text};

/// Probe rounds per window, spread over its first half so late ones can
/// still be answered within it.
const ROUNDS: u32 = 3;

/// A device not heard from for this many windows is reported gone (`--watch`).
const GONE_AFTER: u64 = 3;

/// What to probe and how to report.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub window: Duration,
    pub json: bool,
    /// Probe window after window and report devices as they come and go.
    pub watch: bool,
    /// Probe this address (a host or a broadcast address) instead of
    /// every interface.
    pub to: Option<IpAddr>,
}

/// One device that answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    /// `found` in `--watch` output; absent in a one-window list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'static str>,
    pub address: SocketAddr,
    /// `sockit` or `text` (a seed callee or anything else that answered).
    pub kind: &'static str,
    pub name: Option<String>,
    pub host: Option<String>,
    pub version: Option<String>,
    pub id: Option<String>,
    pub rtt_ms: f64,
    /// Other addresses the same responder answered from (a board on two
    /// segments, or on IPv4 and IPv6): it is listed once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<SocketAddr>,
    /// The last window it answered in.
    #[serde(skip)]
    window: u64,
}

/// What makes two answers the same device: a sockit responder's instance
/// id (whatever address it answered from), else the address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Identity {
    Instance(String),
    Address(SocketAddr),
}

/// Where one probe goes and through which socket.
struct Destination {
    addr: SocketAddr,
    via: String,
}

/// Probes and prints what answered, as a table after one window or as a
/// stream with `--watch`.
pub async fn discover(config: Config, ctx: Context) -> Result<()> {
    let (config, shutdown, out) = (&config, &ctx.shutdown, &mut { ctx.out });
    let v4 = net::bind_udp_broadcast((Ipv4Addr::UNSPECIFIED, 0).into(), false)?;
    let v6 = match net::bind_udp_broadcast((Ipv6Addr::UNSPECIFIED, 0).into(), false) {
        Ok(socket) => Some(socket),
        Err(e) => {
            tracing::debug!("no IPv6 discovery: {e}");
            None
        }
    };
    let destinations = destinations(config, v6.is_some())?;
    for d in &destinations {
        tracing::info!("probing {} via {}", d.addr, d.via);
    }
    let mut run = Run {
        id: InstanceId::random(),
        sent: HashMap::new(),
        found: HashMap::new(),
    };
    // One buffer per socket: both receives are polled at once.
    let mut sockets = Sockets {
        v4,
        v6,
        buf4: vec![0u8; 2048],
        buf6: vec![0u8; 2048],
    };
    let mut window = 0u64;
    if config.watch && !config.json {
        print_header(out)?;
    }
    loop {
        let whole = run
            .probe_window(&mut sockets, config, &destinations, window, out, shutdown)
            .await?;
        if !whole {
            return run.finish(config, out, true);
        }
        if !config.watch {
            return run.finish(config, out, false);
        }
        run.forget_gone(out, config.json, window)?;
        window += 1;
    }
}

/// The sockets probes go out on and answers come back to, each with its
/// receive buffer (kept for the whole run).
struct Sockets {
    v4: UdpSocket,
    /// `None` on a host without IPv6.
    v6: Option<UdpSocket>,
    buf4: Vec<u8>,
    buf6: Vec<u8>,
}

impl Run {
    /// One window: probe rounds at 0, 1/4 and 1/2 of it, and every answer
    /// until it ends (printed as found with `--watch`). `Ok(false)` if
    /// shutdown cut it short.
    async fn probe_window(
        &mut self,
        sockets: &mut Sockets,
        config: &Config,
        destinations: &[Destination],
        window: u64,
        out: &mut impl Write,
        shutdown: &CancellationToken,
    ) -> Result<bool> {
        let start = Instant::now();
        let deadline = start + config.window;
        let mut round = 0u32;
        let mut next_send = start;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(true);
            }
            if round < ROUNDS && now >= next_send {
                let seq = window as u32 * ROUNDS + round;
                self.send(seq, destinations, &sockets.v4, sockets.v6.as_ref())
                    .await?;
                round += 1;
                // Rounds at 0, 1/4 and 1/2 of the window.
                next_send = start
                    + config
                        .window
                        .mul_f64(f64::from(round) / f64::from(2 * (ROUNDS - 1)));
                continue;
            }
            let wake = if round < ROUNDS {
                next_send.min(deadline)
            } else {
                deadline
            };
            let received = tokio::select! {
                r = sockets.v4.recv_from(&mut sockets.buf4) => r.map(|(n, from)| (&sockets.buf4[..n], from)),
                r = recv_opt(sockets.v6.as_ref(), &mut sockets.buf6) => r.map(|(n, from)| (&sockets.buf6[..n], from)),
                _ = tokio::time::sleep_until(wake.into()) => continue,
                _ = shutdown.cancelled() => return Ok(false),
            };
            let (datagram, from) = match received {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!("receive error: {}", cause(&e));
                    continue;
                }
            };
            let new = self.heard(datagram, from, Instant::now(), window);
            if let Some(found) = new.filter(|_| config.watch) {
                let found = Found {
                    event: Some("found"),
                    ..found
                };
                print_found(out, &found, config.json)?;
            }
        }
    }
}

/// Every place a probe goes in one round.
fn destinations(config: &Config, have_v6: bool) -> Result<Vec<Destination>> {
    if let Some(ip) = config.to {
        if ip.is_ipv6() && !have_v6 {
            return Err(Error::Input {
                what: format!("cannot probe {ip}"),
                why: "this host has no IPv6".into(),
            });
        }
        return Ok(vec![Destination {
            addr: SocketAddr::new(ip, config.port),
            via: "--to".into(),
        }]);
    }
    let mut list: Vec<Destination> = net::broadcast_targets()?
        .into_iter()
        .map(|t| {
            tracing::info!("broadcast address {t}");
            Destination {
                addr: SocketAddr::new(t.broadcast.into(), config.port),
                via: t.interface,
            }
        })
        .collect();
    if have_v6 {
        list.extend(
            net::multicast_interfaces_v6()?
                .into_iter()
                .map(|i| Destination {
                    addr: SocketAddrV6::new(GROUP_V6, config.port, 0, i.index).into(),
                    via: i.name,
                }),
        );
    }
    if list.is_empty() {
        return Err(Error::Input {
            what: "nowhere to probe".into(),
            why: "no up interface with IPv4 broadcast or IPv6 multicast; name a target with --to"
                .into(),
        });
    }
    Ok(list)
}

async fn recv_opt(
    socket: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The state of one `discover` run.
struct Run {
    id: InstanceId,
    /// When each probe round went out, by sequence number.
    sent: HashMap<u32, Instant>,
    found: HashMap<Identity, Found>,
}

impl Run {
    async fn send(
        &mut self,
        seq: u32,
        destinations: &[Destination],
        v4: &UdpSocket,
        v6: Option<&UdpSocket>,
    ) -> Result<()> {
        let probe = Probe { id: self.id, seq }.encode();
        let now = Instant::now();
        // Keep only recent rounds: a reply to an older one is too late to time.
        self.sent.retain(|&s, _| s + 2 * ROUNDS > seq);
        self.sent.insert(seq, now);
        let mut failed = Vec::new();
        for d in destinations {
            let socket = match (d.addr, v6) {
                (SocketAddr::V6(_), Some(v6)) => v6,
                _ => v4,
            };
            if let Err(e) = socket.send_to(&probe, d.addr).await {
                tracing::warn!("cannot probe {} via {}: {}", d.addr, d.via, cause(&e));
                failed.push(e);
            }
        }
        if failed.len() == destinations.len()
            && let Some(e) = failed.pop()
        {
            return Err(Error::io("cannot send a probe on any interface", e));
        }
        Ok(())
    }

    /// Records one datagram; returns the device if it is new.
    fn heard(
        &mut self,
        datagram: &[u8],
        address: SocketAddr,
        now: Instant,
        window: u64,
    ) -> Option<Found> {
        let (identity, found) = if let Some(reply) = Reply::decode(datagram) {
            if reply.probe != self.id.to_string() {
                return None;
            }
            let sent = *self.sent.get(&reply.seq)?;
            let rtt = now
                .saturating_duration_since(sent)
                .saturating_sub(Duration::from_micros(reply.held_us));
            let found = Found {
                event: None,
                address,
                kind: "sockit",
                name: reply.name.map(|n| text::escaped(n.as_bytes())),
                host: reply.host.map(|h| text::escaped(h.as_bytes())),
                version: Some(text::escaped(reply.version.as_bytes())),
                id: Some(text::escaped(reply.id.as_bytes())),
                rtt_ms: ms(rtt),
                also: Vec::new(),
                window,
            };
            (Identity::Instance(reply.id), found)
        } else if datagram.starts_with(b"SOCKIT-DISCOVER/") {
            // A probe (ours looped back, or another run's) or a malformed reply.
            return None;
        } else {
            // A text answer names no probe: time it from the latest one.
            let last_sent = self.sent.values().max()?;
            let rtt = now.saturating_duration_since(*last_sent);
            if datagram != TEXT_REPLY {
                tracing::debug!("{address} answered {:?}", text::escaped(datagram));
            }
            let found = Found {
                event: None,
                address,
                kind: "text",
                name: None,
                host: None,
                version: None,
                id: None,
                rtt_ms: ms(rtt),
                also: Vec::new(),
                window,
            };
            (Identity::Address(address), found)
        };
        match self.found.get_mut(&identity) {
            Some(known) => {
                known.merge(found);
                None
            }
            None => {
                self.found.insert(identity, found.clone());
                Some(found)
            }
        }
    }

    /// `--watch`: reports and forgets devices silent for [`GONE_AFTER`] windows.
    fn forget_gone(&mut self, out: &mut impl Write, json: bool, window: u64) -> Result<()> {
        let gone: Vec<_> = self
            .found
            .iter()
            .filter(|(_, f)| window >= f.window + GONE_AFTER)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(f) = self.found.remove(&key) {
                if json {
                    writeln!(out, "{{\"event\":\"gone\",\"address\":\"{}\"}}", f.address)
                } else {
                    writeln!(out, "gone {}", f.address)
                }
                .and_then(|()| out.flush())
                .map_err(Error::Stdout)?;
            }
        }
        Ok(())
    }

    /// Prints the table (or JSON lines) after a single window.
    /// With `--watch`, only Ctrl-C gets here, and everything found has
    /// been printed already.
    fn finish(&self, config: &Config, out: &mut impl Write, interrupted: bool) -> Result<()> {
        if config.watch {
            return Ok(());
        }
        if self.found.is_empty() {
            if interrupted {
                return Err(Error::Interrupted);
            }
            return Err(Error::NoReply {
                peer: format!("any device on UDP port {}", config.port),
                waited: config.window,
            });
        }
        let mut found: Vec<&Found> = self.found.values().collect();
        found.sort_by_key(|f| f.order());
        if config.json {
            for f in found {
                print_found(out, f, true)?;
            }
        } else {
            print_table(out, found)?;
        }
        Ok(())
    }
}

impl Found {
    /// Folds a later answer from the same device into this one: the best
    /// round trip, every address (an IPv4 one shown first), the last window.
    fn merge(&mut self, later: Found) {
        self.rtt_ms = self.rtt_ms.min(later.rtt_ms);
        self.window = later.window;
        let address = later.address;
        if address != self.address && !self.also.contains(&address) {
            if address.is_ipv4() && self.address.is_ipv6() {
                self.also
                    .push(std::mem::replace(&mut self.address, address));
            } else {
                self.also.push(address);
            }
        }
    }

    /// Table order: IPv4 before IPv6, then by address.
    fn order(&self) -> (bool, SocketAddr) {
        (self.address.is_ipv6(), self.address)
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn print_header(out: &mut impl Write) -> Result<()> {
    writeln!(out, "{:<24} {:<16} {:<16} RTT", "ADDRESS", "NAME", "HOST").map_err(Error::Stdout)
}

fn row(f: &Found) -> String {
    format!(
        "{:<24} {:<16} {:<16} {:.3} ms",
        f.address.to_string(),
        f.name.as_deref().unwrap_or("-"),
        f.host.as_deref().unwrap_or("-"),
        f.rtt_ms
    )
}

fn print_found(out: &mut impl Write, f: &Found, json: bool) -> Result<()> {
    if json {
        let line =
            serde_json::to_string(f).map_err(|e| Error::io("cannot encode JSON", e.into()))?;
        writeln!(out, "{line}")
    } else {
        writeln!(out, "{}", row(f))
    }
    .and_then(|()| out.flush())
    .map_err(Error::Stdout)
}

fn print_table(out: &mut impl Write, found: Vec<&Found>) -> Result<()> {
    print_header(out)?;
    for f in found {
        writeln!(out, "{}", row(f)).map_err(Error::Stdout)?;
    }
    out.flush().map_err(Error::Stdout)
}
