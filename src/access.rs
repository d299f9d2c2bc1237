//! `--allow CIDR` / `--deny CIDR`: who a server serves.
//!
//! Deny wins; with any `--allow`, everything not allowed is denied. An
//! IPv4 peer on a dual-stack (`::`) socket arrives as `::ffff:a.b.c.d` and
//! is judged as the IPv4 address it is, so `--allow 127.0.0.0/8` means
//! the same on `-b 0.0.0.0` and `-b ::`. A refused TCP peer is told one
//! line and closed (`crate::service`); a refused datagram is dropped and
//! counted. Each refusal is logged with `-v`, at most once a second (a
//! flood of refused peers must not become a flood of log lines).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("'/{len}': the prefix length must be 0-{max}"))?,
        };
        Ok(Cidr {
            net: canonical(net),
            len,
        })
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (bytes, bits) = ((len / 8) as usize, len % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    bits == 0 || {
        let mask = 0xffu8 << (8 - bits);
        a[bytes] & mask == b[bytes] & mask
    }
}

/// IPv4-mapped IPv6 as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// A server's rules, and what they refused.
#[derive(Debug, Default)]
pub struct Access {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    refused: AtomicU64,
    /// When a refusal was last logged, and how many went unlogged since.
    logged: Mutex<Option<(Instant, u64)>>,
}

/// Refusals are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(1);

impl Access {
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>) -> Access {
        Access {
            allow,
            deny,
            ..Access::default()
        }
    }

    /// No rules: everyone is served (and nothing is looked at).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `ip` may be served.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }

    /// Counts a refusal of `peer` and logs it (rate-limited).
    pub fn refuse(&self, peer: SocketAddr, what: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match &mut *logged {
            Some((at, quiet)) if now.duration_since(*at) < LOG_EVERY => *quiet += 1,
            _ => {
                let quiet = logged.map_or(0, |(_, q)| q);
                let more = if quiet > 0 {
                    format!(" ({quiet} more refused since the last such line)")
                } else {
                    String::new()
                };
                tracing::info!("refused {what} from {peer}: not allowed{more}");
                *logged = Some((now, 0));
            }
        }
    }

    /// Refusals so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(allow: &[&str], deny: &[&str]) -> Access {
        let parse = |list: &[&str]| list.iter().map(|c| c.parse().unwrap()).collect();
        Access::new(parse(allow), parse(deny))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_any_allow_denies_the_rest() {
        let open = access(&[], &[]);
        assert!(open.is_open() && open.permits(ip("203.0.113.9")));
        let rules = access(&["127.0.0.0/8", "::1"], &["127.0.0.2"]);
        assert!(rules.permits(ip("127.0.0.1")));
        assert!(rules.permits(ip("127.255.0.1")));
        assert!(!rules.permits(ip("127.0.0.2")), "deny wins");
        assert!(rules.permits(ip("::1")));
        assert!(!rules.permits(ip("::2")));
        assert!(!rules.permits(ip("10.0.0.1")), "not allowed");
        // A v4 peer on a dual-stack socket is judged as v4.
        assert!(rules.permits(ip("::ffff:127.0.0.1")));
        assert!(!rules.permits(ip("::ffff:127.0.0.2")));
        let deny_only = access(&[], &["10.0.0.0/9", "fe80::/10"]);
        assert!(!deny_only.permits(ip("10.127.1.1")));
        assert!(deny_only.permits(ip("10.128.0.0")));
        assert!(!deny_only.permits(ip("fe80::1")));
        assert!(deny_only.permits(ip("fec0::1")));
        let all = access(&["0.0.0.0/0"], &[]);
        assert!(all.permits(ip("192.0.2.1")) && !all.permits(ip("::1")));
    }

    #[test]
    fn cidrs_parse_or_say_why_not() {
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().map(|c| c.len),
            Ok(8),
            "host bits are ignored"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::/129".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
        assert!("::/0".parse::<Cidr>().is_ok());
    }
}
