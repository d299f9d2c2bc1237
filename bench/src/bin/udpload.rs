//! `udpload`: closed-loop UDP load generator for any UDP echo server.
//!
//! It keeps exactly `--window` datagrams in flight: it sends that many, then
//! sends one more for every reply (or timeout). Round-trip times are taken
//! from send timestamps kept locally, so the echoed payload is only trusted to
//! carry the sequence number back.
//!
//! To stay well ahead of the servers it measures, it batches system calls:
//! one `recvmmsg` waits for the first reply and takes every other one
//! already queued, and one `sendmmsg` sends the datagrams of all the slots
//! that freed up (each still a datagram of its own). A slot's send time is
//! taken just before its batch's call and a reply's arrival time just after
//! its batch's call returned, so an RTT includes the time the reply waited
//! behind others of its batch, as a client that reads one datagram at a
//! time would also see. The payload is made only of digits and
//! upper-case hex letters so that it survives servers that upper-case what
//! they echo (like the course's seed `UDPServer.py`).

use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use sockit_bench::{GSO_MAX_SEGMENTS, MAX_BATCH, Mmsg, RecvMeta, Wait, enable_gro};

/// Width of the sequence number at the start of each payload, in hex digits.
const SEQ_DIGITS: usize = 16;
/// Largest UDP payload over IPv4.
const MAX_SIZE: usize = 65_507;
/// Most memory the window's payloads may take (`--window` x `--size`).
const MAX_PAYLOADS: usize = 256 << 20;
/// Bytes per receive buffer with `--gro`: any UDP payload, a coalesced
/// one included, fits.
const GRO_BUFFER: usize = 65_536;
/// Receive buffers with `--gro` (each may hold many replies).
const GRO_BUFFERS: usize = 64;
/// Longest the receive call blocks, so that timeouts and the end of the run
/// are noticed even when nothing comes back.
const MAX_POLL: Duration = Duration::from_millis(5);

/// Closed-loop UDP echo load generator (loopback benchmarking only).
#[derive(Parser, Debug)]
#[command(name = "udpload", version)]
struct Args {
    /// Echo server to load, as HOST:PORT.
    #[arg(long)]
    target: String,
    /// Datagrams kept in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    window: u32,
    /// Seconds measured after the warm-up.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring starts (not reported).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Payload size in bytes (at least 16: the sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// A datagram unanswered after this many milliseconds is counted lost and
    /// its window slot is reused.
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,
    /// Send each refill batch as UDP_SEGMENT (GSO) messages of up to 64
    /// datagrams instead of a sendmmsg of separate datagrams. The server
    /// still gets separate datagrams, unless its socket has UDP_GRO.
    #[arg(long)]
    gso: bool,
    /// Enable UDP_GRO on this socket and split coalesced replies by their
    /// segment size (each reply is still checked and counted on its own).
    #[arg(long)]
    gro: bool,
    /// Also print one JSON object line with the results.
    #[arg(long)]
    json: bool,
}

/// One window slot. Slot `i` only ever carries sequence numbers congruent to
/// `i` modulo the window, so a reply's sequence number finds its slot
/// directly, and a late reply to a datagram already counted lost (whose slot
/// has moved on to a newer sequence number) is recognised and ignored.
#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    sent_at: Instant,
}

/// Counters of one run.
#[derive(Default)]
struct Counts {
    sent: u64,
    answered: u64,
    lost: u64,
    /// Replies to datagrams already counted lost.
    late: u64,
    /// Replies whose length or sequence number did not parse as ours.
    bad: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("udpload: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    if !(args.size >= SEQ_DIGITS && args.size <= MAX_SIZE) {
        bail!("--size must be between {SEQ_DIGITS} and {MAX_SIZE} bytes");
    }
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds");
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0 && args.warmup <= 3600.0) {
        bail!("--warmup must be between 0 and 3600 seconds");
    }
    if args.timeout_ms == 0 || args.timeout_ms > 60_000 {
        bail!("--timeout-ms must be between 1 and 60000");
    }
    // Every slot keeps its own payload, so that a batch is sent in place.
    if (args.window as usize).saturating_mul(args.size) > MAX_PAYLOADS {
        bail!("--window times --size must be at most {MAX_PAYLOADS} bytes");
    }
    if args.gso && args.size > u16::MAX as usize {
        bail!("--gso needs --size of at most {} bytes", u16::MAX);
    }
    let target = resolve(&args.target)?;
    let socket = connect(target)?;
    if args.gro {
        enable_gro(socket.as_fd()).context("enabling UDP_GRO (--gro) on the socket")?;
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    socket
        .set_read_timeout(Some(MAX_POLL.min(timeout)))
        .context("setting the socket's read timeout")?;

    let window = args.window as usize;
    let size = args.size;
    let batch = window.min(MAX_BATCH);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);

    // RTTs in nanoseconds; values beyond the bounds are clamped, not lost.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000_000, 3)
        .context("creating the RTT histogram")?;
    let mut counts = Counts::default();
    // Slot i's payload is payloads[i * size..][..size]: a batch is sent
    // straight from here, one datagram per slot.
    let mut payloads = vec![b'0'; window * size];
    // One byte more than we send, so that a longer reply shows as a wrong
    // length (bad) instead of passing truncated; with --gro, room for a
    // whole coalesced run of replies (a longer one still shows as bad).
    let (rx_bufs, rx_size) = if args.gro {
        (batch.min(GRO_BUFFERS), GRO_BUFFER)
    } else {
        (batch, size + 1)
    };
    let mut replies = vec![0u8; rx_bufs * rx_size];
    let mut bufs: Vec<&mut [u8]> = replies.chunks_exact_mut(rx_size).collect();
    let mut meta = vec![RecvMeta::default(); rx_bufs];
    let mut rx = Mmsg::new(rx_bufs);
    rx.set_gro(args.gro);
    let mut tx = Mmsg::new(if args.gso {
        batch.max(GSO_MAX_SEGMENTS)
    } else {
        batch
    });
    let mut slots: Vec<Slot> = (0..window)
        .map(|i| Slot {
            seq: i as u64,
            sent_at: start,
        })
        .collect();
    // Slots whose (new) sequence number is yet to be sent.
    let mut pending: Vec<usize> = (0..window).collect();
    let fd = socket.as_fd();
    send_pending(
        fd,
        &mut tx,
        &mut payloads,
        size,
        &mut slots,
        &mut pending,
        &mut counts,
        args.gso,
    )?;

    let scan_every = (timeout / 4).max(Duration::from_micros(500));
    let mut next_scan = start + scan_every;
    loop {
        // Waits (up to the read timeout) for one reply, then takes every
        // other one already queued.
        let got = rx.recv(
            fd,
            bufs.iter_mut().map(|buf| &mut **buf),
            &mut meta,
            Wait::Socket,
        );
        let now = Instant::now();
        if now >= end {
            break;
        }
        let measuring = now >= measure_from;
        match got {
            Ok(n) => {
                // A buffer holds one reply, or with --gro a coalesced run of
                // them; each is checked and counted on its own.
                let replies = bufs.iter().zip(&meta).take(n).flat_map(|(buf, m)| {
                    let cut = m.truncated;
                    m.datagrams().map(move |r| (&buf[r], cut))
                });
                for (reply, cut) in replies {
                    let seq = if cut { None } else { parse_seq(reply, size) };
                    let Some(seq) = seq else {
                        if measuring {
                            counts.bad += 1;
                        }
                        continue;
                    };
                    let i = (seq % window as u64) as usize;
                    let slot = &mut slots[i];
                    if slot.seq == seq {
                        if measuring {
                            counts.answered += 1;
                            let rtt = now.duration_since(slot.sent_at).as_nanos();
                            hist.saturating_record(u64::try_from(rtt).unwrap_or(u64::MAX));
                        }
                        slot.seq = seq + window as u64;
                        // Not timed out while it waits to be sent below.
                        slot.sent_at = now;
                        pending.push(i);
                    } else if measuring {
                        counts.late += 1;
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                bail!(
                    "receiving from {target}: {e} (is an echo server listening at {}?)",
                    args.target
                );
            }
            Err(e) => return Err(e).with_context(|| format!("receiving from {target}")),
        }
        if now >= next_scan {
            next_scan = now + scan_every;
            for (i, slot) in slots.iter_mut().enumerate() {
                if now.duration_since(slot.sent_at) >= timeout {
                    if measuring {
                        counts.lost += 1;
                    }
                    slot.seq += window as u64;
                    slot.sent_at = now;
                    pending.push(i);
                }
            }
        }
        send_pending(
            fd,
            &mut tx,
            &mut payloads,
            size,
            &mut slots,
            &mut pending,
            &mut counts,
            args.gso,
        )?;
    }

    let measured = end.duration_since(measure_from).as_secs_f64();
    report(&args, target, &counts, &hist, measured);
    Ok(())
}

/// Resolves `HOST:PORT`, preferring IPv4 like most echo servers' binds.
fn resolve(target: &str) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("resolving --target {target:?} (expected HOST:PORT)"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .with_context(|| format!("--target {target:?} resolved to no address"))
}

/// A connected socket: the kernel filters out strangers' datagrams and
/// reports ICMP port-unreachable as `ConnectionRefused`.
fn connect(target: SocketAddr) -> Result<UdpSocket> {
    let local: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local).with_context(|| format!("binding {local}"))?;
    socket
        .connect(target)
        .with_context(|| format!("connecting the UDP socket to {target}"))?;
    Ok(socket)
}

/// Sends the current sequence number of every slot in `pending` (and
/// empties it), a batch per `sendmmsg` (with `gso`: per UDP_SEGMENT
/// `sendmsg` of up to [`GSO_MAX_SEGMENTS`] datagrams), stamping each slot
/// with the time just before its batch's call.
#[allow(clippy::too_many_arguments)]
fn send_pending(
    fd: BorrowedFd<'_>,
    tx: &mut Mmsg,
    payloads: &mut [u8],
    size: usize,
    slots: &mut [Slot],
    pending: &mut Vec<usize>,
    counts: &mut Counts,
    gso: bool,
) -> Result<()> {
    for &i in pending.iter() {
        write_seq(&mut payloads[i * size..][..size], slots[i].seq);
    }
    // Datagrams per GSO message: one IP packet's payload at most.
    let per_gso = GSO_MAX_SEGMENTS.min(65_507 / size).min(tx.capacity());
    let mut done = 0;
    while done < pending.len() {
        let rest = &pending[done..];
        let sent_at = Instant::now();
        let n = if gso && rest.len() > 1 && per_gso > 1 {
            rest.len().min(per_gso)
        } else {
            rest.len().min(tx.capacity())
        };
        for &i in &rest[..n] {
            slots[i].sent_at = sent_at;
        }
        let datagrams = rest[..n].iter().map(|&i| &payloads[i * size..][..size]);
        let result = if gso && n > 1 {
            // All our datagrams have the same size: one message carries all.
            tx.send_msg(fd, None, datagrams, Some(size as u16), Wait::Socket)
        } else {
            // n is at most the capacity, so every datagram fits the batch.
            let mut out = tx.batch();
            for datagram in datagrams {
                if !out.push(None, [datagram], None) {
                    break;
                }
            }
            out.send(fd, Wait::Socket)
        };
        match result {
            // The kernel stops at the first datagram it cannot send; the
            // next call reports why (or sends it).
            Ok(n) => {
                counts.sent += n as u64;
                done += n.max(1);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A full socket buffer loses these datagrams; their slots time out.
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                counts.sent += rest.len() as u64;
                break;
            }
            Err(e) if gso && n > 1 => {
                return Err(e).context("sending a UDP_SEGMENT (GSO) message (--gso)");
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                bail!("sending: {e} (is an echo server listening there?)")
            }
            Err(e) => return Err(e).context("sending datagrams"),
        }
    }
    pending.clear();
    Ok(())
}

/// Writes `seq` as 16 upper-case hex digits at the start of `payload`.
fn write_seq(payload: &mut [u8], seq: u64) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, b) in payload[..SEQ_DIGITS].iter_mut().enumerate() {
        let shift = 4 * (SEQ_DIGITS - 1 - i);
        *b = HEX[((seq >> shift) & 0xF) as usize];
    }
}

/// The sequence number of a reply, if it has our size and a hex prefix
/// (either case, in case a server lower-cases instead).
fn parse_seq(reply: &[u8], size: usize) -> Option<u64> {
    if reply.len() != size {
        return None;
    }
    let mut seq = 0u64;
    for &b in &reply[..SEQ_DIGITS] {
        let digit = (b as char).to_digit(16)?;
        seq = (seq << 4) | u64::from(digit);
    }
    Some(seq)
}

fn report(args: &Args, target: SocketAddr, c: &Counts, hist: &Histogram<u64>, secs: f64) {
    let rate = c.answered as f64 / secs;
    let us = |q: f64| {
        if hist.is_empty() {
            0.0
        } else {
            hist.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let (p50, p90, p99, p999) = (us(0.5), us(0.9), us(0.99), us(0.999));
    println!(
        "udpload {target} window={} size={}{}{}: {rate:.0} dgram/s ({} answered in {secs:.2} s), \
         lost {}, late {}, bad {}; rtt us p50 {p50:.1} p90 {p90:.1} p99 {p99:.1} p99.9 {p999:.1}",
        args.window,
        args.size,
        if args.gso { " gso" } else { "" },
        if args.gro { " gro" } else { "" },
        c.answered,
        c.lost,
        c.late,
        c.bad
    );
    if c.bad > 0 {
        eprintln!(
            "udpload: warning: {} replies were not one of our datagrams (wrong size or \
             sequence number): does the server keep datagram boundaries?",
            c.bad
        );
    }
    if args.json {
        let json = serde_json::json!({
            "tool": "udpload",
            "target": target.to_string(),
            "window": args.window,
            "size": args.size,
            "gso": args.gso,
            "gro": args.gro,
            "warmup_s": args.warmup,
            "duration_s": secs,
            "timeout_ms": args.timeout_ms,
            "sent": c.sent,
            "answered": c.answered,
            "dgram_per_s": rate,
            "lost": c.lost,
            "late": c.late,
            "bad": c.bad,
            "rtt_us": {
                "p50": p50,
                "p90": p90,
                "p99": p99,
                "p999": p999,
                "min": hist.min() as f64 / 1000.0,
                "max": hist.max() as f64 / 1000.0,
                "mean": hist.mean() / 1000.0,
            },
        });
        println!("{json}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_round_trips_through_upper_casing() {
        let mut p = vec![b'0'; 64];
        write_seq(&mut p, 0xDEAD_BEEF_0123_4567);
        assert_eq!(&p[..16], b"DEADBEEF01234567");
        let upper = p.to_ascii_uppercase();
        assert_eq!(parse_seq(&upper, 64), Some(0xDEAD_BEEF_0123_4567));
        let lower = p.to_ascii_lowercase();
        assert_eq!(parse_seq(&lower, 64), Some(0xDEAD_BEEF_0123_4567));
    }

    #[test]
    fn rejects_wrong_size_and_garbage() {
        let mut p = vec![b'0'; 64];
        write_seq(&mut p, 7);
        assert_eq!(parse_seq(&p[..63], 64), None);
        p[3] = b'Z';
        assert_eq!(parse_seq(&p, 64), None);
    }
}
