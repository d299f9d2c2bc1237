//! The echo server: UDP and TCP on one port.
//!
//! UDP runs as one task that receives, decides (drop? delay?), answers and
//! receives again, with one reusable buffer and no allocation per datagram
//! on the normal path. With `--delay`, replies wait in a bounded FIFO queue
//! served by a second task (the delay is the same for every datagram, so
//! FIFO order is due-time order); when that queue is full a datagram is
//! dropped, which is what UDP may do anyway, and counted.
//!
//! TCP runs a task per connection, capped by a semaphore sized from the
//! open-file limit (limit before you accept). Each connection reads and
//! writes at the same time: a reader turns input into answers and a writer
//! sends them, joined by a channel of at most [`CHUNKS_IN_FLIGHT`] chunks.
//! A client that streams without reading therefore fills that channel and
//! its own socket buffers and is then simply not read from any more, which
//! bounds the memory it can cost us, while a client that reads as it writes
//! never deadlocks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::protocol::{Reply, StreamReply};
use crate::error::Result;

/// Largest UDP payload (65,535 minus IP and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// Bytes read from a TCP connection at once.
const READ_CHUNK: usize = 64 * 1024;

/// Answer chunks queued between a connection's reader and writer.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Delayed UDP replies that may wait at once.
const DELAY_QUEUE: usize = 4096;

/// How long shutdown waits for connections to wind down.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// How an echo server answers; built from `sockit echo serve` flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// What each datagram / chunk / line is answered with.
    pub reply: Reply,
    /// Probability of silently dropping a UDP datagram (`--drop`).
    pub drop: f64,
    /// Seed for the drop pattern, so a lossy run can be repeated exactly.
    pub seed: u64,
    /// Time every reply waits before it is sent (`--delay`).
    pub delay: Duration,
}

/// What the UDP side did, reported when it stops (the ping lab compares
/// its measured loss with `dropped`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpStats {
    pub received: u64,
    pub dropped: u64,
    pub answered: u64,
    /// Replies lost because the delay queue was full or sending failed.
    pub failed: u64,
}

/// Serves echo over UDP on `socket` until `shutdown` is cancelled.
pub async fn run_udp(
    socket: UdpSocket,
    config: Config,
    shutdown: CancellationToken,
) -> Result<UdpStats> {
    let socket = Arc::new(socket);
    let mut stats = UdpStats::default();
    let delayed = if config.delay.is_zero() {
        None
    } else {
        let (tx, rx) = mpsc::channel(DELAY_QUEUE);
        let sender = tokio::spawn(send_delayed(socket.clone(), rx));
        Some((tx, sender))
    };
    let queue = delayed.as_ref().map(|(tx, _)| tx);
    tokio::select! {
        result = udp_loop(&socket, &config, queue, &mut stats) => result?,
        _ = shutdown.cancelled() => {}
    }
    if let Some((tx, sender)) = delayed {
        drop(tx);
        if let Ok(failed) = sender.await {
            stats.failed += failed;
            stats.answered = stats.answered.saturating_sub(failed);
        }
    }
    tracing::info!(
        "udp: {} datagrams received, {} dropped (--drop), {} answered, {} failed",
        stats.received,
        stats.dropped,
        stats.answered,
        stats.failed
    );
    Ok(stats)
}

async fn udp_loop(
    socket: &UdpSocket,
    config: &Config,
    delayed: Option<&mpsc::Sender<(Instant, SocketAddr, Bytes)>>,
    stats: &mut UdpStats,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // A stray ICMP error or a transient failure must not end the
                // server; anything persistent would repeat, so log quietly.
                tracing::debug!("udp receive failed: {e}");
                continue;
            }
        };
        stats.received += 1;
        if config.drop > 0.0 && rng.random_bool(config.drop) {
            stats.dropped += 1;
            tracing::trace!("dropped a datagram from {peer}");
            continue;
        }
        config.reply.datagram(&buf[..len], &mut out);
        match delayed {
            None => match socket.send_to(&out, peer).await {
                Ok(_) => stats.answered += 1,
                Err(e) => {
                    stats.failed += 1;
                    tracing::debug!("udp reply to {peer} failed: {e}");
                }
            },
            Some(queue) => {
                let item = (Instant::now() + config.delay, peer, Bytes::copy_from_slice(&out));
                match queue.try_send(item) {
                    Ok(()) => stats.answered += 1,
                    Err(_) => stats.failed += 1,
                }
            }
        }
    }
}

/// Sends delayed replies when they are due; returns how many failed.
async fn send_delayed(
    socket: Arc<UdpSocket>,
    mut queue: mpsc::Receiver<(Instant, SocketAddr, Bytes)>,
) -> u64 {
    let mut failed = 0;
    while let Some((due, peer, reply)) = queue.recv().await {
        tokio::time::sleep_until(due).await;
        if let Err(e) = socket.send_to(&reply, peer).await {
            failed += 1;
            tracing::debug!("delayed udp reply to {peer} failed: {e}");
        }
    }
    failed
}

/// Serves echo over TCP on `listener` until `shutdown` is cancelled.
pub async fn run_tcp(
    listener: TcpListener,
    config: Config,
    max_connections: usize,
    shutdown: CancellationToken,
) -> Result<()> {
    let limit = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = shutdown.cancelled() => break,
        };
        let config = config.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tracing::debug!("tcp connection from {peer}");
            tokio::select! {
                result = serve_connection(stream, config) => {
                    if let Err(e) = result {
                        tracing::debug!("tcp connection from {peer} ended: {e}");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    Ok(())
}

/// Accepts the next connection, backing off instead of failing when the
/// process runs out of file descriptors or the peer reset early.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                crate::net::keepalive(&stream);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One TCP connection: read and answer concurrently until the peer is done
/// sending and every answer has been written, then close our side.
async fn serve_connection(mut stream: TcpStream, config: Config) -> std::io::Result<()> {
    let (mut reader, mut writer) = stream.split();
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(CHUNKS_IN_FLIGHT);
    let delay = config.delay;
    let read_side = async move {
        let mut state = StreamReply::new(config.reply);
        let mut input = BytesMut::with_capacity(READ_CHUNK);
        let mut answer = BytesMut::new();
        loop {
            input.reserve(READ_CHUNK);
            let n = reader.read_buf(&mut input).await?;
            let arrived = Instant::now();
            let chunk = if n == 0 {
                state.finish(&mut answer);
                answer.split().freeze()
            } else if state.is_identity() {
                input.split().freeze()
            } else {
                state.push(&input, &mut answer);
                input.clear();
                answer.split().freeze()
            };
            if !chunk.is_empty() && tx.send((arrived, chunk)).await.is_err() {
                return Ok(()); // writer failed; its error is reported
            }
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    let write_side = async move {
        while let Some((arrived, chunk)) = rx.recv().await {
            if !delay.is_zero() {
                tokio::time::sleep_until(arrived + delay).await;
            }
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await
    };
    tokio::try_join!(read_side, write_side)?;
    Ok(())
}

/// Convenience for callers that bind and serve both protocols.
pub async fn run(
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    config: Config,
    max_connections: usize,
    shutdown: CancellationToken,
) -> Result<()> {
    let tcp_task = async {
        match tcp {
            Some(listener) => run_tcp(listener, config.clone(), max_connections, shutdown.clone()).await,
            None => Ok(()),
        }
    };
    let udp_task = async {
        match udp {
            Some(socket) => run_udp(socket, config.clone(), shutdown.clone()).await.map(|_| ()),
            None => Ok(()),
        }
    };
    let (tcp_result, udp_result) = tokio::join!(tcp_task, udp_task);
    tcp_result.and(udp_result)
}
