//! The discovery wire format and the rules a responder answers by. No I/O.
//!
//! # Wire format, version 1
//!
//! Every datagram is text, so `tcpdump -A` shows what happened.
//!
//! A **probe** goes from `discover` to UDP port 37021 as an IPv4 directed
//! broadcast on every interface, and to the link-local IPv6 group
//! [`GROUP_V6`] on every interface. It is exactly [`PROBE_LEN`] bytes:
//!
//! ```text
//! SOCKIT-DISCOVER/1 PROBE <id> <seq>\n<padding '.' up to 160 bytes>
//! ```
//!
//! `id` is the prober's random instance id (16 lower-case hex digits),
//! `seq` a decimal u32 numbering the probe rounds of one run. The padding
//! is what lets a full reply stay under three times the probe's size.
//!
//! A **reply** goes back to the probe's source address, in one datagram:
//!
//! ```text
//! SOCKIT-DISCOVER/1 REPLY {"probe":"<id>","seq":N,"id":"<responder id>",
//!   "name":"...","host":"...","version":"...","held_us":N}\n
//! ```
//!
//! (one line; `held_us` is how long the responder held the reply back, so
//! the prober can subtract it from the round trip.) A receiver ignores
//! unknown JSON fields, so later versions can add some.
//!
//! Rules a responder keeps (anti-amplification, as QUIC does it):
//! - a reply is never larger than three times the datagram that caused it
//!   ([`MAX_AMPLIFICATION`]); when a reply would be, `host` and then `name`
//!   are dropped, and if it still does not fit, nothing is sent. So a
//!   1-byte datagram gets nothing;
//! - any other datagram (the seed caller's `broadcast message`) gets the
//!   seed callee's answer, [`TEXT_REPLY`], under the same size rule;
//! - nothing is answered that looks like an answer (`receive message`, a
//!   `SOCKIT-DISCOVER/` datagram that is not a valid probe) or that comes
//!   from the responder's own port (another responder or callee), so two
//!   responders can never keep each other talking;
//! - replies are delayed by a random 0–50 ms (a broadcast does not make
//!   every board answer in the same instant) and rate-limited per source
//!   address and in total ([`RateLimit`]), so spoofed probes cannot turn a
//!   classroom of boards into a reflector.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The link-local IPv6 group responders join: `ff12::` is link-local
/// scope with the "transient" flag, i.e. not one of IANA's permanent
/// groups, so nothing else listens on it.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0, 0x3721);

/// The size of every sockit probe.
pub const PROBE_LEN: usize = 160;

/// A reply may be at most this many times the size of its probe.
pub const MAX_AMPLIFICATION: usize = 3;

/// What a seed callee answers to anything, and what `respond` answers to
/// datagrams that are not sockit probes.
pub const TEXT_REPLY: &[u8] = b"receive message";

/// The longest name or host name a reply carries, in bytes.
pub const MAX_NAME: usize = 64;

const PROBE_PREFIX: &str = "SOCKIT-DISCOVER/1 PROBE ";
const REPLY_PREFIX: &str = "SOCKIT-DISCOVER/1 REPLY ";
const FAMILY: &[u8] = b"SOCKIT-DISCOVER/";

/// A random instance id: tells a prober's own datagrams and its replies
/// apart from everyone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(pub u64);

impl InstanceId {
    pub fn random() -> InstanceId {
        InstanceId(rand::random())
    }

    fn parse(hex: &str) -> Option<InstanceId> {
        if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(InstanceId)
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A decoded probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub id: InstanceId,
    pub seq: u32,
}

impl Probe {
    /// The probe's datagram, padded to [`PROBE_LEN`].
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("{PROBE_PREFIX}{} {}\n", self.id, self.seq);
        while text.len() < PROBE_LEN {
            text.push('.');
        }
        text.into_bytes()
    }

    /// Parses a probe; `None` for anything that is not a whole v1 probe.
    pub fn decode(datagram: &[u8]) -> Option<Probe> {
        let rest = datagram.strip_prefix(PROBE_PREFIX.as_bytes())?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&rest[..end]).ok()?;
        let (id, seq) = line.split_once(' ')?;
        // u32::from_str accepts a leading '+'; the format does not.
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Probe {
            id: InstanceId::parse(id)?,
            seq: seq.parse().ok()?,
        })
    }
}

/// The body of a sockit reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The probe's instance id, so a prober ignores replies to others.
    pub probe: String,
    pub seq: u32,
    /// The responder's own instance id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default)]
    pub version: String,
    /// Microseconds the responder waited before sending (its reply delay).
    #[serde(default)]
    pub held_us: u64,
}

impl Reply {
    /// The reply's datagram if it fits in `limit` bytes, dropping the host
    /// name and then the name to make it fit; `None` if even that is too big.
    pub fn encode_within(&self, limit: usize) -> Option<Vec<u8>> {
        let mut reply = self.clone();
        loop {
            let json = serde_json::to_string(&reply).ok()?;
            let mut out = String::with_capacity(REPLY_PREFIX.len() + json.len() + 1);
            let _ = writeln!(out, "{REPLY_PREFIX}{json}");
            if out.len() <= limit {
                return Some(out.into_bytes());
            }
            if reply.host.take().is_none() && reply.name.take().is_none() {
                return None;
            }
        }
    }

    /// Parses a sockit reply; `None` if `datagram` is not one.
    pub fn decode(datagram: &[u8]) -> Option<Reply> {
        let body = datagram.strip_prefix(REPLY_PREFIX.as_bytes())?;
        serde_json::from_slice(body.trim_ascii_end()).ok()
    }
}

/// Cuts `text` to at most [`MAX_NAME`] bytes on a character boundary.
pub fn clip_name(text: &str) -> String {
    let mut end = text.len().min(MAX_NAME);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// What a responder makes of one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A sockit probe: answer with a [`Reply`].
    Probe(Probe),
    /// Anything else that may be a question (the seed caller's broadcast):
    /// answer with [`TEXT_REPLY`].
    Other,
    /// An answer, or sockit's own datagram that is not a valid probe:
    /// never answered.
    Ignore,
}

/// Sorts a datagram that reached a responder.
pub fn classify(datagram: &[u8]) -> Incoming {
    if let Some(probe) = Probe::decode(datagram) {
        return Incoming::Probe(probe);
    }
    if datagram.starts_with(FAMILY) || datagram == TEXT_REPLY || datagram.is_empty() {
        return Incoming::Ignore;
    }
    Incoming::Other
}

/// The largest reply allowed for a datagram of `len` bytes.
pub fn reply_limit(len: usize) -> usize {
    len.saturating_mul(MAX_AMPLIFICATION)
}

/// A token bucket: `burst` replies at once, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How often a responder may answer: per source address, and in total.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Replies one source may get at once.
    pub burst: f64,
    /// Replies per second one source may get after its burst.
    pub rate: f64,
    /// Replies per second to everyone together (bounds what spoofed
    /// sources can make the responder send).
    pub total_rate: f64,
    /// Sources remembered at once; memory stays bounded under a flood of
    /// spoofed addresses.
    pub max_sources: usize,
}

impl Default for Limits {
    /// A discover run sends 3 probes per interface in its window and a seed
    /// caller one a second; 5 at once and 2 a second more serves both.
    fn default() -> Limits {
        Limits {
            burst: 5.0,
            rate: 2.0,
            total_rate: 200.0,
            max_sources: 4096,
        }
    }
}

/// The per-source and total reply budget of a responder.
#[derive(Debug)]
pub struct RateLimit {
    limits: Limits,
    sources: HashMap<IpAddr, Bucket>,
    total: Bucket,
}

impl RateLimit {
    pub fn new(limits: Limits, now: Instant) -> RateLimit {
        RateLimit {
            limits,
            sources: HashMap::new(),
            total: Bucket::full(limits.total_rate, now),
        }
    }

    /// True if `source` may be answered now (and counts the answer).
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let Limits {
            burst,
            rate,
            total_rate,
            max_sources,
        } = self.limits;
        if !self.sources.contains_key(&source) && self.sources.len() >= max_sources {
            // Forget sources whose buckets have refilled: they are
            // indistinguishable from new ones.
            self.sources.retain(|_, b| {
                b.refill(rate, burst, now);
                b.tokens < burst
            });
            if self.sources.len() >= max_sources {
                return false;
            }
        }
        let bucket = self
            .sources
            .entry(source)
            .or_insert_with(|| Bucket::full(burst, now));
        if !bucket.take(rate, burst, now) {
            return false;
        }
        if !self.total.take(total_rate, total_rate, now) {
            // Give the source its token back: it was not answered.
            bucket.tokens += 1.0;
            return false;
        }
        true
    }

    /// The number of sources currently remembered (the tests check the
    /// table stays bounded).
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

/// A random reply delay in 0..=`max`.
pub fn reply_delay(max: Duration) -> Duration {
    let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::random_range(0..=max_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(name: &str, host: &str) -> Reply {
        Reply {
            probe: InstanceId(1).to_string(),
            seq: 7,
            id: InstanceId(u64::MAX).to_string(),
            name: Some(name.into()),
            host: Some(host.into()),
            version: "0.1.0".into(),
            held_us: 50_000,
        }
    }

    #[test]
    fn probe_round_trips_and_is_padded() {
        let probe = Probe {
            id: InstanceId(0xdead_beef),
            seq: u32::MAX,
        };
        let bytes = probe.encode();
        assert_eq!(bytes.len(), PROBE_LEN);
        assert!(bytes.starts_with(b"SOCKIT-DISCOVER/1 PROBE 00000000deadbeef 4294967295\n."));
        assert_eq!(Probe::decode(&bytes), Some(probe));
    }

    #[test]
    fn malformed_probes_are_rejected() {
        for bad in [
            &b"SOCKIT-DISCOVER/1 PROBE 00000000deadbeef 1"[..],
            b"SOCKIT-DISCOVER/1 PROBE 00000000deadbeef\n",
            b"SOCKIT-DISCOVER/1 PROBE 00000000deadbee 1\n",
            b"SOCKIT-DISCOVER/1 PROBE 00000000deadbeefff 1\n",
            b"SOCKIT-DISCOVER/1 PROBE 00000000deadbeef 99999999999999999999\n",
            b"SOCKIT-DISCOVER/1 PROBE 00000000deadbeef +1\n",
            b"SOCKIT-DISCOVER/1 PROBE 00000000deadbeef -1\n",
            b"SOCKIT-DISCOVER/2 PROBE 00000000deadbeef 1\n",
            b"SOCKIT-DISCOVER/1 PROBE \xff\xfe 1\n",
        ] {
            assert_eq!(Probe::decode(bad), None, "{}", String::from_utf8_lossy(bad));
            assert_eq!(classify(bad), Incoming::Ignore);
        }
    }

    #[test]
    fn answers_are_never_answered() {
        assert_eq!(classify(b"receive message"), Incoming::Ignore);
        assert_eq!(classify(b""), Incoming::Ignore);
        let r = reply("a", "b").encode_within(1000).unwrap();
        assert_eq!(classify(&r), Incoming::Ignore);
        assert_eq!(classify(b"broadcast message"), Incoming::Other);
    }

    #[test]
    fn a_full_reply_fits_three_probes() {
        let long = "가".repeat(MAX_NAME / 3);
        let full = reply(&clip_name(&long), &"h".repeat(MAX_NAME));
        let bytes = full
            .encode_within(reply_limit(PROBE_LEN))
            .expect("fits in 3x a probe");
        assert_eq!(Reply::decode(&bytes), Some(full));
    }

    #[test]
    fn oversize_replies_shed_host_then_name_then_give_up() {
        let full = reply("board-1", &"h".repeat(60));
        let whole = full.encode_within(usize::MAX).unwrap().len();
        let no_host = full.encode_within(whole - 1).unwrap();
        let decoded = Reply::decode(&no_host).unwrap();
        assert_eq!(decoded.host, None);
        assert_eq!(decoded.name.as_deref(), Some("board-1"));
        let bare = full.encode_within(no_host.len() - 1).unwrap();
        assert_eq!(Reply::decode(&bare).unwrap().name, None);
        assert_eq!(full.encode_within(bare.len() - 1), None);
        assert_eq!(full.encode_within(reply_limit(1)), None);
    }

    #[test]
    fn clip_name_keeps_whole_characters() {
        let clipped = clip_name(&"한".repeat(40));
        assert!(clipped.len() <= MAX_NAME);
        assert_eq!(clipped.chars().count(), MAX_NAME / 3);
    }

    #[test]
    fn rate_limit_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(Limits::default(), t0);
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let allowed = (0..1000).filter(|_| limit.allow(a, t0)).count();
        assert_eq!(allowed, 5);
        assert!(limit.allow(b, t0), "another source has its own budget");
        let later = t0 + Duration::from_secs(1);
        let allowed = (0..1000).filter(|_| limit.allow(a, later)).count();
        assert_eq!(allowed, 2);
    }

    #[test]
    fn rate_limit_caps_the_total_and_the_memory() {
        let t0 = Instant::now();
        let limits = Limits {
            max_sources: 100,
            ..Limits::default()
        };
        let mut limit = RateLimit::new(limits, t0);
        let allowed = (0..10_000u32)
            .filter(|i| limit.allow(IpAddr::from(i.to_be_bytes()), t0))
            .count();
        assert_eq!(allowed, 100, "max_sources, then nobody new");
        assert!(limit.sources() <= 100);
        let mut limit = RateLimit::new(Limits::default(), t0);
        let allowed = (0..10_000u32)
            .filter(|i| limit.allow(IpAddr::from(i.to_be_bytes()), t0))
            .count();
        assert_eq!(allowed, 200, "the total budget");
    }

    proptest::proptest! {
        /// Probes and replies read back as what was sent; a reply that
        /// must fit a limit does, and keeps everything but the names.
        #[test]
        fn probes_and_replies_round_trip(
            id in proptest::prelude::any::<u64>(),
            seq in proptest::prelude::any::<u32>(),
            name in proptest::option::of(".{0,40}"),
            host in proptest::option::of(".{0,40}"),
            held_us in proptest::prelude::any::<u64>(),
            limit in 0usize..400,
        ) {
            let probe = Probe { id: InstanceId(id), seq };
            let bytes = probe.encode();
            proptest::prop_assert_eq!(bytes.len(), PROBE_LEN);
            proptest::prop_assert_eq!(Probe::decode(&bytes), Some(probe));
            let reply = Reply {
                probe: InstanceId(id).to_string(),
                seq,
                id: InstanceId(!id).to_string(),
                name: name.map(|n| clip_name(&n)),
                host: host.map(|h| clip_name(&h)),
                version: "1".into(),
                held_us,
            };
            let whole = reply.encode_within(usize::MAX).expect("no limit");
            proptest::prop_assert_eq!(Reply::decode(&whole), Some(reply.clone()));
            if let Some(fitted) = reply.encode_within(limit) {
                proptest::prop_assert!(fitted.len() <= limit);
                let back = Reply::decode(&fitted).expect("a fitted reply decodes");
                proptest::prop_assert_eq!((back.seq, back.held_us), (seq, held_us));
                proptest::prop_assert_eq!(&back.probe, &reply.probe);
            }
        }

        /// Garbage never panics.
        #[test]
        fn garbage_datagrams_are_classified(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = classify(&bytes);
            let _ = Probe::decode(&bytes);
            let _ = Reply::decode(&bytes);
        }
    }
}
