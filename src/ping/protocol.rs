//! The ping probe on the wire and the bookkeeping that turns replies into
//! trustworthy figures. No I/O and no clock: every function takes the time
//! as nanoseconds since the run began, so the state machine is tested with
//! made-up times.
//!
//! # The probe
//!
//! ```text
//! SKP1 RRRRRRRRRRRRRRRR SSSSSSSSSSSSSSSS TTTTTTTTTTTTTTTT ........\n
//! ```
//!
//! A magic, the run id (random per run, so a reply meant for another ping
//! to the same server is never taken for ours), the sequence number and the
//! monotonic send time in nanoseconds since the run began, each as 16
//! upper-case hex digits, then `.` padding up to `-s` bytes and a final
//! newline. Every byte is ASCII that upper-casing leaves alone, so the
//! seed's `message.decode().upper()` server echoes it unchanged; the newline
//! lets line-based TCP echo servers answer each probe as it arrives.
//!
//! # Matching
//!
//! A reply is ours only if its run id, sequence number *and* send time match
//! a probe we sent; anything else (garbage, another run's probe, a mangled
//! reply) is *foreign* and ignored. A matching reply is *fresh* the first
//! time it comes within `-W` of its probe, *late* the first time it comes
//! after that (reported, never counted as received), and a *duplicate*
//! every further time (counted on their own, so loss never goes negative).
//! A fresh reply whose sequence number is below one already answered is
//! *reordered* (still received).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::json;

/// The first bytes of every probe.
pub const MAGIC: &[u8; 4] = b"SKP1";

/// Bytes of magic, fields and separators before the padding.
pub const HEADER_LEN: usize = 4 + 3 * (1 + 16);

/// The smallest probe: the header and its newline.
pub const MIN_SIZE: usize = HEADER_LEN + 1;

/// The largest probe that fits in one UDP datagram over IPv4.
pub const MAX_SIZE: usize = 65_507;

/// Probes remembered for matching. A reply to a probe older than this many
/// probes is still recognised by its run id, but can only be counted as
/// late (it must be: with any sane `-W`, 65,536 probes take longer).
const WINDOW: usize = 1 << 16;

/// Highest RTT the percentile histogram holds (one hour, in ns); longer
/// samples are clamped into it.
const HIST_MAX_NS: u64 = 3_600_000_000_000;

/// Writes the probe `seq` of run `run`, sent at `sent_ns`, padded to `size`
/// bytes (at least [`MIN_SIZE`]), into `buf` (cleared first).
pub fn encode(buf: &mut Vec<u8>, run: u64, seq: u64, sent_ns: u64, size: usize) {
    buf.clear();
    buf.extend_from_slice(MAGIC);
    for field in [run, seq, sent_ns] {
        buf.push(b' ');
        push_hex(buf, field);
    }
    let size = size.max(MIN_SIZE);
    buf.resize(size - 1, b'.');
    buf.push(b'\n');
}

fn push_hex(buf: &mut Vec<u8>, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..16).rev() {
        buf.push(DIGITS[((value >> (shift * 4)) & 0xF) as usize]);
    }
}

/// What a probe says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub run: u64,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Reads the header of a probe, or None if `bytes` is not one. Lower-case
/// hex is accepted too (a server that lower-cases its input); the padding
/// is not checked, so a server that trims or changes it is still understood.
pub fn decode(bytes: &[u8]) -> Option<Probe> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return None;
    }
    let mut fields = [0u64; 3];
    for (i, field) in fields.iter_mut().enumerate() {
        let start = 4 + i * 17;
        if bytes[start] != b' ' {
            return None;
        }
        *field = parse_hex(&bytes[start + 1..start + 17])?;
    }
    Some(Probe {
        run: fields[0],
        seq: fields[1],
        sent_ns: fields[2],
    })
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'A'..=b'F' => d - b'A' + 10,
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(v))
    })
}

/// What one received message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The first answer to `seq`, within `-W`: counted as received.
    Fresh {
        seq: u64,
        rtt_ns: u64,
        /// A probe sent after this one was answered first.
        reordered: bool,
    },
    /// The first answer to `seq`, after `-W`: reported, counted as lost.
    Late { seq: u64, rtt_ns: u64 },
    /// A further answer to a probe already answered.
    Duplicate { seq: u64, rtt_ns: u64 },
    /// Not an answer to any probe of this run.
    Foreign,
}

/// A remembered probe: which one, when it went out, what came back.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u64,
    sent_ns: u64,
    state: SlotState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum SlotState {
    #[default]
    Waiting,
    Answered,
}

/// The state of one ping run: probes sent, replies classified, figures
/// gathered. [`Tracker::summary`] turns it into what is printed.
pub struct Tracker {
    run: u64,
    wait_ns: u64,
    slots: Box<[Slot]>,
    /// Probes sent; they are numbered 1 to `sent`.
    sent: u64,
    received: u64,
    duplicates: u64,
    late: u64,
    reordered: u64,
    foreign: u64,
    /// ICMP errors (port unreachable) reported for probes after the first
    /// reply.
    errors: u64,
    /// Highest sequence number answered fresh so far.
    highest: u64,
    rtt: RttStats,
}

impl Tracker {
    /// A tracker for run `run`, where a reply later than `wait_ns` after its
    /// probe is late.
    pub fn new(run: u64, wait_ns: u64) -> Self {
        Tracker {
            run,
            wait_ns,
            slots: vec![Slot::default(); WINDOW].into_boxed_slice(),
            sent: 0,
            received: 0,
            duplicates: 0,
            late: 0,
            reordered: 0,
            foreign: 0,
            errors: 0,
            highest: 0,
            rtt: RttStats::new(),
        }
    }

    /// The run id every probe carries.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Records a probe sent at `now_ns` and returns its sequence number
    /// (the first is 1).
    pub fn send(&mut self, now_ns: u64) -> u64 {
        self.sent += 1;
        let seq = self.sent;
        self.slots[seq as usize % WINDOW] = Slot {
            seq,
            sent_ns: now_ns,
            state: SlotState::Waiting,
        };
        seq
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Fresh replies so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether probe `seq` has been answered (fresh or late).
    pub fn is_answered(&self, seq: u64) -> bool {
        let slot = &self.slots[seq as usize % WINDOW];
        slot.seq == seq && slot.state == SlotState::Answered
    }

    /// Counts an error (ICMP) reported for a probe.
    pub fn error(&mut self) {
        self.errors += 1;
    }

    /// Classifies `bytes`, received at `now_ns`, and counts it.
    pub fn reply(&mut self, bytes: &[u8], now_ns: u64) -> Reply {
        let Some(probe) = decode(bytes) else {
            self.foreign += 1;
            return Reply::Foreign;
        };
        if probe.run != self.run
            || probe.seq == 0
            || probe.seq > self.sent
            || probe.sent_ns > now_ns
        {
            self.foreign += 1;
            return Reply::Foreign;
        }
        let seq = probe.seq;
        let rtt_ns = now_ns - probe.sent_ns;
        let slot = &mut self.slots[seq as usize % WINDOW];
        if slot.seq != seq {
            // Older than the window: ours by its run id, but long overdue.
            self.late += 1;
            return Reply::Late { seq, rtt_ns };
        }
        if slot.sent_ns != probe.sent_ns {
            // Our run id and number but not our send time: mangled.
            self.foreign += 1;
            return Reply::Foreign;
        }
        if slot.state == SlotState::Answered {
            self.duplicates += 1;
            return Reply::Duplicate { seq, rtt_ns };
        }
        slot.state = SlotState::Answered;
        if rtt_ns > self.wait_ns {
            self.late += 1;
            return Reply::Late { seq, rtt_ns };
        }
        self.received += 1;
        let reordered = seq < self.highest;
        if reordered {
            self.reordered += 1;
        } else {
            self.highest = seq;
        }
        self.rtt.record(rtt_ns);
        Reply::Fresh {
            seq,
            rtt_ns,
            reordered,
        }
    }

    /// Probes unanswered at `now_ns` whose `-W` has not run out yet: their
    /// fate is unknown, so a run cut short (Ctrl-C, `-w`) does not count
    /// them as lost.
    pub fn in_flight(&self, now_ns: u64) -> u64 {
        let mut n = 0;
        for seq in (1..=self.sent).rev().take(WINDOW) {
            let slot = &self.slots[seq as usize % WINDOW];
            if slot.sent_ns.saturating_add(self.wait_ns) <= now_ns {
                break;
            }
            if slot.state == SlotState::Waiting {
                n += 1;
            }
        }
        n
    }

    /// The figures of the run so far; `elapsed_ns` is its duration (and
    /// the time [`Tracker::in_flight`] is judged at).
    pub fn summary(&self, elapsed_ns: u64) -> Summary {
        Summary {
            transmitted: self.sent,
            in_flight: self.in_flight(elapsed_ns),
            received: self.received,
            duplicates: self.duplicates,
            late: self.late,
            reordered: self.reordered,
            foreign: self.foreign,
            errors: self.errors,
            elapsed_ns,
            rtt: self.rtt.figures(),
        }
    }
}

/// Round-trip times of fresh replies: exact min/max/mean/mdev, and a
/// histogram (3 significant digits) for the percentiles.
struct RttStats {
    count: u64,
    min: u64,
    max: u64,
    sum: f64,
    sum_sq: f64,
    hist: Histogram<u64>,
}

impl RttStats {
    fn new() -> Self {
        RttStats {
            count: 0,
            min: u64::MAX,
            max: 0,
            sum: 0.0,
            sum_sq: 0.0,
            // Bounds are constants that hdrhistogram accepts (low >= 1,
            // high >= 2 * low, 3 significant digits); a failure here is a
            // bug, caught by every test that creates a tracker.
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3)
                .expect("valid constant histogram bounds"),
        }
    }

    fn record(&mut self, ns: u64) {
        self.count += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        let x = ns as f64;
        self.sum += x;
        self.sum_sq += x * x;
        self.hist.saturating_record(ns.clamp(1, HIST_MAX_NS));
    }

    fn figures(&self) -> Option<RttFigures> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        let ms = |ns: f64| ns / 1e6;
        let q = |p: f64| ms(self.hist.value_at_quantile(p) as f64);
        Some(RttFigures {
            samples: self.count,
            min: ms(self.min as f64),
            avg: ms(mean),
            max: ms(self.max as f64),
            mdev: ms(var.sqrt()),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
        })
    }
}

/// Round-trip figures in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttFigures {
    pub samples: u64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    /// Standard deviation, as iputils ping's `mdev`.
    pub mdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub transmitted: u64,
    /// Probes still waiting within `-W` when the run ended: neither
    /// received nor lost.
    pub in_flight: u64,
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    pub reordered: u64,
    pub foreign: u64,
    pub errors: u64,
    pub elapsed_ns: u64,
    /// None when nothing was received.
    pub rtt: Option<RttFigures>,
}

impl Summary {
    /// Share of probes not answered in time, in percent, among those whose
    /// fate is known (0 when there are none). Duplicates and late replies
    /// never lower it; probes in flight at the end do not raise it.
    pub fn loss_percent(&self) -> f64 {
        let settled = self.transmitted - self.in_flight;
        if settled == 0 {
            0.0
        } else {
            settled.saturating_sub(self.received) as f64 * 100.0 / settled as f64
        }
    }

    /// The summary as iputils ping prints it, plus a percentile line:
    ///
    /// ```text
    /// --- TARGET ping statistics ---
    /// 10 packets transmitted, 7 received, +1 duplicates, 30% packet loss, time 9010ms
    /// rtt min/avg/max/mdev = 0.041/0.052/0.080/0.011 ms
    /// rtt p50/p90/p99/p99.9 = 0.050/0.070/0.080/0.080 ms, 7 samples
    /// ```
    ///
    /// Late, reordered, foreign and error counts appear only when not zero.
    pub fn text(&self, target: &str) -> String {
        let mut s = format!("--- {target} ping statistics ---\n");
        let _ = write!(
            s,
            "{} packets transmitted, {} received",
            self.transmitted, self.received
        );
        if self.duplicates > 0 {
            let _ = write!(s, ", +{} duplicates", self.duplicates);
        }
        if self.late > 0 {
            let _ = write!(s, ", {} late", self.late);
        }
        if self.reordered > 0 {
            let _ = write!(s, ", {} reordered", self.reordered);
        }
        if self.foreign > 0 {
            let _ = write!(s, ", {} foreign", self.foreign);
        }
        if self.errors > 0 {
            let _ = write!(s, ", +{} errors", self.errors);
        }
        if self.in_flight > 0 {
            let _ = write!(s, ", {} in flight", self.in_flight);
        }
        let _ = writeln!(
            s,
            ", {}% packet loss, time {}ms",
            format_g(self.loss_percent()),
            self.elapsed_ns / 1_000_000
        );
        if let Some(r) = &self.rtt {
            let _ = writeln!(
                s,
                "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
                r.min, r.avg, r.max, r.mdev
            );
            let _ = writeln!(
                s,
                "rtt p50/p90/p99/p99.9 = {:.3}/{:.3}/{:.3}/{:.3} ms, {} samples",
                r.p50, r.p90, r.p99, r.p999, r.samples
            );
        }
        s
    }

    /// Every figure as one JSON object (times in ms to the nanosecond, so
    /// loopback figures of a few microseconds keep their precision; `rtt_ms`
    /// is null when nothing was received).
    pub fn json(&self, target: &str, protocol: &str, size: usize) -> serde_json::Value {
        let rtt = self.rtt.map(|r| {
            json!({
                "min": round_ns(r.min), "avg": round_ns(r.avg), "max": round_ns(r.max),
                "mdev": round_ns(r.mdev), "p50": round_ns(r.p50), "p90": round_ns(r.p90),
                "p99": round_ns(r.p99), "p99_9": round_ns(r.p999),
            })
        });
        json!({
            "target": target,
            "protocol": protocol,
            "size": size,
            "transmitted": self.transmitted,
            "in_flight": self.in_flight,
            "received": self.received,
            "duplicates": self.duplicates,
            "late": self.late,
            "reordered": self.reordered,
            "foreign": self.foreign,
            "errors": self.errors,
            "loss_percent": self.loss_percent(),
            "time_ms": self.elapsed_ns / 1_000_000,
            "samples": self.rtt.map_or(0, |r| r.samples),
            "rtt_ms": rtt,
        })
    }
}

/// Milliseconds rounded to the nanosecond.
fn round_ns(ms: f64) -> f64 {
    (ms * 1e6).round() / 1e6
}

/// A number as C's `%g` prints it (6 significant digits, no trailing
/// zeros), which is how iputils ping prints its loss percentage.
pub fn format_g(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".to_string();
    }
    let digits = x.abs().log10().floor() as i32 + 1;
    let decimals = (6 - digits).max(0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn probe(run: u64, seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, run, seq, sent_ns, 64);
        buf
    }

    #[test]
    fn a_probe_survives_upper_casing_and_padding() {
        let buf = probe(0xdead_beef_0123_4567, 42, 987_654_321);
        assert_eq!(buf.len(), 64);
        assert_eq!(buf.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&buf).unwrap();
        assert_eq!(text.to_uppercase(), text);
        assert!(text.starts_with("SKP1 DEADBEEF01234567 000000000000002A "));
        let want = Probe {
            run: 0xdead_beef_0123_4567,
            seq: 42,
            sent_ns: 987_654_321,
        };
        assert_eq!(decode(&buf), Some(want));
        assert_eq!(decode(text.to_lowercase().as_bytes()), None, "magic");
        let lower = format!("SKP1{}", &text[4..].to_lowercase());
        assert_eq!(decode(lower.as_bytes()), Some(want));
    }

    #[test]
    fn short_sizes_are_raised_to_the_minimum_and_big_ones_padded() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 1, 1, 10);
        assert_eq!(buf.len(), MIN_SIZE);
        encode(&mut buf, 1, 1, 1, 1400);
        assert_eq!(buf.len(), 1400);
        assert_eq!(decode(&buf).map(|p| p.seq), Some(1));
    }

    #[test]
    fn garbage_is_not_a_probe() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"SKP1"), None);
        let mut buf = probe(1, 2, 3);
        buf[10] = b'G';
        assert_eq!(decode(&buf), None);
        let mut buf = probe(1, 2, 3);
        buf[4] = b'-';
        assert_eq!(decode(&buf), None);
        assert_eq!(decode(&[0xff; 80]), None);
    }

    #[test]
    fn fresh_replies_are_received_and_timed() {
        let mut t = Tracker::new(7, 1000 * MS);
        let s1 = t.send(0);
        let s2 = t.send(10 * MS);
        assert_eq!((s1, s2), (1, 2));
        assert_eq!(
            t.reply(&probe(7, 1, 0), 2 * MS),
            Reply::Fresh {
                seq: 1,
                rtt_ns: 2 * MS,
                reordered: false
            }
        );
        assert!(t.is_answered(1) && !t.is_answered(2));
        assert_eq!(t.in_flight(3 * MS), 1);
        t.reply(&probe(7, 2, 10 * MS), 14 * MS);
        assert_eq!(t.in_flight(14 * MS), 0);
        let s = t.summary(20 * MS);
        assert_eq!((s.transmitted, s.received, s.loss_percent()), (2, 2, 0.0));
        let r = s.rtt.unwrap();
        assert_eq!(
            (r.samples, r.min, r.max, r.avg, r.mdev),
            (2, 2.0, 4.0, 3.0, 1.0)
        );
        assert!(
            (r.p50 - 2.0).abs() < 0.01 && (r.p99 - 4.0).abs() < 0.01,
            "{r:?}"
        );
    }

    #[test]
    fn late_replies_are_reported_but_not_received() {
        let mut t = Tracker::new(7, 100 * MS);
        t.send(0);
        t.send(5 * MS);
        assert_eq!(
            t.reply(&probe(7, 1, 0), 150 * MS),
            Reply::Late {
                seq: 1,
                rtt_ns: 150 * MS
            }
        );
        // Exactly -W is still in time.
        assert!(matches!(
            t.reply(&probe(7, 2, 5 * MS), 105 * MS),
            Reply::Fresh { seq: 2, .. }
        ));
        let s = t.summary(200 * MS);
        assert_eq!((s.received, s.late, s.loss_percent()), (1, 1, 50.0));
        assert!(
            s.text("h:1")
                .contains("2 packets transmitted, 1 received, 1 late, 50% packet loss")
        );
    }

    #[test]
    fn duplicates_never_make_loss_negative() {
        let mut t = Tracker::new(7, 100 * MS);
        t.send(0);
        t.send(0);
        for _ in 0..3 {
            t.reply(&probe(7, 1, 0), MS);
        }
        // A copy of a late reply is a duplicate too.
        t.reply(&probe(7, 2, 0), 200 * MS);
        assert!(matches!(
            t.reply(&probe(7, 2, 0), 201 * MS),
            Reply::Duplicate { seq: 2, .. }
        ));
        let s = t.summary(0);
        assert_eq!((s.received, s.duplicates, s.late), (1, 3, 1));
        assert_eq!(s.loss_percent(), 50.0);
        assert!(
            s.text("h:1")
                .contains("1 received, +3 duplicates, 1 late, 50% packet loss")
        );
    }

    #[test]
    fn reordered_replies_are_received_and_counted() {
        let mut t = Tracker::new(7, 100 * MS);
        for _ in 0..3 {
            t.send(0);
        }
        t.reply(&probe(7, 3, 0), MS);
        let r = t.reply(&probe(7, 1, 0), MS);
        assert_eq!(
            r,
            Reply::Fresh {
                seq: 1,
                rtt_ns: MS,
                reordered: true
            }
        );
        t.reply(&probe(7, 2, 0), MS);
        let s = t.summary(0);
        assert_eq!((s.received, s.reordered), (3, 2));
    }

    #[test]
    fn foreign_replies_are_ignored() {
        let mut t = Tracker::new(7, 100 * MS);
        t.send(10);
        assert_eq!(t.reply(b"hello", MS), Reply::Foreign);
        assert_eq!(t.reply(&probe(8, 1, 10), MS), Reply::Foreign, "other run");
        assert_eq!(
            t.reply(&probe(7, 2, 10), MS),
            Reply::Foreign,
            "not sent yet"
        );
        assert_eq!(t.reply(&probe(7, 0, 10), MS), Reply::Foreign, "no seq 0");
        assert_eq!(t.reply(&probe(7, 1, 11), MS), Reply::Foreign, "wrong time");
        assert_eq!(
            t.reply(&probe(7, 1, 10), 5),
            Reply::Foreign,
            "from the future"
        );
        let s = t.summary(0);
        assert_eq!((s.received, s.foreign, s.duplicates), (0, 6, 0));
        assert!(s.rtt.is_none());
        assert!(!s.text("h:1").contains("rtt"));
    }

    #[test]
    fn replies_older_than_the_window_are_late() {
        let mut t = Tracker::new(7, 100 * MS);
        for _ in 0..WINDOW + 5 {
            t.send(0);
        }
        assert!(matches!(
            t.reply(&probe(7, 3, 0), MS),
            Reply::Late { seq: 3, .. }
        ));
    }

    #[test]
    fn summary_text_matches_iputils() {
        let mut t = Tracker::new(1, 1000 * MS);
        for i in 0..3 {
            t.send(i * MS);
        }
        t.reply(&probe(1, 1, 0), MS / 2);
        let s = t.summary(2_005 * MS);
        assert_eq!(
            s.text("127.0.0.1:12000"),
            "--- 127.0.0.1:12000 ping statistics ---\n\
             3 packets transmitted, 1 received, 66.6667% packet loss, time 2005ms\n\
             rtt min/avg/max/mdev = 0.500/0.500/0.500/0.000 ms\n\
             rtt p50/p90/p99/p99.9 = 0.500/0.500/0.500/0.500 ms, 1 samples\n"
        );
        let j = s.json("127.0.0.1:12000", "udp", 64);
        assert_eq!(j["transmitted"], 3);
        assert_eq!(j["received"], 1);
        let p999 = j["rtt_ms"]["p99_9"].as_f64().unwrap();
        assert!((p999 - 0.5).abs() < 0.001, "{j}");
        assert_eq!(j["rtt_ms"]["min"], 0.5);
        assert_eq!(j["samples"], 1);
    }

    #[test]
    fn probes_still_within_w_at_the_end_are_in_flight_not_lost() {
        let mut t = Tracker::new(7, 100 * MS);
        t.send(0);
        t.send(10 * MS);
        t.send(150 * MS);
        t.send(160 * MS);
        t.reply(&probe(7, 4, 160 * MS), 161 * MS);
        // At 200 ms: 1 and 2 are lost, 3 is in flight, 4 received.
        let s = t.summary(200 * MS);
        assert_eq!((s.transmitted, s.in_flight, s.received), (4, 1, 1));
        assert_eq!(format_g(s.loss_percent()), "66.6667");
        assert!(
            s.text("h:1")
                .contains("4 packets transmitted, 1 received, 1 in flight, 66.6667% packet loss")
        );
        // Once its -W has run out, it is lost.
        assert_eq!(t.summary(250 * MS).in_flight, 0);
        assert_eq!(t.summary(250 * MS).loss_percent(), 75.0);
    }

    #[test]
    fn loss_is_formatted_like_percent_g() {
        assert_eq!(format_g(0.0), "0");
        assert_eq!(format_g(30.0), "30");
        assert_eq!(format_g(100.0), "100");
        assert_eq!(format_g(100.0 / 3.0), "33.3333");
        assert_eq!(format_g(0.1), "0.1");
        assert_eq!(format_g(29.7), "29.7");
    }

    proptest::proptest! {
        /// A probe of any size reads back as what was sent, and is as long
        /// as asked (at least the header).
        #[test]
        fn probes_round_trip(
            run in proptest::prelude::any::<u64>(),
            seq in proptest::prelude::any::<u64>(),
            sent in proptest::prelude::any::<u64>(),
            size in 0usize..2000,
        ) {
            let mut buf = Vec::new();
            encode(&mut buf, run, seq, sent, size);
            proptest::prop_assert_eq!(buf.len(), size.max(MIN_SIZE));
            proptest::prop_assert_eq!(decode(&buf), Some(Probe { run, seq, sent_ns: sent }));
            // An upper-casing echo server (the course's) changes nothing.
            proptest::prop_assert_eq!(decode(&buf.to_ascii_uppercase()), decode(&buf));
        }

        /// Garbage never panics.
        #[test]
        fn garbage_is_no_probe_or_a_whole_header(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
            if decode(&bytes).is_some() {
                proptest::prop_assert!(bytes.len() >= HEADER_LEN && bytes.starts_with(MAGIC));
            }
        }
    }
}
