//! Opening sockets the way every sockit command wants them.
//!
//! Servers bind through here so they all behave alike: TCP listeners set
//! SO_REUSEADDR (a restarted server does not wait out TIME_WAIT) and a large
//! backlog (a connect storm is queued, not refused); UDP sockets do *not*
//! set it, because on Linux two UDP sockets with SO_REUSEADDR share a port
//! silently and "port already in use" would go unreported. Binding `::`
//! clears IPV6_V6ONLY so one socket serves IPv4 and IPv6 clients. Port 0
//! picks a free port, and [`bind_pair`] finds one free for TCP and UDP at once.
//!
//! Clients resolve and connect through here too, so "host not found" and
//! "connection refused" read the same in every command.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use nix::net::if_::InterfaceFlags;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::error::{Error, Result};

/// How many pending connections the kernel may queue for a listener
/// (capped by net.core.somaxconn).
const BACKLOG: i32 = 4096;

/// How many times [`bind_pair`] tries to find a port free for both protocols.
const PAIR_ATTEMPTS: usize = 32;

fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Dual stack: `::` also accepts IPv4 clients.
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Binds a TCP listener on `addr` (port 0 = any free port).
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener> {
    tcp_listener(addr).map_err(|source| Error::Bind {
        proto: "tcp",
        addr: addr.to_string(),
        source,
    })
}

/// Binds a UDP socket on `addr` (port 0 = any free port).
pub fn bind_udp(addr: SocketAddr) -> Result<UdpSocket> {
    udp_socket(addr).map_err(|source| Error::Bind {
        proto: "udp",
        addr: addr.to_string(),
        source,
    })
}

/// Binds TCP and UDP on the same port. With port 0 it retries until it finds
/// a port that is free for both (the kernel picks TCP's, UDP may hold it).
pub fn bind_pair(addr: SocketAddr) -> Result<(TcpListener, UdpSocket)> {
    let attempts = if addr.port() == 0 { PAIR_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let tcp = bind_tcp(addr)?;
        let port = local_addr(&tcp)?.port();
        match udp_socket(SocketAddr::new(addr.ip(), port)) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Bind {
        proto: "udp",
        addr: addr.to_string(),
        source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
    })
}

/// The address a socket is bound to, as an error users can read if the
/// kernel will not say.
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))
}

/// The address a UDP socket is bound to.
pub fn local_udp(socket: &UdpSocket) -> Result<SocketAddr> {
    socket
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))
}

/// Raises this process's soft open-file limit to the hard limit, so a
/// server can hold as many connections as the machine allows. Returns the
/// limit now in force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            1024
        }
    }
}

/// Turns on TCP keepalive for an accepted connection, so a peer that
/// vanished without a FIN (power loss, cable pulled) is noticed and its
/// resources freed instead of being held forever.
pub fn keepalive(stream: &TcpStream) {
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!("cannot enable keepalive: {e}");
    }
}

/// Resolves `host:port` to the addresses to try, in the resolver's order.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    // Literal addresses (including `[::1]`) never touch the resolver.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| Error::Resolve {
            host: host.to_string(),
            source,
        })?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(Error::Resolve {
            host: host.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        });
    }
    Ok(addrs)
}

/// Connects over TCP to the first address of `host` that answers, each try
/// bounded by `timeout`.
pub(crate) async fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addrs = resolve(host, port).await?;
    let mut last = None;
    for addr in &addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                let why = format!("timed out after {} s", timeout.as_secs_f64());
                last = Some(io::Error::new(io::ErrorKind::TimedOut, why));
            }
        }
    }
    Err(Error::Connect {
        addr: display_target(host, port),
        source: last.unwrap_or_else(|| io::Error::other("no address to try")),
    })
}

/// Opens a UDP socket connected to `host:port`. Connecting lets the kernel
/// report an ICMP port-unreachable as "connection refused" on the next
/// receive, and filters out datagrams from anyone else.
pub async fn connect_udp(host: &str, port: u16) -> Result<(UdpSocket, SocketAddr)> {
    let addrs = resolve(host, port).await?;
    let mut last = None;
    for addr in addrs {
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let attempt = async {
            let socket = UdpSocket::bind(local).await?;
            socket.connect(addr).await?;
            Ok::<_, io::Error>(socket)
        };
        match attempt.await {
            Ok(socket) => return Ok((socket, addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Connect {
        addr: display_target(host, port),
        source: last.unwrap_or_else(|| io::Error::other("no address to try")),
    })
}

/// `host:port`, bracketing bare IPv6 addresses.
pub fn display_target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An up, broadcast-capable IPv4 interface address: where `broadcast send`
/// and `discover` send, one datagram per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastTarget {
    /// The interface's name (`eth0`), for the user.
    pub interface: String,
    /// This host's address on that interface.
    pub local: Ipv4Addr,
    /// The interface's directed broadcast address (`198.18.0.255`).
    pub broadcast: Ipv4Addr,
    /// Whether `broadcast` is the kernel's or derived by `directed_broadcast`.
    pub source: BroadcastSource,
}

/// Where a [`BroadcastTarget`]'s address came from, for `-v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastSource {
    /// The kernel's, as configured (`ip addr add ... brd +`).
    Kernel,
    /// `local | !mask`, because the kernel's (`kernel`) was no use.
    Derived {
        prefix: u8,
        kernel: Option<Ipv4Addr>,
    },
}

/// `198.18.0.255 on eth0 (derived from 198.18.0.1/24: ...)`, for `-v`.
impl std::fmt::Display for BroadcastTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {} (", self.broadcast, self.interface)?;
        match self.source {
            BroadcastSource::Kernel => write!(f, "the kernel's broadcast address)"),
            BroadcastSource::Derived { prefix, kernel } => {
                let why = match kernel {
                    None => "none".to_string(),
                    Some(ip) if ip == self.local => "the host's own address".to_string(),
                    Some(ip) => ip.to_string(),
                };
                write!(
                    f,
                    "derived from {}/{prefix}: the kernel's broadcast address is {why})",
                    self.local
                )
            }
        }
    }
}

/// The directed broadcast address of every up, broadcast-capable IPv4
/// interface, loopback excluded, in the kernel's order: the kernel's, or
/// derived from address and prefix where it has none usable (see
/// `directed_broadcast`).
///
/// Why directed broadcasts and not 255.255.255.255: the limited broadcast
/// leaves only through the interface of the default route (or nowhere,
/// without one), so a laptop on Wi-Fi and Ethernet reaches one of its two
/// LANs. A directed broadcast is routed by its subnet, so sending to each
/// one from a single unbound socket reaches every segment, with the right
/// source address, and needs no privileges (SO_BINDTODEVICE would).
pub fn broadcast_targets() -> Result<Vec<BroadcastTarget>> {
    let mut targets = Vec::new();
    for ifa in up_interfaces(InterfaceFlags::IFF_BROADCAST)? {
        let Some(local) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        let kernel = ifa.broadcast.as_ref().and_then(|a| a.as_sockaddr_in());
        let netmask = ifa.netmask.as_ref().and_then(|a| a.as_sockaddr_in());
        let local = local.ip();
        let Some((broadcast, source)) =
            directed_broadcast(local, netmask.map(|m| m.ip()), kernel.map(|b| b.ip()))
        else {
            tracing::debug!(
                "{}: {local} has no directed broadcast address; not broadcasting there",
                ifa.interface_name
            );
            continue;
        };
        let target = BroadcastTarget {
            interface: ifa.interface_name.clone(),
            local,
            broadcast,
            source,
        };
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    Ok(targets)
}

/// The directed broadcast address for `local` on a subnet of `netmask`,
/// given the one the kernel reports (`kernel`), or `None` if there is none.
///
/// The kernel's is kept when it is usable. It is not when the address was
/// added without `brd +` (`ip addr add 198.18.0.1/24 dev eth0`, issue 17):
/// getifaddrs(3) then reports the host's own address there (glibc fills
/// the field from IFA_ADDRESS), or nothing, or 0.0.0.0, and a datagram
/// sent to it never leaves the host. The kernel still routes and accepts
/// `local | !mask` as a broadcast on that subnet, so that is derived.
///
/// A /31 (RFC 3021, two hosts on a point-to-point link) or /32 has no
/// directed broadcast: `local | !mask` is the peer or this host itself.
/// Such an interface is skipped rather than sent 255.255.255.255, which
/// would leave by the default route's interface, not this one (see
/// [`broadcast_targets`]); `--to` still reaches a peer there.
fn directed_broadcast(
    local: Ipv4Addr,
    netmask: Option<Ipv4Addr>,
    kernel: Option<Ipv4Addr>,
) -> Option<(Ipv4Addr, BroadcastSource)> {
    if let Some(brd) = kernel.filter(|b| !b.is_unspecified() && *b != local) {
        return Some((brd, BroadcastSource::Kernel));
    }
    let mask = netmask?.to_bits();
    // Linux netmasks are contiguous, so the prefix is the leading ones.
    let prefix = mask.leading_ones();
    if prefix >= 31 {
        return None;
    }
    let derived = Ipv4Addr::from_bits(local.to_bits() | !mask);
    let prefix = u8::try_from(prefix).ok()?;
    Some((derived, BroadcastSource::Derived { prefix, kernel }))
}

/// An up, multicast-capable interface with an IPv6 address, loopback
/// excluded: where IPv6 discovery joins and sends its link-local group
/// (IPv6 has no broadcast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastInterface {
    pub name: String,
    /// The kernel's interface index: the scope of a link-local address.
    pub index: u32,
}

/// Every interface IPv6 multicast can use, each once.
pub fn multicast_interfaces_v6() -> Result<Vec<MulticastInterface>> {
    let mut found: Vec<MulticastInterface> = Vec::new();
    for ifa in up_interfaces(InterfaceFlags::IFF_MULTICAST)? {
        if ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in6())
            .is_none()
            || found.iter().any(|f| f.name == ifa.interface_name)
        {
            continue;
        }
        match nix::net::if_::if_nametoindex(ifa.interface_name.as_str()) {
            Ok(index) => found.push(MulticastInterface {
                name: ifa.interface_name,
                index,
            }),
            Err(e) => tracing::debug!("no index for {}: {e}", ifa.interface_name),
        }
    }
    Ok(found)
}

/// The addresses of every up, non-loopback interface that also has `flags`
/// (one entry per address, as getifaddrs(3) lists them).
fn up_interfaces(
    flags: InterfaceFlags,
) -> Result<impl Iterator<Item = nix::ifaddrs::InterfaceAddress>> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| Error::io("cannot list network interfaces", e.into()))?;
    Ok(addrs.filter(move |ifa| {
        ifa.flags.contains(InterfaceFlags::IFF_UP | flags)
            && !ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK)
    }))
}

/// This machine's host name, or `-` if it has none we can print.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".to_string())
}

/// Binds a UDP socket that may send broadcasts. `shared` sets SO_REUSEADDR
/// so that several listeners on one host each get every broadcast (only
/// for passive listeners: a responder must own its port, or two of them
/// on one host would both answer).
pub fn bind_udp_broadcast(addr: SocketAddr, shared: bool) -> Result<UdpSocket> {
    let open = || {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        } else {
            socket.set_broadcast(true)?;
        }
        if shared {
            socket.set_reuse_address(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        UdpSocket::from_std(socket.into())
    };
    open().map_err(|source| Error::Bind {
        proto: "udp",
        addr: addr.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pair_shares_one_port() {
        let (tcp, udp) = bind_pair("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = tcp.local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(udp.local_addr().unwrap().port(), port);
    }

    #[tokio::test]
    async fn udp_port_in_use_is_reported() {
        let first = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        let err = bind_udp(taken).unwrap_err();
        assert!(err.to_string().contains("address already in use"), "{err}");
    }

    #[test]
    fn broadcast_is_the_kernels_when_usable_else_derived_from_the_prefix() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let (local, mask) = (ip("198.18.0.1"), Some(ip("255.255.255.0")));
        let derived = |kernel| {
            Some((
                ip("198.18.0.255"),
                BroadcastSource::Derived { prefix: 24, kernel },
            ))
        };
        // `brd +`, or any other address the admin set: kept.
        assert_eq!(
            directed_broadcast(local, mask, Some(ip("198.18.0.255"))),
            Some((ip("198.18.0.255"), BroadcastSource::Kernel))
        );
        assert_eq!(
            directed_broadcast(local, Some(ip("255.255.0.0")), Some(ip("198.18.0.127"))),
            Some((ip("198.18.0.127"), BroadcastSource::Kernel))
        );
        // Missing, 0.0.0.0, or the host's own address: derived.
        assert_eq!(directed_broadcast(local, mask, None), derived(None));
        assert_eq!(
            directed_broadcast(local, mask, Some(Ipv4Addr::UNSPECIFIED)),
            derived(Some(Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(
            directed_broadcast(local, mask, Some(local)),
            derived(Some(local))
        );
        assert_eq!(
            directed_broadcast(
                ip("10.1.2.3"),
                Some(ip("255.252.0.0")),
                Some(ip("10.1.2.3"))
            ),
            Some((
                ip("10.3.255.255"),
                BroadcastSource::Derived {
                    prefix: 14,
                    kernel: Some(ip("10.1.2.3"))
                }
            ))
        );
        assert_eq!(
            directed_broadcast(ip("10.0.0.1"), Some(ip("255.255.255.252")), None),
            Some((
                ip("10.0.0.3"),
                BroadcastSource::Derived {
                    prefix: 30,
                    kernel: None
                }
            ))
        );
        // /31 and /32 have no directed broadcast: skipped.
        let own = Some(ip("10.0.0.1"));
        assert_eq!(
            directed_broadcast(ip("10.0.0.1"), Some(ip("255.255.255.254")), own),
            None
        );
        assert_eq!(
            directed_broadcast(ip("10.0.0.1"), Some(ip("255.255.255.255")), own),
            None
        );
        assert_eq!(
            directed_broadcast(ip("10.0.0.1"), Some(ip("255.255.255.255")), None),
            None
        );
        // No netmask and nothing usable from the kernel: nothing to derive from.
        assert_eq!(directed_broadcast(local, None, Some(local)), None);
    }

    #[test]
    fn verbose_says_where_the_broadcast_address_came_from() {
        let mut target = BroadcastTarget {
            interface: "eth0".into(),
            local: Ipv4Addr::new(198, 18, 0, 1),
            broadcast: Ipv4Addr::new(198, 18, 0, 255),
            source: BroadcastSource::Kernel,
        };
        assert_eq!(
            target.to_string(),
            "198.18.0.255 on eth0 (the kernel's broadcast address)"
        );
        target.source = BroadcastSource::Derived {
            prefix: 24,
            kernel: Some(target.local),
        };
        assert_eq!(
            target.to_string(),
            "198.18.0.255 on eth0 (derived from 198.18.0.1/24: \
             the kernel's broadcast address is the host's own address)"
        );
    }

    #[test]
    fn targets_bracket_ipv6() {
        assert_eq!(display_target("::1", 7), "[::1]:7");
        assert_eq!(display_target("localhost", 7), "localhost:7");
    }
}
