//! The UDP side of the echo server.
//!
//! UDP's hot path is batched and runs on a thread of its own. One
//! `recvmmsg` takes up to [`BATCH`] queued datagrams into reusable
//! full-size buffers; each is then decided in arrival order (one seeded
//! `--drop` draw per datagram, the same sequence as receiving one at a
//! time) and answered into a reusable reply buffer, so nothing is
//! allocated per datagram; one `sendmmsg` sends the answers, each to the
//! exact address its datagram came from (v4-mapped ones on a dual-stack
//! socket included). A run of equal-sized small replies to one peer goes
//! out as one UDP_SEGMENT (GSO) message, which the kernel cuts into the same
//! separate datagrams later and more cheaply; replies to different peers
//! or of different sizes are never merged, and if the kernel or the route
//! refuses GSO the loop sends plain datagrams from then on. Two system
//! calls per batch instead of two per datagram leave mostly the kernel's
//! own cost per datagram.
//!
//! The socket also asks for UDP_GRO, the receiving twin of GSO: a burst of
//! equal-sized datagrams from one sender that reaches us as one packet (a
//! client sending with UDP_SEGMENT, on loopback; or a NIC's coalescing) is
//! then received as one buffer plus its segment size, instead of being cut
//! into separate datagrams by the kernel first. The loop splits such a
//! buffer back into its datagrams (all of the segment size but perhaps the
//! last, which may be shorter) and treats each exactly like a datagram
//! received on its own: its own `--drop` draw in order, its own reply, its
//! own count. Receive buffers hold any UDP payload, so nothing is cut; if
//! the kernel still reports a cut (MSG_TRUNC) or a lost control message
//! (MSG_CTRUNC), what arrived is answered as it is and the cut is counted.
//! If the kernel refuses UDP_GRO, datagrams simply arrive one by one.
//!
//! Why a thread and not a task: in the runtime, every batch also paid for
//! epoll, a task wake-up and a hand-over between threads. Measured on
//! loopback as server CPU per 64-byte datagram: 3.5 us for the batched
//! loop inside the caller's future, 2.6 us as a spawned task, 2.0 us on
//! this thread, 1.45 us with GSO (the seed's Python server: 3.4 us).
//! Without `--delay` the socket is made blocking with a receive timeout of
//! [`SHUTDOWN_POLL`], and `recvmmsg(MSG_WAITFORONE)` itself waits for the
//! first datagram: an idle server wakes straight into its receive, one
//! system call per arrival instead of poll(2) plus a receive. That is what
//! a ping-pong client sees as latency (`sockit ping -i 0` measured 16.5 us
//! full round trip with poll, against 14 us for a bare blocking echo, when
//! client and server run on different CPUs). Sends stay non-blocking
//! (MSG_DONTWAIT). With `--delay` the socket is shared with the runtime
//! and must stay non-blocking, so the thread calls poll(2) when nothing is
//! queued. Either way it waits at most [`SHUTDOWN_POLL`] at a time and
//! sees the cancellation token within that. Receive errors (a stray ICMP error, say) are logged
//! and survived; a full send buffer is waited out with poll, never spun on.
//!
//! With `--delay`, replies wait in a bounded FIFO queue served by a task
//! that sends from a second handle on the same socket (the delay is the
//! same for every datagram, so FIFO order is due-time order); when that
//! queue is full a datagram is dropped, which is what UDP may do anyway,
//! and counted.
//!
//! The system calls themselves (and their `unsafe`) are in
//! [`crate::sys::udp`]; this module decides what to receive, answer and
//! send, and in what order.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::server::Config;
use crate::error::{Error, Result};
use crate::sys::udp::{GSO_MAX_SEGMENTS, Mmsg, RecvMeta, Wait, enable_gro};
use crate::sys::{self, Ready};

/// Bytes per receive buffer: more than any UDP payload (65,507 bytes over
/// IPv4, 65,527 over IPv6) and than any GRO-coalesced buffer (one IP
/// packet's payload, at most 65,535 bytes), so no datagram is ever cut.
const RECV_BUFFER: usize = 65_536;

/// Buffers taken from the socket per system call at most (each one
/// datagram, or with GRO several). 32 full-size buffers are 2 MiB of address
/// space, of which only the pages that datagrams reach are ever touched.
const BATCH: usize = 32;

/// Replies sent per `sendmmsg` at most (a GSO message takes up to
/// [`GSO_MAX_SEGMENTS`] of them).
const SEND_BATCH: usize = 64;

/// Largest reply sent with UDP generic segmentation offload: it must fit
/// the path MTU whole (GSO cannot fragment), and 1,200 bytes plus headers
/// fits the 1,280 bytes every IPv6 link, and any sane IPv4 one, carries.
const GSO_MAX_SEGMENT: usize = 1200;

/// Most payload bytes in one GSO message (an IP packet's 64 KiB, less
/// headers); at most [`GSO_MAX_SEGMENTS`] datagrams go in one, too.
const GSO_MAX_BYTES: usize = 65_000;

/// Delayed UDP replies that may wait at once.
const DELAY_QUEUE: usize = 4096;

/// Longest the UDP loop blocks in one wait, so that it notices shutdown.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// What the UDP side did, reported when it stops (the ping lab compares
/// its measured loss with `dropped`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpStats {
    pub received: u64,
    pub dropped: u64,
    /// Datagrams from peers `--allow`/`--deny` refuse (not answered).
    pub refused: u64,
    pub answered: u64,
    /// Replies lost because the delay queue was full or sending failed.
    pub failed: u64,
    /// Receives the kernel reported cut short (MSG_TRUNC, or MSG_CTRUNC
    /// with UDP_GRO): what arrived was still answered as it was.
    pub truncated: u64,
}

/// Serves echo over UDP on `socket` until `shutdown` is cancelled.
pub async fn run_udp(
    socket: UdpSocket,
    config: Config,
    shutdown: CancellationToken,
) -> Result<UdpStats> {
    // The hot loop gets a thread of its own, and the socket leaves the
    // runtime's epoll set so that arrivals wake only that thread.
    let socket = socket
        .into_std()
        .map_err(|e| Error::io("cannot take over the UDP socket", e))?;
    let blocking = config.delay.is_zero()
        && match socket
            .set_read_timeout(Some(SHUTDOWN_POLL))
            .and_then(|()| socket.set_nonblocking(false))
        {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("udp: cannot make the socket blocking ({e}); polling instead");
                let _ = socket.set_nonblocking(true);
                false
            }
        };
    let (queue, sender) = if config.delay.is_zero() {
        (None, None)
    } else {
        // A second handle on the same socket, so that delayed replies come
        // from the same port; both stay non-blocking, as the loop expects.
        let sender_socket = socket
            .try_clone()
            .and_then(UdpSocket::from_std)
            .map_err(|e| Error::io("cannot share the UDP socket", e))?;
        let (tx, rx) = mpsc::channel(DELAY_QUEUE);
        (
            Some(tx),
            Some(tokio::spawn(send_delayed(sender_socket, rx))),
        )
    };
    let looped = tokio::task::spawn_blocking(move || {
        let mut stats = UdpStats::default();
        udp_loop(&socket, &config, queue, blocking, &shutdown, &mut stats);
        stats
    })
    .await;
    let mut stats = match looped {
        Ok(stats) => stats,
        Err(e) => return Err(Error::io("the UDP loop failed", io::Error::other(e))),
    };
    // The loop dropped its end of the queue; what is queued still goes out.
    if let Some(sender) = sender
        && let Ok(failed) = sender.await
    {
        stats.failed += failed;
        stats.answered = stats.answered.saturating_sub(failed);
    }
    tracing::info!(
        "udp: {} datagrams received, {} dropped (--drop), {} refused (--allow/--deny), {} answered, {} failed, {} cut short",
        stats.received,
        stats.dropped,
        stats.refused,
        stats.answered,
        stats.failed,
        stats.truncated
    );
    Ok(stats)
}

/// The UDP hot loop, on its own thread until `shutdown` is cancelled: take
/// a batch, decide and answer each datagram in arrival order, send the
/// answers, and wait (at most [`SHUTDOWN_POLL`]) only when nothing is queued:
/// in the receive itself if `blocking` (the socket is blocking with that
/// receive timeout), else in poll(2).
fn udp_loop(
    socket: &std::net::UdpSocket,
    config: &Config,
    delayed: Option<mpsc::Sender<(Instant, SocketAddr, Bytes)>>,
    blocking: bool,
    shutdown: &CancellationToken,
    stats: &mut UdpStats,
) {
    let fd = socket.as_fd();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut gso = true;
    let gro = match enable_gro(fd) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(
                "udp receive offload (UDP_GRO) unavailable ({e}); datagrams come one by one"
            );
            false
        }
    };
    let mut batch = Batch::new(gro);
    let mut tx = Mmsg::new(SEND_BATCH);
    while !shutdown.is_cancelled() {
        let received = match batch.receive(fd, blocking) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !blocking {
                    wait_for(fd, Ready::Read);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // A stray ICMP error or a transient failure must not end the
                // server; anything persistent would repeat, so log quietly.
                tracing::debug!("udp receive failed: {e}");
                continue;
            }
        };
        let arrived = Instant::now();
        batch.answer.clear();
        batch.origin.clear();
        for slot in 0..received {
            stats.truncated += u64::from(batch.meta[slot].truncated);
            if !config.access.is_open() {
                let from = batch.peer(slot);
                if from.is_none_or(|peer| !config.access.permits(peer.ip())) {
                    let n = batch.datagrams(slot).count() as u64;
                    stats.refused += n;
                    if let Some(peer) = from {
                        config.access.refuse(peer, "a datagram");
                    }
                    continue;
                }
            }
            // One buffer holds one datagram, or with GRO several, each
            // handled exactly as if it had come alone.
            for range in batch.datagrams(slot) {
                stats.received += 1;
                if config.drop > 0.0 && rng.random_bool(config.drop) {
                    stats.dropped += 1;
                    tracing::trace!("dropped a datagram from {}", batch.peer_name(slot));
                    continue;
                }
                let r = batch.origin.len();
                let (input, out) = batch.input_and_reply(slot, range);
                config.reply.datagram(input, out);
                match &delayed {
                    None => batch.answer.push(r),
                    Some(queue) => {
                        let Some(peer) = batch.peer(slot) else {
                            stats.failed += 1;
                            continue;
                        };
                        let reply = Bytes::copy_from_slice(&batch.replies[r]);
                        match queue.try_send((arrived + config.delay, peer, reply)) {
                            Ok(()) => stats.answered += 1,
                            Err(_) => stats.failed += 1,
                        }
                    }
                }
            }
        }
        send_answers(fd, &batch, &mut tx, &mut gso, shutdown, stats);
    }
}

/// Sends the replies of `batch.answer`, a `sendmmsg` per run of them (its
/// headers built in `tx`). A reply that cannot be sent is counted and
/// skipped; a full send buffer is waited out (poll for writability, no
/// spinning) unless we are shutting down, when what is left is counted as
/// failed. If a GSO message is refused, `gso` is turned off for good and
/// its replies go out one by one.
fn send_answers(
    fd: BorrowedFd<'_>,
    batch: &Batch,
    tx: &mut Mmsg,
    gso: &mut bool,
    shutdown: &CancellationToken,
    stats: &mut UdpStats,
) {
    let mut done = 0;
    while done < batch.answer.len() {
        let rest = &batch.answer[done..];
        match batch.send(fd, tx, rest, *gso) {
            Ok(sent) => {
                // The kernel stops at the first message it cannot send and
                // reports why on the next call, which starts with it.
                stats.answered += sent as u64;
                done += sent.max(1);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if shutdown.is_cancelled() {
                    stats.failed += rest.len() as u64;
                    return;
                }
                wait_for(fd, Ready::Write);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if batch.group_len(rest, *gso) > 1 => {
                // Old kernel, no checksum offload on the route, IPsec...:
                // whatever the reason, plain datagrams still work.
                tracing::debug!("udp segmentation offload refused ({e}); not using it any more");
                *gso = false;
            }
            Err(e) => {
                stats.failed += 1;
                tracing::debug!(
                    "udp reply to {} failed: {e}",
                    batch.peer_name(batch.origin[rest[0]])
                );
                done += 1;
            }
        }
    }
}

/// Blocks until `fd` is ready as asked, an error is pending on it, or
/// [`SHUTDOWN_POLL`] has passed, whichever is first (poll(2)).
fn wait_for(fd: BorrowedFd<'_>, ready: Ready) {
    // The result does not matter: the caller simply tries again (an error
    // or EINTR just means an earlier retry).
    let _ = sys::wait(fd, ready, SHUTDOWN_POLL);
}

/// The buffers of one batch, allocated once and reused: the received
/// buffers with what the kernel said of each (length, sender, GRO segment
/// size), the replies (one per datagram answered), and which replies go
/// out now. The headers the system calls need live in [`Mmsg`] scratch
/// (`rx` here, the loop's `tx` for sending), which points into these
/// buffers only for the duration of a call.
struct Batch {
    /// [`BATCH`] receive buffers of [`RECV_BUFFER`] bytes, back to back.
    /// Allocated zeroed, so only the pages datagrams reach are ever mapped.
    data: Box<[u8]>,
    /// What each receive buffer got: its length, its GRO segment size (0 if
    /// it holds one datagram, otherwise its datagrams are this long, the
    /// last perhaps shorter), whether the kernel reported it cut short, and
    /// its sender as the kernel wrote it (replies go back to exactly that
    /// address: v4-mapped, flow info and scope included).
    meta: Box<[RecvMeta]>,
    /// Scratch headers for the receives (with GRO control buffers if on).
    rx: Mmsg,
    /// The reply to each datagram answered in this batch, in arrival order
    /// (grown as needed; capacity kept between batches) ...
    replies: Vec<Vec<u8>>,
    /// ... and the receive buffer (so the sender) each came from.
    origin: Vec<usize>,
    /// Replies sent now, in arrival order.
    answer: Vec<usize>,
}

impl Batch {
    /// Buffers for a batch, reading UDP_GRO segment sizes if `gro`.
    fn new(gro: bool) -> Self {
        let mut rx = Mmsg::new(BATCH);
        rx.set_gro(gro);
        Batch {
            data: vec![0u8; BATCH * RECV_BUFFER].into_boxed_slice(),
            meta: vec![RecvMeta::default(); BATCH].into_boxed_slice(),
            rx,
            replies: (0..BATCH).map(|_| Vec::new()).collect(),
            origin: Vec::with_capacity(BATCH),
            answer: Vec::with_capacity(BATCH),
        }
    }

    /// Where in buffer `slot` each of its datagrams lies, in order.
    fn datagrams(&self, slot: usize) -> impl Iterator<Item = std::ops::Range<usize>> + use<> {
        self.meta[slot].datagrams()
    }

    /// Datagram `range` of buffer `slot`, and a buffer for its reply, the
    /// next one (index `origin.len()` before the call), marked as coming
    /// from `slot`.
    fn input_and_reply(
        &mut self,
        slot: usize,
        range: std::ops::Range<usize>,
    ) -> (&[u8], &mut Vec<u8>) {
        let r = self.origin.len();
        self.origin.push(slot);
        if r == self.replies.len() {
            self.replies.push(Vec::new());
        }
        let input = &self.data[slot * RECV_BUFFER..][..self.meta[slot].len][range];
        (input, &mut self.replies[r])
    }

    /// The sender of buffer `i`, if it is an IPv4 or IPv6 address (on a
    /// UDP socket it always is).
    fn peer(&self, i: usize) -> Option<SocketAddr> {
        self.meta[i].from.to_socket_addr()
    }

    /// The sender of buffer `i` for log lines.
    fn peer_name(&self, i: usize) -> String {
        self.peer(i)
            .map_or_else(|| "an unknown address".to_owned(), |peer| peer.to_string())
    }

    /// Takes up to [`BATCH`] queued buffers (datagrams, or with GRO also
    /// coalesced runs of them) with one `recvmmsg`; returns how many (at
    /// least one) or the error, WouldBlock when none is queued. With `wait`
    /// (on a blocking socket) it first waits for one, up to the socket's
    /// receive timeout, then takes only what is queued (MSG_WAITFORONE);
    /// without, it never waits (MSG_DONTWAIT). Nothing fits RECV_BUFFER
    /// badly enough to be cut, but should the kernel say so, what arrived is
    /// kept (as recv_from would) and the cut is marked.
    fn receive(&mut self, fd: BorrowedFd<'_>, wait: bool) -> io::Result<usize> {
        let wait = if wait { Wait::Socket } else { Wait::Never };
        self.rx.recv(
            fd,
            self.data.chunks_exact_mut(RECV_BUFFER),
            &mut self.meta,
            wait,
        )
    }

    /// How many of the replies `slots` starts with (indices into
    /// `replies`) go out as one message: with `gso`, a run of equal-sized,
    /// small, non-empty replies to one peer; otherwise (or when no such run
    /// starts here) one.
    fn group_len(&self, slots: &[usize], gso: bool) -> usize {
        let Some(&first) = slots.first() else {
            return 0;
        };
        let len = self.replies[first].len();
        if !gso || len == 0 || len > GSO_MAX_SEGMENT {
            return 1;
        }
        let from = self.origin[first];
        let peer = self.peer(from);
        let most = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / len);
        1 + slots[1..]
            .iter()
            .take(most - 1)
            .take_while(|&&r| {
                // Replies to datagrams of one buffer share their sender.
                self.replies[r].len() == len
                    && (self.origin[r] == from || self.peer(self.origin[r]) == peer)
            })
            .count()
    }

    /// Sends the replies in `slots` (up to [`SEND_BATCH`]) back to
    /// their senders with one non-blocking `sendmmsg` (headers built in
    /// `tx`, which holds [`SEND_BATCH`] of them), a message per
    /// [`group_len`](Self::group_len) run (a run of several is one UDP_SEGMENT
    /// message the kernel cuts into separate datagrams). Returns how many
    /// replies went out: all, or those before the first message that
    /// failed. An error means the first message failed.
    fn send(
        &self,
        fd: BorrowedFd<'_>,
        tx: &mut Mmsg,
        slots: &[usize],
        gso: bool,
    ) -> io::Result<usize> {
        let slots = &slots[..slots.len().min(SEND_BATCH)];
        let mut out = tx.batch();
        let mut at = 0;
        while at < slots.len() {
            let run = &slots[at..][..self.group_len(&slots[at..], gso)];
            // Each reply goes back to the exact address its datagram came
            // from; group_len only groups replies of at most GSO_MAX_SEGMENT
            // bytes, all to that one address.
            let to = &self.meta[self.origin[run[0]]].from;
            let segment =
                (run.len() > 1).then(|| self.replies[run[0]].len().min(GSO_MAX_SEGMENT) as u16);
            let replies = run.iter().map(|&r| self.replies[r].as_slice());
            // SEND_BATCH replies always fit: no run is left out.
            if !out.push(Some(to), replies, segment) {
                break;
            }
            at += run.len();
        }
        out.send(fd, Wait::Never)
    }
}

/// Sends delayed replies when they are due; returns how many failed.
async fn send_delayed(
    socket: UdpSocket,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::protocol::Reply;
    use crate::sys::udp::RawAddr;
    use std::net::{SocketAddrV4, UdpSocket as StdUdpSocket};
    use tokio::task::JoinHandle;

    const WAIT: Duration = Duration::from_secs(2);

    fn config(reply: Reply, drop: f64, delay: Duration) -> Config {
        Config {
            reply,
            drop,
            seed: 7,
            delay,
            access: Default::default(),
        }
    }

    /// Starts run_udp on `addr`; None if that address cannot be bound here
    /// (no IPv6).
    fn start(
        addr: &str,
        config: Config,
    ) -> Option<(SocketAddr, CancellationToken, JoinHandle<Result<UdpStats>>)> {
        let socket = crate::net::bind_udp(addr.parse().ok()?).ok()?;
        let port = socket.local_addr().ok()?.port();
        let token = CancellationToken::new();
        let handle = tokio::spawn(run_udp(socket, config, token.clone()));
        let target = if addr.starts_with('[') {
            "[::1]"
        } else {
            "127.0.0.1"
        };
        Some((format!("{target}:{port}").parse().ok()?, token, handle))
    }

    fn client(addr: &str) -> StdUdpSocket {
        let socket = StdUdpSocket::bind(addr).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        socket
    }

    fn recv(socket: &StdUdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; RECV_BUFFER];
        let (n, _) = socket.recv_from(&mut buf).expect("a reply");
        buf.truncate(n);
        buf
    }

    /// Stops the server and checks that it stopped within a second.
    async fn stop(token: CancellationToken, handle: JoinHandle<Result<UdpStats>>) -> UdpStats {
        token.cancel();
        let started = std::time::Instant::now();
        let stats = tokio::time::timeout(Duration::from_secs(1), handle)
            .await
            .expect("shutdown within 1 s")
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        stats
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bursts_from_two_peers_keep_boundaries_sizes_and_order() {
        let (server, token, handle) =
            start("127.0.0.1:0", config(Reply::Echo, 0.0, Duration::ZERO)).unwrap();
        let (a, b) = (client("127.0.0.1:0"), client("127.0.0.1:0"));
        let mut total = 0;
        for round in 0..5 {
            let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
            for i in 0..24 {
                // Mixed sizes (and an empty datagram) from a, equal ones from
                // b; a batch's replies form runs (GSO messages) that must end
                // at every change of peer or size.
                let size_a = [40, 40, 40, 100, 0, 40, 1300, 1300][i % 8];
                let mut msg_a = format!("a{round}.{i}.").into_bytes();
                msg_a.resize(size_a, b'a');
                let mut msg_b = format!("b{round}.{i}.").into_bytes();
                msg_b.resize(40, b'b');
                sent_a.push(msg_a);
                sent_b.push(msg_b);
            }
            // Odd rounds interleave the peers, even ones send all of a's
            // datagrams and then all of b's.
            for i in 0..24 {
                a.send_to(&sent_a[i], server).unwrap();
                if round % 2 == 1 {
                    b.send_to(&sent_b[i], server).unwrap();
                }
            }
            if round % 2 == 0 {
                for msg in &sent_b {
                    b.send_to(msg, server).unwrap();
                }
            }
            for (socket, sent) in [(&a, sent_a), (&b, sent_b)] {
                for want in sent {
                    assert_eq!(recv(socket), want);
                    total += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await; // idle, then stop
        let stats = stop(token, handle).await;
        assert_eq!(
            stats,
            UdpStats {
                received: total,
                dropped: 0,
                refused: 0,
                answered: total,
                failed: 0,
                truncated: 0
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dual_stack_answers_v4_mapped_and_v6_peers() {
        let Some((server, token, handle)) =
            start("[::]:0", config(Reply::Upper, 0.0, Duration::ZERO))
        else {
            return; // no IPv6 here
        };
        let v4 = client("127.0.0.1:0");
        let v6 = client("[::1]:0");
        let v4_server: SocketAddr = format!("127.0.0.1:{}", server.port()).parse().unwrap();
        // A run to each peer (one GSO message per peer if it fits a batch).
        for i in 0..16 {
            v4.send_to(format!("four {i:02}").as_bytes(), v4_server)
                .unwrap();
        }
        for i in 0..16 {
            v6.send_to(format!("six {i:02}").as_bytes(), server)
                .unwrap();
        }
        for i in 0..16 {
            assert_eq!(recv(&v4), format!("FOUR {i:02}").into_bytes());
            assert_eq!(recv(&v6), format!("SIX {i:02}").into_bytes());
        }
        let stats = stop(token, handle).await;
        assert_eq!(stats.answered, 32);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_draws_once_per_datagram_in_arrival_order_across_batches() {
        let (server, token, handle) =
            start("127.0.0.1:0", config(Reply::Echo, 0.3, Duration::ZERO)).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let socket = client("127.0.0.1:0");
        socket.connect(server).unwrap();
        let mut dropped = 0;
        for burst in 0..10u32 {
            let mut expected = Vec::new();
            for i in burst * 20..(burst + 1) * 20 {
                socket.send(&i.to_be_bytes()).unwrap();
                if rng.random_bool(0.3) {
                    dropped += 1;
                } else {
                    expected.push(i.to_be_bytes().to_vec());
                }
            }
            for want in expected {
                assert_eq!(recv(&socket), want);
            }
        }
        let stats = stop(token, handle).await;
        assert_eq!(
            stats,
            UdpStats {
                received: 200,
                dropped,
                refused: 0,
                answered: 200 - dropped,
                failed: 0,
                truncated: 0
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delayed_replies_keep_order_and_their_delay() {
        let delay = Duration::from_millis(100);
        let (server, token, handle) =
            start("127.0.0.1:0", config(Reply::Echo, 0.0, delay)).unwrap();
        let socket = client("127.0.0.1:0");
        let started = std::time::Instant::now();
        for i in 0..10u8 {
            socket.send_to(&[i], server).unwrap();
        }
        for i in 0..10u8 {
            assert_eq!(recv(&socket), [i]);
        }
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        let stats = stop(token, handle).await;
        assert_eq!(stats.answered, 10);
    }

    /// Sets slot `i` of `batch` to answer `reply` to `peer`.
    fn set_slot(batch: &mut Batch, i: usize, peer: SocketAddrV4, reply: &[u8]) {
        batch.meta[i].from = RawAddr::from(SocketAddr::V4(peer));
        batch.replies[i] = reply.to_vec();
        assert_eq!(batch.origin.len(), i, "slots are set in order");
        batch.origin.push(i);
        batch.answer.push(i);
    }

    #[test]
    fn refused_gso_falls_back_and_each_failure_is_counted_once() {
        let server = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let good = client("127.0.0.1:0");
        let SocketAddr::V4(good_addr) = good.local_addr().unwrap() else {
            unreachable!()
        };
        // Port 0 cannot be sent to (EINVAL): a GSO message to it fails, and
        // so does each datagram after the fallback.
        let bad_addr = SocketAddrV4::new([127, 0, 0, 1].into(), 0);
        let mut batch = Batch::new(false);
        set_slot(&mut batch, 0, good_addr, b"first");
        set_slot(&mut batch, 1, bad_addr, b"lost!");
        set_slot(&mut batch, 2, bad_addr, b"lost!");
        set_slot(&mut batch, 3, good_addr, b"last!");
        let mut gso = true;
        let mut stats = UdpStats::default();
        let shutdown = CancellationToken::new();
        let mut tx = Mmsg::new(SEND_BATCH);
        send_answers(
            server.as_fd(),
            &batch,
            &mut tx,
            &mut gso,
            &shutdown,
            &mut stats,
        );
        assert!(!gso);
        assert_eq!(
            stats,
            UdpStats {
                answered: 2,
                failed: 2,
                ..UdpStats::default()
            }
        );
        assert_eq!(recv(&good), b"first");
        assert_eq!(recv(&good), b"last!");
    }

    /// Sends `datagrams` from the connected `socket` as ONE UDP_SEGMENT
    /// (GSO) message of `segment`-byte datagrams: all but the last must be
    /// exactly that long, the last at most.
    fn send_gso(socket: &StdUdpSocket, datagrams: &[Vec<u8>], segment: usize) {
        let mut tx = Mmsg::new(datagrams.len());
        let bufs = datagrams.iter().map(Vec::as_slice);
        let sent = tx
            .send_msg(
                socket.as_fd(),
                None,
                bufs,
                Some(segment as u16),
                Wait::Socket,
            )
            .unwrap();
        assert_eq!(sent, datagrams.len());
    }

    /// `count` datagrams numbered from `first`, each `segment` bytes but the
    /// last, which is `last` bytes (at least 4, the number).
    fn burst(first: u32, count: u32, segment: usize, last: usize) -> Vec<Vec<u8>> {
        (first..first + count)
            .map(|i| {
                let mut d = i.to_be_bytes().to_vec();
                let size = if i + 1 == first + count {
                    last
                } else {
                    segment
                };
                d.resize(size, b'a' + (i % 26) as u8);
                d
            })
            .collect()
    }

    #[test]
    fn gro_receives_a_gso_burst_as_one_buffer_and_splits_it() {
        let server = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        if enable_gro(server.as_fd()).is_err() {
            return; // an old kernel: datagrams come one by one anyway
        }
        let client = client("127.0.0.1:0");
        client.connect(server.local_addr().unwrap()).unwrap();
        let sent = burst(0, 11, 40, 17);
        send_gso(&client, &sent, 40);
        let mut batch = Batch::new(true);
        let started = std::time::Instant::now();
        let got = loop {
            match batch.receive(server.as_fd(), false) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(started.elapsed() < WAIT, "nothing arrived");
                    wait_for(server.as_fd(), Ready::Read);
                }
                Err(e) => panic!("{e}"),
            }
        };
        // Coalesced: one buffer, its segment size, nothing cut.
        assert_eq!(got, 1);
        assert_eq!(
            (
                batch.meta[0].len,
                batch.meta[0].segment,
                batch.meta[0].truncated
            ),
            (417, 40, false)
        );
        let ranges: Vec<_> = batch.datagrams(0).collect();
        assert_eq!(ranges.len(), 11);
        assert_eq!(ranges[10], 400..417);
        for (range, want) in ranges.into_iter().zip(&sent) {
            let (input, _) = batch.input_and_reply(0, range);
            assert_eq!(input, &want[..]);
        }
        assert_eq!(batch.peer(0), Some(client.local_addr().unwrap()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gso_bursts_are_answered_per_datagram_with_per_datagram_drops() {
        let (server, token, handle) =
            start("127.0.0.1:0", config(Reply::Echo, 0.3, Duration::ZERO)).unwrap();
        // The drop draws a server receiving one datagram at a time makes.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let socket = client("127.0.0.1:0");
        socket.connect(server).unwrap();
        let (mut total, mut dropped) = (0u64, 0u64);
        // Bursts of 2 to 64 datagrams of various sizes, the last one shorter
        // (or, every third burst, as long), each a single GSO message;
        // between bursts, a plain datagram.
        for round in 0..12u32 {
            let count = [2, 64, 31, 5, 64, 17][round as usize % 6];
            let segment = [24, 8, 100, 1000, 40, 64][round as usize % 6];
            let last = if round % 3 == 0 { segment } else { 5 };
            let first = round * 1000;
            let mut sent = burst(first, count, segment, last);
            send_gso(&socket, &sent, segment);
            let plain = (first + 999).to_be_bytes().to_vec();
            socket.send(&plain).unwrap();
            sent.push(plain);
            let mut expected = Vec::new();
            for datagram in sent {
                total += 1;
                if rng.random_bool(0.3) {
                    dropped += 1;
                } else {
                    expected.push(datagram);
                }
            }
            for want in expected {
                assert_eq!(recv(&socket), want);
            }
        }
        let stats = stop(token, handle).await;
        assert_eq!(
            stats,
            UdpStats {
                received: total,
                dropped,
                refused: 0,
                answered: total - dropped,
                failed: 0,
                truncated: 0
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gso_bursts_from_two_peers_go_back_to_each_in_order() {
        let (server, token, handle) =
            start("127.0.0.1:0", config(Reply::Upper, 0.0, Duration::ZERO)).unwrap();
        let (a, b) = (client("127.0.0.1:0"), client("127.0.0.1:0"));
        a.connect(server).unwrap();
        b.connect(server).unwrap();
        for round in 0..5u32 {
            let sent_a = burst(round * 100, 40, 32, 20);
            let sent_b = burst(round * 100 + 50, 24, 32, 32);
            send_gso(&a, &sent_a, 32);
            send_gso(&b, &sent_b, 32);
            send_gso(&a, &sent_a, 32);
            for (socket, sent, times) in [(&a, &sent_a, 2), (&b, &sent_b, 1)] {
                for _ in 0..times {
                    for want in sent {
                        assert_eq!(recv(socket), want.to_ascii_uppercase());
                    }
                }
            }
        }
        let stats = stop(token, handle).await;
        assert_eq!(stats.received, 5 * (40 + 24 + 40));
        assert_eq!(stats.answered, stats.received);
    }
}
