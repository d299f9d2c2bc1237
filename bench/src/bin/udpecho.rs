//! `udpecho`: the simplest batched UDP echo server, as a yardstick.
//!
//! One thread, one blocking socket: `recvmmsg` waits for a datagram and
//! takes every other one queued (up to `--batch`), one `sendmmsg` echoes
//! them all back to their senders. It is what a UDP echo server costs with
//! batched system calls and nothing else, so it shows how fast the load
//! generator can go (`udpload` against it) and how close `sockit` gets.
//! It exits by itself after `--duration` seconds (loopback testing only).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use sockit_bench::{GSO_MAX_SEGMENTS, MAX_BATCH, Mmsg, RecvMeta, Wait};

/// Largest UDP payload over IPv4.
const MAX_SIZE: usize = 65_507;
/// Largest reply sent with GSO (it must fit the path MTU whole).
const GSO_MAX_SEGMENT: usize = 1200;

/// Batched UDP echo server (loopback benchmarking only).
#[derive(Parser, Debug)]
#[command(name = "udpecho", version)]
struct Args {
    /// Address to bind (port 0: any free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Datagrams per system call at most.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH as i64))]
    batch: u32,
    /// Echo runs of same-size replies to one peer with one UDP_SEGMENT
    /// (GSO) sendmsg instead of sendmmsg.
    #[arg(long)]
    gso: bool,
    /// Seconds after which the server exits.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("udpecho: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3600.0) {
        anyhow::bail!("--duration must be between 0 and 3600 seconds");
    }
    let socket = UdpSocket::bind(args.bind).with_context(|| format!("binding {}", args.bind))?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    println!("listening on {}", socket.local_addr()?);
    let end = Instant::now() + Duration::from_secs_f64(args.duration);
    let batch = args.batch as usize;
    let mut store = vec![0u8; batch * MAX_SIZE];
    let mut meta = vec![RecvMeta::default(); batch];
    let mut to = Vec::with_capacity(batch);
    let mut answer = Vec::with_capacity(batch);
    let mut gso = args.gso;
    let (mut rx, mut tx) = (Mmsg::new(batch), Mmsg::new(batch));
    let fd = socket.as_fd();
    let (mut echoed, mut failed) = (0u64, 0u64);
    while Instant::now() < end {
        let n = match rx.recv(
            fd,
            store.chunks_exact_mut(MAX_SIZE),
            &mut meta,
            Wait::Socket,
        ) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => continue, // ICMP errors and the like: keep serving
        };
        // Datagrams from an address we cannot name are not answered.
        answer.clear();
        to.clear();
        for (i, m) in meta.iter().enumerate().take(n) {
            if let Some(peer) = m.from.to_socket_addr() {
                answer.push(i);
                to.push(peer);
            }
        }
        // Replies go back to the address exactly as the kernel gave it.
        let reply = |i: usize| &store[i * MAX_SIZE..][..meta[i].len];
        let mut done = 0;
        while done < answer.len() {
            let rest = &answer[done..];
            let len = meta[rest[0]].len;
            // A GSO run: equal-sized small replies to one peer, within one
            // IP packet's 64 KiB.
            let run = if gso && (1..=GSO_MAX_SEGMENT).contains(&len) {
                rest.iter()
                    .zip(&to[done..])
                    .take(GSO_MAX_SEGMENTS.min(65_000 / len))
                    .take_while(|&(&i, peer)| *peer == to[done] && meta[i].len == len)
                    .count()
            } else {
                1
            };
            let result = if run > 1 {
                let sent = tx.send_msg(
                    fd,
                    Some(&meta[rest[0]].from),
                    rest[..run].iter().map(|&i| reply(i)),
                    Some(len as u16),
                    Wait::Socket,
                );
                if sent.is_err() {
                    gso = false; // refused: plain datagrams from now on
                    continue;
                }
                sent
            } else {
                let mut out = tx.batch();
                for &i in rest {
                    if !out.push(Some(&meta[i].from), [reply(i)], None) {
                        break; // the rest goes in the next call
                    }
                }
                out.send(fd, Wait::Socket)
            };
            match result {
                Ok(k) => {
                    echoed += k as u64;
                    done += k.max(1);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    failed += 1;
                    done += 1;
                }
            }
        }
    }
    eprintln!("udpecho: {echoed} echoed, {failed} failed");
    Ok(())
}
