//! `tcpbulk`: TCP bulk echo throughput against any TCP echo server.
//!
//! One thread writes `--bytes` of data while the main thread reads the echo
//! back: full duplex, so neither side waits on a full socket buffer of the
//! other (a write-everything-then-read client deadlocks once both directions'
//! buffers fill). The returned stream is compared byte for byte with what was
//! sent, which costs a memcmp per read and catches loss, duplication and
//! reordering. The data is upper-case letters and digits only, so it survives
//! a server that upper-cases text.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;

/// Size of one write and of the read buffer.
const BUF: usize = 128 * 1024;
/// Period of the data pattern: a prime (2^17 - 1), so that it never lines up
/// with the 128 KiB writes or with the server's own buffer sizes, and a
/// block echoed twice or out of order does not compare equal.
const PERIOD: usize = 131_071;
/// Longest a blocking read or write waits before the deadline is checked.
const POLL: Duration = Duration::from_millis(200);
/// How long to wait for the server's EOF after everything was echoed.
const EOF_WAIT: Duration = Duration::from_secs(2);

/// TCP bulk echo throughput (loopback benchmarking only).
#[derive(Parser, Debug)]
#[command(name = "tcpbulk", version)]
struct Args {
    /// Echo server to measure, as HOST:PORT.
    #[arg(long)]
    target: String,
    /// Bytes to send (and expect back): a number with an optional binary
    /// suffix K, M, G or T (also KiB, MB, ...; all are powers of 1024).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    bytes: u64,
    /// Seconds after which the run is aborted as an error.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Seconds without any echoed byte after which the run is aborted as
    /// stalled: a deadlocked server fails fast instead of using up --timeout.
    #[arg(long, default_value_t = 10.0)]
    stall_timeout: f64,
    /// Only count the returned bytes; do not compare their content (for an
    /// echo server that transforms the data).
    #[arg(long)]
    no_verify: bool,
    /// Also print one JSON object line with the results.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcpbulk: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 86_400.0) {
        bail!("--timeout must be between 0 and 86400 seconds");
    }
    if !(args.stall_timeout.is_finite() && args.stall_timeout > 0.0) {
        bail!("--stall-timeout must be a positive number of seconds");
    }
    if args.bytes == 0 {
        bail!("--bytes must be at least 1");
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.timeout);
    let stream = connect(&args.target, deadline)?;
    let peer = stream.peer_addr().context("reading the peer address")?;
    stream
        .set_read_timeout(Some(POLL))
        .context("setting the read timeout")?;
    stream
        .set_write_timeout(Some(POLL))
        .context("setting the write timeout")?;
    let writer_stream = stream.try_clone().context("cloning the TCP stream")?;

    // The pattern repeated so that any BUF-long window from an offset below
    // PERIOD is one contiguous slice.
    let pattern: Vec<u8> = make_pattern(PERIOD + BUF);
    let pattern = std::sync::Arc::new(pattern);

    let t0 = Instant::now();
    let writer = {
        let pattern = pattern.clone();
        let total = args.bytes;
        thread::Builder::new()
            .name("tcpbulk-writer".into())
            .spawn(move || write_all(writer_stream, &pattern, total, deadline))
            .context("spawning the writer thread")?
    };

    let limits = Limits {
        deadline,
        stall: Duration::from_secs_f64(args.stall_timeout),
    };
    let read_result = read_all(&stream, &pattern, args.bytes, !args.no_verify, limits);
    let elapsed = t0.elapsed();
    if read_result.is_err() {
        // Unblock and stop the writer; its own error is secondary.
        let _ = stream.shutdown(Shutdown::Both);
    }
    let write_result = writer
        .join()
        .map_err(|_| anyhow!("the writer thread panicked"))?;
    read_result?;
    write_result?;

    // Everything came back; close our side and make sure the server sends
    // nothing extra. A server that never closes is only noted.
    stream
        .shutdown(Shutdown::Write)
        .context("shutting down the write side")?;
    let eof = expect_eof(&stream, deadline.min(Instant::now() + EOF_WAIT))?;

    let secs = elapsed.as_secs_f64();
    let mib = args.bytes as f64 / (1024.0 * 1024.0);
    let rate = mib / secs;
    println!(
        "tcpbulk {peer}: {mib:.0} MiB echoed in {secs:.3} s = {rate:.1} MiB/s ({}{})",
        if args.no_verify {
            "count checked"
        } else {
            "content verified"
        },
        if eof { "" } else { ", server did not close" }
    );
    if args.json {
        let json = serde_json::json!({
            "tool": "tcpbulk",
            "target": peer.to_string(),
            "bytes": args.bytes,
            "seconds": secs,
            "mib_per_s": rate,
            "verified": !args.no_verify,
            "server_eof": eof,
        });
        println!("{json}");
    }
    Ok(())
}

/// Connects to the first address of `target` that accepts, within the
/// deadline.
fn connect(target: &str, deadline: Instant) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("resolving --target {target:?} (expected HOST:PORT)"))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some((addr, e)),
        }
    }
    match last {
        Some((addr, e)) => Err(e).with_context(|| format!("connecting to {addr}")),
        None => bail!("--target {target:?} resolved to no address"),
    }
}

/// Upper-case letters and digits from a xorshift generator: cheap, not
/// periodic within `len`, and unchanged by upper-casing.
fn make_pattern(len: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let first: Vec<u8> = (0..PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 36) as usize]
        })
        .collect();
    first.iter().copied().cycle().take(len).collect()
}

/// True when the error only means "nothing happened within the poll period".
fn is_poll_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Writes `total` bytes of the pattern in BUF-sized chunks.
fn write_all(mut stream: TcpStream, pattern: &[u8], total: u64, deadline: Instant) -> Result<()> {
    let mut sent: u64 = 0;
    while sent < total {
        let off = (sent % PERIOD as u64) as usize;
        let len = BUF.min(usize::try_from(total - sent).unwrap_or(BUF));
        match stream.write(&pattern[off..off + len]) {
            Ok(0) => bail!("the server stopped accepting data after {sent} bytes"),
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_poll_timeout(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("writing after {sent} bytes")),
        }
        if Instant::now() >= deadline {
            bail!("timed out after writing {sent} of {total} bytes");
        }
    }
    Ok(())
}

/// When the reader gives up.
#[derive(Clone, Copy)]
struct Limits {
    deadline: Instant,
    /// Longest time without progress.
    stall: Duration,
}

/// Reads until `total` bytes came back, comparing them with the pattern.
fn read_all(
    mut stream: &TcpStream,
    pattern: &[u8],
    total: u64,
    verify: bool,
    limits: Limits,
) -> Result<()> {
    let mut buf = vec![0u8; BUF];
    let mut got: u64 = 0;
    let mut progress_at = Instant::now();
    while got < total {
        let want = BUF.min(usize::try_from(total - got).unwrap_or(BUF));
        match stream.read(&mut buf[..want]) {
            Ok(0) => bail!("the server closed the connection after echoing {got} of {total} bytes"),
            Ok(n) => {
                if verify {
                    let off = (got % PERIOD as u64) as usize;
                    if buf[..n] != pattern[off..off + n] {
                        let at = buf[..n]
                            .iter()
                            .zip(&pattern[off..off + n])
                            .position(|(a, b)| a != b)
                            .unwrap_or(0);
                        bail!(
                            "echoed data differs from what was sent at byte {} \
                             (use --no-verify for a transforming server)",
                            got + at as u64
                        );
                    }
                }
                got += n as u64;
                progress_at = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_poll_timeout(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("reading after {got} bytes")),
        }
        if got < total {
            let now = Instant::now();
            if now >= limits.deadline {
                bail!("timed out with {got} of {total} bytes echoed");
            }
            if now.duration_since(progress_at) >= limits.stall {
                bail!(
                    "stalled: nothing echoed for {:.1} s after {got} of {total} bytes \
                     (is the server deadlocked?)",
                    limits.stall.as_secs_f64()
                );
            }
        }
    }
    Ok(())
}

/// Waits for the server's EOF until `until`: true if it came, false if the
/// time ran out first; extra data is an error.
fn expect_eof(mut stream: &TcpStream, until: Instant) -> Result<bool> {
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => bail!("the server echoed at least {n} bytes more than were sent"),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_poll_timeout(&e) => {}
            // A reset after everything was echoed is a close, if a rude one.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(e).context("waiting for the server to close"),
        }
    }
    Ok(false)
}

/// Parses `1024`, `100M`, `1G`, `512KiB`, `2gb`: suffixes are binary.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => return Err(format!("unknown size suffix {other:?} (use K, M, G or T)")),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 1024, 100M or 1G"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !((1.0..=1e18).contains(&bytes)) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn pattern_survives_upper_casing_and_repeats_with_period() {
        let p = make_pattern(PERIOD + BUF);
        assert_eq!(p, p.to_ascii_uppercase());
        assert_eq!(p[..BUF], p[PERIOD..PERIOD + BUF]);
        assert_ne!(p[..BUF], p[1..BUF + 1]);
    }
}
