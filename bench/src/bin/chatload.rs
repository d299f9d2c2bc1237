//! `chatload`: load generator for any line-relaying TCP chat server.
//!
//! It opens `--clients` connections to one chat room; the first `--senders`
//! of them also send `--messages` lines each, and every client counts what
//! it receives from every other one. It assumes nothing about the server's
//! framing beyond "a line sent by one client reaches the others as a line,
//! perhaps with something put in front of it", so it works against sockit's
//! chat server (`[guest3] text`), `ncat --chat` (`<user5> text`, once per
//! chunk it read) and the seed's Python server (raw chunks, no prefix).
//!
//! Every message is one ASCII line carrying a marker,
//! `CL <runid> <sender> <seq> <send_ns>` padded with `x` to `--size` bytes,
//! where `send_ns` is nanoseconds since this process started. A receiver
//! splits its stream at `\n` (keeping a partial last line for the next
//! read), looks for the marker anywhere in each line and ignores every line
//! without one (join notices, user lists, ...).
//!
//! Phases:
//! 1. connect: all clients connect (at most `--connect-concurrency` at a
//!    time; when the server is 127.0.0.1, each client binds a source address
//!    in 127.0.0.2..=127.0.0.250 first, so repeated runs do not run out of
//!    ephemeral ports, and every socket closes with SO_LINGER 0, leaving no
//!    TIME_WAIT). Then client 0 sends `CLSYNC <runid> <round>`, again at
//!    growing intervals until every other client has seen it: then the
//!    server has surely taken every client into the room. With
//!    `--join-wave K`, clients connect K at a time, each wave followed by a
//!    sync round, which keeps a burst of connects within a small listen
//!    backlog (ncat and the Python seed listen with 10: a larger burst
//!    overflows it, and connections the kernel then answered with a SYN
//!    cookie but could not queue are open on our side only). A client still
//!    not in the room a second into a round sends one `CLNUDGE` line (its
//!    first data segment, which carries the cookie again and so gets it
//!    accepted); one the server resets meanwhile is connected anew.
//!
//!    Then the `--stalled N` clients join (in the same waves, with the same
//!    source addresses and SO_LINGER 0). They never read, so they cannot
//!    see a sync line; instead each sends one line, `CLSTALL <runid> <k>`,
//!    right after connecting (its first data segment, so it also does the
//!    nudge's work), and a wave is in the room once some counted client has
//!    received every one of its lines: a server relays a line only from a
//!    member of the room. They are no receivers: nothing waits for them and
//!    no delivery to them is expected or counted. `connect_s` runs from the
//!    first connect until the last round (sync or stalled wave) is done.
//! 2. delivery: with `--pace all` (the default) each sender keeps at most
//!    `--window` messages that not every other client has received yet (the
//!    room goes at the pace of its slowest reader); with `--pace one` at
//!    most `--window` messages that one designated receiver has not
//!    received yet, so the room may run ahead of slower readers, as with
//!    independent real users. Sender `i`'s designated receiver is client
//!    `clients - 1 - i % (clients - senders)`, the non-senders taken in
//!    turn from the last client down, so that no receiver paces more than
//!    its share of senders; when every client sends it is client
//!    `(i + 1) % clients` (none for a client alone in the room). Should
//!    the server disconnect that receiver, the sender falls back to the
//!    `all` rule. A sender sends all it may in one write (or, with `--rate`,
//!    sends on a fixed schedule, still capped by the window). Either way
//!    every counted client receives and checks: receivers count deliveries
//!    per sender, tell duplicates from reordering with a bitmap of the
//!    (sender, seq) pairs seen, and record each delivery's latency (one
//!    clock read per read chunk) in one histogram. The phase ends when
//!    every message reached every other counted client (`complete`), when
//!    none arrived for `--idle` seconds (`idle`), or at `--timeout`. The
//!    server's CPU time (`--pid`) is read just before the senders start
//!    and just after the phase ends, so it covers this phase only (an
//!    `idle` end's wait included).
//! 3. report: a summary line, or one JSON object with `--json`. The exit
//!    status is 0 only if nothing was lost, duplicated or reordered and the
//!    server disconnected no counted client. Stalled clients the server
//!    has disconnected by then (a FIN or a reset arrived, as epoll reports
//!    it; nothing is read) are reported as `stalled_cut_off` and are no
//!    failure. A server that closes one with data still queued for it
//!    cannot send its FIN into the zero window, so such a cut-off shows
//!    only if it resets the connection (or drops what it queued first).
//!
//! Servers that relay raw chunks (ncat, the Python seed) can cut a line in
//! two when they read part of a sender's data; ncat then puts its prefix in
//! the middle of the line. A sender's unacknowledged data is at most
//! `--window` x `--size` bytes, so keep that within the server's read size
//! (ncat 8192, the Python seed 2048; the defaults give 2048).
//!
//! Loopback benchmarking only: the server must be in 127.0.0.0/8 or ::1.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use memchr::memmem::Finder;
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::{SysconfVar, sysconf};
use rlimit::Resource;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

/// Size of each worker thread's read buffer.
const READ_BUF: usize = 64 * 1024;
/// Longest partial line kept between reads; a longer line without a
/// newline cannot be one of ours and is dropped.
const MAX_TAIL: usize = 1 << 20;
/// Largest latency the histogram holds, in microseconds (one hour); larger
/// values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// How long after the first sync line of a round it is sent again while some
/// client has not seen it; the gap doubles up to SYNC_RESEND.
const SYNC_FIRST_RESEND: Duration = Duration::from_millis(5);
const SYNC_RESEND: Duration = Duration::from_secs(2);
/// How long after the first sync line of a round a client that has not
/// seen it sends its nudge.
const NUDGE_AFTER: Duration = Duration::from_secs(1);
/// Most sync lines sent.
const SYNC_ROUNDS: u32 = 60;
/// Most times one client is connected anew after the server reset its
/// connection while joining.
const MAX_RECONNECTS: u32 = 5;
/// Attempts per connection.
const CONNECT_ATTEMPTS: u32 = 3;
/// Longest one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the main task checks for the end of a phase.
const POLL: Duration = Duration::from_millis(5);
/// Longest a sender sleeps before looking at its window again, in case a
/// wake-up is missed (a receiver disconnected, say).
const SENDER_NAP: Duration = Duration::from_millis(50);
/// Most memory the receivers' bitmaps of seen messages may take.
const MAX_BITMAPS: u64 = 2 << 30;
/// File descriptors kept free beyond one per client.
const SPARE_FDS: u64 = 64;

/// Load generator for line-relaying chat servers (loopback benchmarking only).
#[derive(Parser, Debug)]
#[command(name = "chatload", version)]
struct Args {
    /// Chat server, as IP:PORT in 127.0.0.0/8 (or [::1]:PORT). Given
    /// more than once (several servers of one room, e.g. `chat serve
    /// --redis`), client `i` connects to the `i % N`th.
    #[arg(long, required = true)]
    addr: Vec<SocketAddr>,
    /// Connections to open.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clients: u32,
    /// How many of the clients (the first ones) also send.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    senders: u32,
    /// Messages per sender (0: connect, sync, perhaps --hold, and stop).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=100_000_000))]
    messages: u32,
    /// Per sender: most messages sent but not yet received (by every other
    /// client, or with `--pace one` by its designated receiver).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    window: u32,
    /// Whose receipts open a sender's window: `all` other clients' (the
    /// room goes at its slowest reader's pace), or `one` designated
    /// receiver's (client `clients - 1 - sender % (clients - senders)`, a
    /// non-sender; the room may run ahead of slower readers).
    #[arg(long, value_enum, default_value_t = Pace::All)]
    pace: Pace,
    /// Extra clients that join after the others (each announces itself with
    /// one line) and then never read. They are not receivers; the server
    /// cutting them off is reported (`stalled_cut_off`), not a failure.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    stalled: u32,
    /// Total messages per second into the room, spread evenly over the
    /// senders (the window still caps what is in flight). Default: as fast
    /// as the window allows.
    #[arg(long)]
    rate: Option<f64>,
    /// Line length in bytes, newline included (lines are padded with `x`;
    /// a line never gets shorter than its marker).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=65_536))]
    size: u32,
    /// The server's process id: its CPU time (utime + stime from
    /// /proc/PID/stat) over the delivery phase is reported. Given more
    /// than once, the sum over them.
    #[arg(long)]
    pid: Vec<u32>,
    /// Another process whose CPU time over the delivery phase is reported
    /// on its own (`redis_cpu_s`): the Redis between `--redis` servers.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Seconds the whole run may take (connect, sync and delivery; --hold
    /// comes on top).
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// The delivery phase ends when no message arrived for this many
    /// seconds.
    #[arg(long, default_value_t = 5.0)]
    idle: f64,
    /// Connection attempts in flight at once while joining.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connect_concurrency: u32,
    /// Connect this many clients at a time, each wave followed by a sync
    /// round that shows that the server took all of them in (0: all at
    /// once). Keeps the connects within a small listen backlog.
    #[arg(long, default_value_t = 0)]
    join_wave: u32,
    /// After the sync round: print `ready` on stderr and keep every
    /// connection open (and read) for this many seconds before the delivery
    /// phase.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Print one JSON object on stdout (the summary line goes to stderr).
    #[arg(long)]
    json: bool,
    /// Connect the counted clients in TLS to a server with this identity
    /// (its `identity SKT-...` line); `--stalled` clients stay plain.
    #[arg(long, value_name = "ID")]
    tls_pin: Option<String>,
}

/// A TLS client session as chatload's clients hold it.
type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A client's connection, plain or TLS.
enum Conn {
    Plain(tokio::net::TcpStream),
    Tls(Box<TlsStream>),
}

/// The writing half of a [`Conn`]. The plain one keeps `try_write` (the
/// syncookie nudge is one raw segment); a TLS one needs no nudge, its
/// handshake has put it in the server's accept queue.
enum Wr {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Box<TlsStream>>),
}

impl AsyncWrite for Wr {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Wr::Plain(w) => std::pin::Pin::new(w).poll_write(cx, buf),
            Wr::Tls(w) => std::pin::Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wr::Plain(w) => std::pin::Pin::new(w).poll_flush(cx),
            Wr::Tls(w) => std::pin::Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Wr::Plain(w) => std::pin::Pin::new(w).poll_shutdown(cx),
            Wr::Tls(w) => std::pin::Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// The TLS client settings for `--tls-pin`: sockit's own pinned trust
/// (any certificate whose key signs the handshake; the pin itself is
/// checked after it).
fn tls_connector(pin: &str) -> Result<(tokio_rustls::TlsConnector, sockit::trust::Trust)> {
    let id: sockit::identity::Id = pin.parse().map_err(|e| anyhow!("--tls-pin: {e}"))?;
    let trust = sockit::trust::Trust::Pin(id);
    let config = sockit::trust::client_config(&trust).map_err(|e| anyhow!("{e}"))?;
    Ok((tokio_rustls::TlsConnector::from(config), trust))
}

/// Connects client `i` (retrying) and, with `tls`, runs its handshake and
/// checks the pin.
async fn open(
    addr: SocketAddr,
    i: usize,
    deadline: Instant,
    tls: Option<Arc<(tokio_rustls::TlsConnector, sockit::trust::Trust)>>,
) -> Result<Conn> {
    let stream = connect_retry(addr, i, deadline).await?;
    let Some(tls) = tls else {
        return Ok(Conn::Plain(stream));
    };
    let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let session = tokio::time::timeout_at(deadline.into(), tls.0.connect(name, stream))
        .await
        .map_err(|_| anyhow!("client {i}: no TLS handshake within --timeout"))?
        .with_context(|| format!("client {i}: TLS handshake with {addr} failed"))?;
    let cert = session
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first());
    sockit::trust::check(&tls.1, &addr.to_string(), cert).map_err(|e| anyhow!("{e}"))?;
    Ok(Conn::Tls(Box::new(session)))
}

/// See `--pace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Pace {
    All,
    One,
}

impl Pace {
    fn name(self) -> &'static str {
        match self {
            Pace::All => "all",
            Pace::One => "one",
        }
    }
}

/// The client whose receipts pace `sender` under `--pace one`: the
/// non-senders (clients `senders..clients`) taken in turn from the last
/// one down, or, when every client sends, the next client; none for a
/// client alone in the room.
fn designated_receiver(clients: usize, senders: usize, sender: usize) -> Option<usize> {
    if clients > senders {
        Some(clients - 1 - sender % (clients - senders))
    } else {
        Some((sender + 1) % clients).filter(|&r| r != sender)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            let summary = report.summary();
            if args.json {
                eprintln!("{summary}");
                println!("{}", report.to_json());
            } else {
                println!("{summary}");
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("chatload: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the tasks share.
struct Shared {
    clients: usize,
    senders: usize,
    messages: usize,
    start: Instant,
    /// `CL <runid> `: the start of every message.
    data: Finder<'static>,
    /// `CLSYNC <runid> `, followed by the sync round.
    sync: Finder<'static>,
    /// `CLSTALL <runid> `, followed by the stalled client's number.
    stall: Finder<'static>,
    /// Per stalled client: a counted client received its `CLSTALL` line.
    stall_seen: Box<[AtomicBool]>,
    /// Per (sender, seq), at `sender * messages + seq`: how many receivers
    /// have it.
    counts: Box<[AtomicU32]>,
    /// Per sender: woken when one of its messages reached every receiver
    /// (and, with `--pace one`, its designated receiver).
    wake: Box<[Notify]>,
    /// With `--pace one`, per sender: its designated receiver.
    pacers: Option<Box<[Option<usize>]>>,
    /// With `--pace one`, per sender: how many of its messages (distinct
    /// ones) its designated receiver has received.
    paced: Box<[AtomicU32]>,
    /// Per client: the highest sync round whose line it saw (0: none).
    synced: Box<[AtomicU32]>,
    /// Woken whenever a client saw a sync line.
    sync_seen: Notify,
    /// Per client: the server closed or reset its connection.
    gone: Box<[AtomicBool]>,
    disconnected: AtomicUsize,
    /// Set when the run is over: later closes are ours, not the server's.
    stopping: AtomicBool,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    self_echo: AtomicU64,
    /// Lines with our marker that did not parse (a line cut and mixed with
    /// another by a server that relays raw chunks).
    corrupt: AtomicU64,
    /// Nanoseconds since `start`; `first_send` is u64::MAX until the first.
    first_send: AtomicU64,
    last_send: AtomicU64,
    last_delivery: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Deliveries after which a message counts as received by everybody:
    /// every other client, less those the server dropped.
    fn need(&self) -> u32 {
        let others = self.clients.saturating_sub(1);
        others.saturating_sub(self.disconnected.load(Relaxed)) as u32
    }

    fn mark_gone(&self, client: usize) {
        if self.stopping.load(Relaxed) {
            return;
        }
        if !self.gone[client].swap(true, Relaxed) {
            self.disconnected.fetch_add(1, Relaxed);
            // Windows waiting on this client may now be complete.
            for wake in self.wake.iter() {
                wake.notify_one();
            }
        }
    }
}

/// Latency histograms, one per thread that recorded any, merged at the end.
static HISTOGRAMS: Mutex<Vec<Arc<Mutex<Histogram<u64>>>>> = Mutex::new(Vec::new());

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
    static HISTOGRAM: RefCell<Option<Arc<Mutex<Histogram<u64>>>>> = const { RefCell::new(None) };
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating a latency histogram")
}

/// This thread's latency histogram (created and registered on first use).
fn thread_histogram() -> Result<Arc<Mutex<Histogram<u64>>>> {
    HISTOGRAM.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(h) = slot.as_ref() {
            return Ok(h.clone());
        }
        let h = Arc::new(Mutex::new(new_histogram()?));
        lock(&HISTOGRAMS).push(h.clone());
        *slot = Some(h.clone());
        Ok(h)
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One client's receiving side.
struct Receiver {
    id: usize,
    /// A partial line from the previous read.
    tail: Vec<u8>,
    /// Bit `sender * messages + seq`: that message was received (allocated
    /// at the first message).
    seen: Vec<u64>,
    /// Per sender: highest seq received, or u32::MAX for none.
    last: Vec<u32>,
}

/// Counters of one read chunk, added to the shared ones once per chunk.
#[derive(Default)]
struct ChunkCounts {
    delivered: u64,
    duplicates: u64,
    reordered: u64,
    self_echo: u64,
    corrupt: u64,
}

impl Receiver {
    fn new(id: usize) -> Self {
        Receiver {
            id,
            tail: Vec::new(),
            seen: Vec::new(),
            last: Vec::new(),
        }
    }

    /// Takes one read chunk: every complete line in it (the kept tail
    /// first), and keeps its last partial line.
    fn chunk(&mut self, sh: &Shared, data: &[u8], hist: &mut Histogram<u64>) {
        let now = sh.now_ns();
        let mut c = ChunkCounts::default();
        let mut rest = data;
        if !self.tail.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    let mut line = std::mem::take(&mut self.tail);
                    line.extend_from_slice(&rest[..end]);
                    self.line(sh, &line, now, hist, &mut c);
                    line.clear();
                    self.tail = line;
                    rest = &rest[end + 1..];
                }
                None => {
                    self.keep(rest);
                    rest = &[];
                }
            }
        }
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.line(sh, &rest[..end], now, hist, &mut c);
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            self.keep(rest);
        }
        if c.delivered > 0 {
            sh.delivered.fetch_add(c.delivered, Relaxed);
            sh.last_delivery.fetch_max(now, Relaxed);
        }
        for (total, n) in [
            (&sh.duplicates, c.duplicates),
            (&sh.reordered, c.reordered),
            (&sh.self_echo, c.self_echo),
            (&sh.corrupt, c.corrupt),
        ] {
            if n > 0 {
                total.fetch_add(n, Relaxed);
            }
        }
    }

    fn keep(&mut self, partial: &[u8]) {
        if self.tail.len() + partial.len() > MAX_TAIL {
            self.tail.clear();
        } else {
            self.tail.extend_from_slice(partial);
        }
    }

    fn line(
        &mut self,
        sh: &Shared,
        line: &[u8],
        now: u64,
        hist: &mut Histogram<u64>,
        c: &mut ChunkCounts,
    ) {
        let mut any = false;
        for at in sh.data.find_iter(line) {
            any = true;
            match parse_fields(&line[at + sh.data.needle().len()..]) {
                Some((sender, seq, sent))
                    if (sender as usize) < sh.senders && (seq as usize) < sh.messages =>
                {
                    self.deliver(sh, sender as usize, seq, now.saturating_sub(sent), hist, c);
                }
                _ => c.corrupt += 1,
            }
        }
        if any {
            return;
        }
        if let Some(at) = sh.sync.find(line)
            && let Some((round, _)) = parse_num(&line[at + sh.sync.needle().len()..])
        {
            sh.synced[self.id].fetch_max(round.min(u64::from(u32::MAX)) as u32, Relaxed);
            sh.sync_seen.notify_one();
        } else if let Some(at) = sh.stall.find(line)
            && let Some((k, _)) = parse_num(&line[at + sh.stall.needle().len()..])
            && let Some(seen) = usize::try_from(k).ok().and_then(|k| sh.stall_seen.get(k))
        {
            seen.store(true, Relaxed);
            sh.sync_seen.notify_one();
        }
    }

    fn deliver(
        &mut self,
        sh: &Shared,
        sender: usize,
        seq: u32,
        latency_ns: u64,
        hist: &mut Histogram<u64>,
        c: &mut ChunkCounts,
    ) {
        if sender == self.id {
            c.self_echo += 1;
            return;
        }
        if self.seen.is_empty() {
            self.seen = vec![0; (sh.senders * sh.messages).div_ceil(64)];
            self.last = vec![u32::MAX; sh.senders];
        }
        let bit = sender * sh.messages + seq as usize;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if self.seen[word] & mask != 0 {
            c.duplicates += 1;
            return;
        }
        self.seen[word] |= mask;
        let last = &mut self.last[sender];
        if *last != u32::MAX && seq < *last {
            c.reordered += 1;
        } else {
            *last = seq;
        }
        c.delivered += 1;
        hist.saturating_record((latency_ns / 1000).max(1));
        let have = sh.counts[bit].fetch_add(1, Relaxed) + 1;
        if have >= sh.need() {
            sh.wake[sender].notify_one();
        }
        if let Some(pacers) = &sh.pacers
            && pacers[sender] == Some(self.id)
        {
            sh.paced[sender].fetch_add(1, Relaxed);
            sh.wake[sender].notify_one();
        }
    }
}

/// Parses `<sender> <seq> <send_ns>` followed by a space or the end of the
/// line (a `\r` too).
fn parse_fields(s: &[u8]) -> Option<(u32, u32, u64)> {
    let (sender, s) = parse_num(s)?;
    let s = s.strip_prefix(b" ")?;
    let (seq, s) = parse_num(s)?;
    let s = s.strip_prefix(b" ")?;
    let (sent, s) = parse_num(s)?;
    match s.first() {
        None | Some(b' ') | Some(b'\r') => {}
        Some(_) => return None,
    }
    Some((u32::try_from(sender).ok()?, u32::try_from(seq).ok()?, sent))
}

fn parse_num(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut n = 0u64;
    for &d in &s[..digits] {
        n = n * 10 + u64::from(d - b'0');
    }
    Some((n, &s[digits..]))
}

/// Reads one client's connection until the server closes it (or the run
/// ends and the runtime drops this task).
async fn receive(sh: Arc<Shared>, id: usize, rd: OwnedReadHalf) {
    let mut rx = Receiver::new(id);
    let hist = match thread_histogram() {
        Ok(h) => h,
        Err(err) => {
            eprintln!("chatload: error: {err:#}");
            sh.mark_gone(id);
            return;
        }
    };
    loop {
        if rd.readable().await.is_err() {
            break;
        }
        let result = READ_BUFFER.with(|buf| {
            let mut buf = buf.borrow_mut();
            let n = rd.try_read(&mut buf)?;
            if n > 0 {
                rx.chunk(&sh, &buf[..n], &mut lock(&hist));
            }
            Ok::<usize, std::io::Error>(n)
        });
        match result {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sh.mark_gone(id);
}

/// [`receive`] for a TLS client: the session has no readiness calls, so
/// it reads into a buffer of its own (client memory, not the server's).
async fn receive_tls(sh: Arc<Shared>, id: usize, mut rd: tokio::io::ReadHalf<Box<TlsStream>>) {
    let mut rx = Receiver::new(id);
    let hist = match thread_histogram() {
        Ok(h) => h,
        Err(err) => {
            eprintln!("chatload: error: {err:#}");
            sh.mark_gone(id);
            return;
        }
    };
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => rx.chunk(&sh, &buf[..n], &mut lock(&hist)),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sh.mark_gone(id);
}

/// One message line: `CL <runid> <sender> <seq> <send_ns>`, then ` xxx...`
/// up to `size` bytes with the newline.
fn push_line(out: &mut Vec<u8>, runid: &str, sender: usize, seq: u32, sent: u64, size: usize) {
    use std::io::Write as _;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "CL {runid} {sender} {seq} {sent}");
    let len = out.len() - start;
    if len + 2 < size {
        out.push(b' ');
        out.resize(start + size - 1, b'x');
    }
    out.push(b'\n');
}

struct SendPlan {
    window: u32,
    /// Seconds between two messages of this sender, and this sender's
    /// offset within that period.
    rate: Option<(f64, f64)>,
    size: usize,
    runid: String,
    deadline: Instant,
}

/// Sends one sender's messages; returns when all are sent, at the deadline,
/// or when the connection fails.
async fn send(sh: Arc<Shared>, id: usize, mut wr: Wr, plan: Arc<SendPlan>) {
    let m = sh.messages as u32;
    let base = id * sh.messages;
    let t0 = Instant::now();
    let pacer = sh.pacers.as_ref().and_then(|p| p[id]);
    let (mut sent, mut done) = (0u32, 0u32);
    let mut buf = Vec::new();
    while sent < m && Instant::now() < plan.deadline && !sh.gone[id].load(Relaxed) {
        // `--pace all`, and `one` once the designated receiver is gone:
        // `done` messages (a prefix) reached every other client.
        let need = sh.need();
        while done < sent && sh.counts[base + done as usize].load(Relaxed) >= need {
            done += 1;
        }
        let received = match pacer {
            Some(r) if !sh.gone[r].load(Relaxed) => sh.paced[id].load(Relaxed),
            _ => done,
        };
        let mut upto = (received + plan.window).min(m);
        let mut next_due = None;
        if let Some((period, offset)) = plan.rate {
            let elapsed = t0.elapsed().as_secs_f64() - offset;
            let due = if elapsed < 0.0 {
                0
            } else {
                ((elapsed / period) as u64 + 1).min(u64::from(m)) as u32
            };
            upto = upto.min(due);
            if due < m {
                next_due = Some(t0 + Duration::from_secs_f64(offset + f64::from(due) * period));
            }
        }
        if upto > sent {
            buf.clear();
            let now = sh.now_ns();
            for seq in sent..upto {
                push_line(&mut buf, &plan.runid, id, seq, now, plan.size);
            }
            sh.first_send.fetch_min(now, Relaxed);
            let written = tokio::time::timeout_at(plan.deadline.into(), wr.write_all(&buf)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    sh.mark_gone(id);
                    break;
                }
                Err(_) => break,
            }
            sent = upto;
            sh.last_send.fetch_max(sh.now_ns(), Relaxed);
            continue;
        }
        let nap = Instant::now() + SENDER_NAP;
        let until = next_due.map_or(nap, |due| due.min(nap)).min(plan.deadline);
        // A wake-up that came while we were busy left a permit behind, so
        // none is lost between the check above and this wait.
        let _ = tokio::time::timeout_at(until.into(), sh.wake[id].notified()).await;
    }
    // Keep the connection open until the run ends: a close now would look
    // like a leave to the server (and to the other clients).
    std::future::pending::<()>().await;
    drop(wr);
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold anything;
    // the fields after its closing one start with field 3 (state).
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow!("{path} has no ')'"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("{path}: field {n} is missing or not a number"))
    };
    let ticks = field(14)? + field(15)?;
    let hz = match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz,
        _ => bail!("sysconf(_SC_CLK_TCK) failed"),
    };
    Ok(ticks as f64 / hz as f64)
}

/// This process's user + system CPU time, in seconds.
fn own_cpu_seconds() -> f64 {
    let Ok(usage) = getrusage(UsageWho::RUSAGE_SELF) else {
        return 0.0;
    };
    let tv = |t: TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(usage.user_time()) + tv(usage.system_time())
}

/// Raises the soft limit on open files to the hard one; fails if that is
/// still too low for `needed` descriptors.
fn raise_nofile(needed: u64) -> Result<()> {
    let (mut soft, hard) =
        rlimit::getrlimit(Resource::NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        rlimit::setrlimit(Resource::NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
        soft = hard;
    }
    if soft < needed {
        bail!(
            "{needed} file descriptors are needed but RLIMIT_NOFILE allows {soft} (raise the hard limit)"
        );
    }
    Ok(())
}

/// Opens client `i`'s connection.
async fn connect_one(addr: SocketAddr, i: usize) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // RST on close: no TIME_WAIT left behind by our sockets.
    socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO))?;
    if addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        // Lets the kernel pick the source port at connect() time, per
        // destination, rather than at bind() time for every destination at
        // once. Only an optimisation: without it, bind still works.
        let _ = setsockopt(&socket, sockopt::IpBindAddressNoPort, &true);
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 249) as u8);
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects client `i`, retrying a few times.
async fn connect_retry(
    addr: SocketAddr,
    i: usize,
    deadline: Instant,
) -> Result<tokio::net::TcpStream> {
    let mut last = None;
    for attempt in 1..=CONNECT_ATTEMPTS {
        let until = (Instant::now() + CONNECT_TIMEOUT).min(deadline);
        match tokio::time::timeout_at(until.into(), connect_one(addr, i)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => last = Some(anyhow::Error::from(err)),
            Err(_) => last = Some(anyhow!("timed out")),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
    Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
        .with_context(|| format!("client {i} could not connect to {addr}"))
}

/// The joining clients.
struct Join {
    sh: Arc<Shared>,
    /// Client `i` connects to `addrs[i % len]`.
    addrs: Arc<[SocketAddr]>,
    deadline: Instant,
    writers: Vec<Option<Wr>>,
    /// `--tls-pin`: how the counted clients do TLS.
    tls: Option<Arc<(tokio_rustls::TlsConnector, sockit::trust::Trust)>>,
    /// Per client: it sent its nudge line on its current connection.
    nudged: Vec<bool>,
    /// Per client: how often it was connected anew.
    reconnects: Vec<u32>,
    rejoins: JoinSet<(usize, Result<Conn>)>,
    sync_rounds: u32,
    /// Sync lines sent in all rounds.
    sync_lines: u64,
    nudges: u64,
    sync_line: String,
    nudge_line: String,
    runid: String,
}

impl Join {
    /// The server client `i` connects to.
    fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i % self.addrs.len()]
    }

    /// Connects `clients`, at most `concurrency` at a time, and starts a
    /// reader task for each at once (so that join notices are drained from
    /// the start).
    async fn connect(&mut self, clients: std::ops::Range<usize>, concurrency: usize) -> Result<()> {
        let gate = Arc::new(Semaphore::new(concurrency));
        let mut joins = JoinSet::new();
        for i in clients {
            let gate = gate.clone();
            let (addr, deadline, tls) = (self.addr(i), self.deadline, self.tls.clone());
            joins.spawn(async move {
                let _permit = gate
                    .acquire_owned()
                    .await
                    .map_err(|_| anyhow!("semaphore closed"))?;
                let stream = open(addr, i, deadline, tls).await?;
                Ok::<_, anyhow::Error>((i, stream))
            });
        }
        let mut failed = None;
        while let Some(joined) = joins.join_next().await {
            match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok((i, stream)) => self.attach(i, stream),
                Err(err) => failed = failed.or(Some(err)),
            }
        }
        match failed {
            None => Ok(()),
            Some(err) => {
                let connected = self.writers.iter().filter(|w| w.is_some()).count();
                Err(err.context(format!("only {connected} clients connected")))
            }
        }
    }

    fn attach(&mut self, i: usize, conn: Conn) {
        let wr = match conn {
            Conn::Plain(stream) => {
                let (rd, wr) = stream.into_split();
                tokio::spawn(receive(self.sh.clone(), i, rd));
                Wr::Plain(wr)
            }
            Conn::Tls(session) => {
                let (rd, wr) = tokio::io::split(session);
                tokio::spawn(receive_tls(self.sh.clone(), i, rd));
                Wr::Tls(wr)
            }
        };
        self.writers[i] = Some(wr);
        self.nudged[i] = false;
    }

    /// A sync round: client 0 sends `CLSYNC <runid> <round>` (again, at
    /// growing intervals) until clients 1..`upto` have all seen it. Then
    /// the server has taken every one of them into the room.
    async fn sync(&mut self, upto: usize) -> Result<()> {
        let sh = self.sh.clone();
        self.sync_rounds += 1;
        let round = self.sync_rounds;
        self.sync_line = format!("CLSYNC {} {round}\n", self.runid);
        let started = Instant::now();
        let mut next = started;
        let mut gap = SYNC_FIRST_RESEND;
        let mut sent = 0;
        let mut unready = 1..upto;
        loop {
            // Clients before `unready.start` have been seen ready.
            while unready.start < unready.end && sh.synced[unready.start].load(Relaxed) >= round {
                unready.start += 1;
            }
            if unready.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= self.deadline {
                let missing = unready
                    .filter(|&i| sh.synced[i].load(Relaxed) < round)
                    .count();
                bail!(
                    "{missing} of {} clients did not see sync round {round} within --timeout \
                     ({sent} sync lines, {} nudges, {} reconnects in all); a server with a small \
                     listen backlog drops connects: try a lower --connect-concurrency or --join-wave",
                    upto - 1,
                    self.nudges,
                    self.reconnects.iter().sum::<u32>()
                );
            }
            // A server with a small listen backlog answers a burst of
            // connects with syncookies, and drops those whose final ACK finds
            // its accept queue full: the client believes it is connected, the
            // server knows nothing of it. The first data segment of such a
            // client carries the cookie again (and TCP retransmits it until
            // it is acknowledged), so it gets accepted once the queue has
            // room. So a client that has not seen the sync line a second
            // after it was first sent sends one line of its own: only one,
            // as a second segment (another sequence number) would fail the
            // cookie check and be answered with a reset.
            if now >= started + NUDGE_AFTER {
                for i in unready.clone() {
                    if let Some(Wr::Plain(w)) = &self.writers[i]
                        && !self.nudged[i]
                        && sh.synced[i].load(Relaxed) < round
                    {
                        let _ = w.try_write(self.nudge_line.as_bytes());
                        self.nudged[i] = true;
                        self.nudges += 1;
                    }
                }
            }
            if now >= next
                && sent < SYNC_ROUNDS
                && let Some(w0) = self.writers[0].as_mut()
            {
                // A failed write shows as client 0 gone, and is redone on
                // its new connection.
                let _ = tokio::time::timeout_at(
                    self.deadline.into(),
                    w0.write_all(self.sync_line.as_bytes()),
                )
                .await;
                sent += 1;
                self.sync_lines += 1;
                next = now + gap;
                gap = (gap * 2).min(SYNC_RESEND);
            }
            // A connection the server closed while joining (a dropped
            // half-open one whose nudge failed the cookie check, say) is
            // opened anew.
            for i in 0..upto {
                if self.writers[i].is_some() && sh.gone[i].load(Relaxed) {
                    self.reconnects[i] += 1;
                    if self.reconnects[i] > MAX_RECONNECTS {
                        bail!(
                            "the server closed client {i}'s connection while joining, {} times",
                            self.reconnects[i]
                        );
                    }
                    self.writers[i] = None;
                    let (addr, deadline, tls) = (self.addr(i), self.deadline, self.tls.clone());
                    self.rejoins
                        .spawn(async move { (i, open(addr, i, deadline, tls).await) });
                    unready.start = unready.start.min(i.max(1));
                }
            }
            while let Some(joined) = self.rejoins.try_join_next() {
                let (i, stream) = joined.context("a reconnect task failed")?;
                sh.synced[i].store(0, Relaxed);
                sh.gone[i].store(false, Relaxed);
                sh.disconnected.fetch_sub(1, Relaxed);
                self.attach(i, stream?);
                if i == 0 {
                    next = Instant::now();
                }
            }
            let until = (Instant::now() + POLL).min(next);
            let _ = tokio::time::timeout_at(until.into(), sh.sync_seen.notified()).await;
        }
    }

    /// Connects the `count` stalled clients (numbered `first..` for their
    /// source addresses), `wave` at a time. Each sends `CLSTALL <runid> <k>`
    /// at once and never reads; a wave is in the room when a counted client
    /// has received each of its lines. Returns their connections, which
    /// must stay open (and unread) until the run ends.
    async fn stall(
        &mut self,
        first: usize,
        count: usize,
        wave: usize,
        concurrency: usize,
    ) -> Result<Vec<tokio::net::TcpStream>> {
        let sh = self.sh.clone();
        let mut stalled = Vec::with_capacity(count);
        let gate = Arc::new(Semaphore::new(concurrency));
        let mut joined = 0;
        while joined < count {
            let upto = (joined + wave).min(count);
            let mut joins = JoinSet::new();
            for k in joined..upto {
                let gate = gate.clone();
                let (addr, deadline) = (self.addr(first + k), self.deadline);
                let line = format!("CLSTALL {} {k}\n", self.runid);
                joins.spawn(async move {
                    let _permit = gate
                        .acquire_owned()
                        .await
                        .map_err(|_| anyhow!("semaphore closed"))?;
                    let mut stream = connect_retry(addr, first + k, deadline).await?;
                    tokio::time::timeout_at(deadline.into(), stream.write_all(line.as_bytes()))
                        .await
                        .map_err(|_| anyhow!("timed out"))
                        .and_then(|r| r.map_err(anyhow::Error::from))
                        .with_context(|| format!("stalled client {k} could not send its line"))?;
                    Ok::<_, anyhow::Error>(stream)
                });
            }
            while let Some(done) = joins.join_next().await {
                stalled.push(done.context("a stalled client's connect task failed")??);
            }
            loop {
                let missing = (joined..upto)
                    .filter(|&k| !sh.stall_seen[k].load(Relaxed))
                    .count();
                if missing == 0 {
                    break;
                }
                if Instant::now() >= self.deadline {
                    bail!(
                        "{missing} of {} stalled clients were not seen in the room within --timeout",
                        upto - joined
                    );
                }
                let until = Instant::now() + POLL;
                let _ = tokio::time::timeout_at(until.into(), sh.sync_seen.notified()).await;
            }
            joined = upto;
        }
        Ok(stalled)
    }
}

/// How many of the stalled clients' connections the server has closed or
/// reset, seen without reading from them: nothing clears the readiness the
/// reactor recorded for these sockets, so a FIN (EPOLLRDHUP) or a reset
/// (EPOLLHUP) shows as read-closed.
async fn cut_off(stalled: &[tokio::net::TcpStream]) -> usize {
    let mut n = 0;
    for s in stalled {
        // A zero timeout still polls `ready` once.
        if let Ok(Ok(ready)) =
            tokio::time::timeout(Duration::ZERO, s.ready(Interest::READABLE)).await
            && ready.is_read_closed()
        {
            n += 1;
        }
    }
    n
}

/// The summed CPU time of `pids` (`None` for none).
fn servers_cpu(pids: &[u32]) -> Result<Option<f64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    pids.iter()
        .map(|&pid| cpu_seconds(pid))
        .sum::<Result<f64>>()
        .map(Some)
}

/// The results of one run.
struct Report {
    /// `--redis-pid`'s CPU time over the delivery phase.
    redis_cpu_s: Option<f64>,
    /// The servers, comma-separated.
    addr: String,
    clients: usize,
    senders: usize,
    messages: usize,
    window: u32,
    pace: Pace,
    rate: Option<f64>,
    size: u32,
    stalled: usize,
    stalled_cut_off: usize,
    join_wave: u32,
    connect_concurrency: u32,
    connect_s: f64,
    sync_rounds: u32,
    sync_lines: u64,
    nudges: u64,
    reconnects: u64,
    expected: u64,
    delivered: u64,
    duplicates: u64,
    reordered: u64,
    self_echo: u64,
    corrupt: u64,
    delivery_s: f64,
    hist: Histogram<u64>,
    server_cpu_s: Option<f64>,
    client_cpu_s: f64,
    disconnected: usize,
    end: &'static str,
}

impl Report {
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    fn ok(&self) -> bool {
        self.lost() == 0 && self.duplicates == 0 && self.reordered == 0 && self.disconnected == 0
    }

    fn per_s(&self) -> f64 {
        if self.delivery_s > 0.0 {
            self.delivered as f64 / self.delivery_s
        } else {
            0.0
        }
    }

    fn ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.value_at_quantile(q) as f64 / 1000.0
        }
    }

    fn ns_per_delivery(&self) -> Option<f64> {
        self.server_cpu_s
            .filter(|_| self.delivered > 0)
            .map(|cpu| cpu * 1e9 / self.delivered as f64)
    }

    fn summary(&self) -> String {
        let pace = match self.rate {
            Some(r) => format!(
                "pace={} rate={r}/s window={}",
                self.pace.name(),
                self.window
            ),
            None => format!("pace={} window={}", self.pace.name(), self.window),
        };
        let stalled = match self.stalled {
            0 => String::new(),
            n => format!(", stalled {n} (cut off {})", self.stalled_cut_off),
        };
        let cpu = match (self.server_cpu_s, self.ns_per_delivery()) {
            (Some(cpu), Some(ns)) => format!("; server cpu {cpu:.2} s = {ns:.0} ns/delivery"),
            (Some(cpu), None) => format!("; server cpu {cpu:.2} s"),
            _ => String::new(),
        };
        let cpu = match self.redis_cpu_s {
            Some(redis) => format!("{cpu}; redis cpu {redis:.2} s"),
            None => cpu,
        };
        format!(
            "chatload {} clients={} senders={} messages={} {pace} size={}: connect {:.2} s ({} sync rounds, {} nudges, {} reconnects); \
             {}/{} delivered in {:.2} s = {:.0}/s ({}), lost {}, dup {}, reordered {}, \
             self-echo {}, corrupt {}, disconnected {}{stalled}; latency ms p50 {:.2} p99 {:.2} max {:.2}{cpu}; \
             client cpu {:.2} s",
            self.addr,
            self.clients,
            self.senders,
            self.messages,
            self.size,
            self.connect_s,
            self.sync_rounds,
            self.nudges,
            self.reconnects,
            self.delivered,
            self.expected,
            self.delivery_s,
            self.per_s(),
            self.end,
            self.lost(),
            self.duplicates,
            self.reordered,
            self.self_echo,
            self.corrupt,
            self.disconnected,
            self.ms(0.5),
            self.ms(0.99),
            self.hist.max() as f64 / 1000.0,
            self.client_cpu_s,
        )
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tool": "chatload",
            "addr": self.addr,
            "clients": self.clients,
            "senders": self.senders,
            "messages": self.messages,
            "window": self.window,
            "pace": self.pace.name(),
            "rate": self.rate,
            "size": self.size,
            "join_wave": self.join_wave,
            "connect_concurrency": self.connect_concurrency,
            "connect_s": self.connect_s,
            "sync_rounds": self.sync_rounds,
            "sync_lines": self.sync_lines,
            "nudges": self.nudges,
            "reconnects": self.reconnects,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.lost(),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "self_echo": self.self_echo,
            "corrupt": self.corrupt,
            "disconnected": self.disconnected,
            "stalled": self.stalled,
            "stalled_cut_off": self.stalled_cut_off,
            "delivery_s": self.delivery_s,
            "deliveries_per_s": self.per_s(),
            "end": self.end,
            "latency_ms": {
                "p50": self.ms(0.5),
                "p90": self.ms(0.9),
                "p99": self.ms(0.99),
                "p999": self.ms(0.999),
                "max": self.hist.max() as f64 / 1000.0,
                "mean": self.hist.mean() / 1000.0,
            },
            "server_cpu_s": self.server_cpu_s,
            "redis_cpu_s": self.redis_cpu_s,
            "server_ns_per_delivery": self.ns_per_delivery(),
            "client_cpu_s": self.client_cpu_s,
            "ok": self.ok(),
        })
    }
}

fn run(args: &Args) -> Result<Report> {
    for addr in &args.addr {
        let loopback = match addr.ip() {
            IpAddr::V4(v4) => v4.octets()[0] == 127,
            IpAddr::V6(v6) => v6.is_loopback(),
        };
        if !loopback || addr.port() == 0 {
            bail!("--addr must be IP:PORT in 127.0.0.0/8 (or [::1]:PORT), got {addr}");
        }
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 86_400.0) {
        bail!("--timeout must be between 0 and 86400 seconds");
    }
    if !(args.idle.is_finite() && args.idle > 0.0 && args.idle <= 3600.0) {
        bail!("--idle must be between 0 and 3600 seconds");
    }
    if !(args.hold.is_finite() && args.hold >= 0.0 && args.hold <= 3600.0) {
        bail!("--hold must be between 0 and 3600 seconds");
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0 && r <= 1e9)
    {
        bail!("--rate must be a positive number of messages per second");
    }
    if args.senders > args.clients {
        bail!(
            "--senders ({}) must not exceed --clients ({})",
            args.senders,
            args.clients
        );
    }
    let (n, s, m) = (
        args.clients as usize,
        args.senders as usize,
        args.messages as usize,
    );
    let bitmaps = n as u64 * (s as u64 * m as u64).div_ceil(64) * 8;
    if bitmaps > MAX_BITMAPS {
        bail!(
            "--clients x --senders x --messages needs {} MiB of bitmaps (at most {} MiB)",
            bitmaps >> 20,
            MAX_BITMAPS >> 20
        );
    }
    raise_nofile(n as u64 + u64::from(args.stalled) + SPARE_FDS)?;
    for pid in args.pid.iter().chain(&args.redis_pid) {
        cpu_seconds(*pid).with_context(|| format!("cannot read the CPU time of process {pid}"))?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(run_async(args, n, s, m));
    // Dropping the runtime drops every task and with it every socket (RST).
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:08x}", mixed >> 32)
}

async fn run_async(args: &Args, n: usize, s: usize, m: usize) -> Result<Report> {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    let deadline = start + Duration::from_secs_f64(args.timeout);
    let runid = run_id();
    let leak = |s: String| -> &'static [u8] { Box::leak(s.into_bytes().into_boxed_slice()) };
    let sh = Arc::new(Shared {
        clients: n,
        senders: s,
        messages: m,
        start,
        data: Finder::new(leak(format!("CL {runid} "))),
        sync: Finder::new(leak(format!("CLSYNC {runid} "))),
        stall: Finder::new(leak(format!("CLSTALL {runid} "))),
        stall_seen: (0..args.stalled).map(|_| AtomicBool::new(false)).collect(),
        counts: (0..s * m).map(|_| AtomicU32::new(0)).collect(),
        wake: (0..s).map(|_| Notify::new()).collect(),
        pacers: (args.pace == Pace::One)
            .then(|| (0..s).map(|i| designated_receiver(n, s, i)).collect()),
        paced: (0..s).map(|_| AtomicU32::new(0)).collect(),
        synced: (0..n).map(|_| AtomicU32::new(0)).collect(),
        sync_seen: Notify::new(),
        gone: (0..n).map(|_| AtomicBool::new(false)).collect(),
        disconnected: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
        self_echo: AtomicU64::new(0),
        corrupt: AtomicU64::new(0),
        first_send: AtomicU64::new(u64::MAX),
        last_send: AtomicU64::new(0),
        last_delivery: AtomicU64::new(0),
    });

    // ---- connect and sync, in waves of --join-wave clients (all at once
    // by default).
    let t_connect = Instant::now();
    let mut join = Join {
        sh: sh.clone(),
        addrs: args.addr.clone().into(),
        deadline,
        writers: (0..n).map(|_| None).collect(),
        tls: match &args.tls_pin {
            Some(pin) => Some(Arc::new(tls_connector(pin)?)),
            None => None,
        },
        nudged: vec![false; n],
        reconnects: vec![0; n],
        rejoins: JoinSet::new(),
        sync_rounds: 0,
        sync_lines: 0,
        nudges: 0,
        sync_line: String::new(),
        nudge_line: format!("CLNUDGE {runid}\n"),
        runid: runid.clone(),
    };
    let wave = match args.join_wave {
        0 => n,
        k => k as usize,
    };
    let mut connected = 0;
    while connected < n {
        let upto = (connected + wave).min(n);
        join.connect(connected..upto, args.connect_concurrency as usize)
            .await?;
        connected = upto;
        join.sync(connected).await?;
    }
    let stalled = join
        .stall(
            n,
            args.stalled as usize,
            wave,
            args.connect_concurrency as usize,
        )
        .await?;
    let Join {
        mut writers,
        sync_rounds,
        sync_lines,
        nudges,
        reconnects,
        ..
    } = join;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let reconnects: u64 = reconnects.iter().map(|&r| u64::from(r)).sum();

    if args.hold > 0.0 {
        eprintln!("ready");
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }

    // ---- delivery
    let deadline = deadline + Duration::from_secs_f64(args.hold);
    let cpu0 = servers_cpu(&args.pid)?;
    let redis0 = args.redis_pid.map(cpu_seconds).transpose()?;
    let own0 = own_cpu_seconds();
    let phase_start = sh.now_ns();
    let plan = Arc::new(SendPlan {
        window: args.window,
        rate: args.rate.filter(|_| s > 0).map(|r| (s as f64 / r, 0.0)),
        size: args.size as usize,
        runid: runid.clone(),
        deadline,
    });
    if m > 0 {
        for (id, wr) in writers.iter_mut().enumerate().take(s) {
            let wr = wr
                .take()
                .ok_or_else(|| anyhow!("client {id} has no connection"))?;
            let mut plan_i = plan.clone();
            if let Some((period, _)) = plan.rate {
                // Spread the senders evenly over one period.
                plan_i = Arc::new(SendPlan {
                    rate: Some((period, period * id as f64 / s as f64)),
                    runid: plan.runid.clone(),
                    ..*plan
                });
            }
            tokio::spawn(send(sh.clone(), id, wr, plan_i));
        }
    }
    let others = n.saturating_sub(1) as u64;
    let expected = others * s as u64 * m as u64;
    let idle_ns = (args.idle * 1e9) as u64;
    let end = loop {
        if sh.delivered.load(Relaxed) >= expected {
            break "complete";
        }
        let now = sh.now_ns();
        let last = sh.last_delivery.load(Relaxed).max(phase_start);
        if now.saturating_sub(last) > idle_ns {
            break "idle";
        }
        if Instant::now() >= deadline {
            break "timeout";
        }
        tokio::time::sleep(POLL).await;
    };
    sh.stopping.store(true, Relaxed);
    let cpu1 = servers_cpu(&args.pid);
    let redis_cpu_s = match (redis0, args.redis_pid.map(cpu_seconds).transpose()) {
        (Some(a), Ok(Some(b))) => Some(b - a),
        _ => None,
    };
    let client_cpu_s = own_cpu_seconds() - own0;
    let stalled_cut_off = cut_off(&stalled).await;
    let server_cpu_s = match (cpu0, cpu1) {
        (Some(a), Ok(Some(b))) => Some(b - a),
        (_, Err(err)) => {
            eprintln!("chatload: warning: cannot read the server's CPU time at the end: {err:#}");
            None
        }
        _ => None,
    };
    let first = sh.first_send.load(Relaxed);
    let last = sh.last_delivery.load(Relaxed);
    let delivery_s = if first != u64::MAX && last > first {
        (last - first) as f64 / 1e9
    } else {
        0.0
    };
    let mut hist = new_histogram()?;
    for h in lock(&HISTOGRAMS).iter() {
        hist.add(&*lock(h)).context("merging latency histograms")?;
    }
    Ok(Report {
        addr: args
            .addr
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        redis_cpu_s,
        clients: n,
        senders: s,
        messages: m,
        window: args.window,
        pace: args.pace,
        rate: args.rate,
        size: args.size,
        stalled: stalled.len(),
        stalled_cut_off,
        join_wave: args.join_wave,
        connect_concurrency: args.connect_concurrency,
        connect_s,
        sync_rounds,
        sync_lines,
        nudges,
        reconnects,
        expected,
        delivered: sh.delivered.load(Relaxed),
        duplicates: sh.duplicates.load(Relaxed),
        reordered: sh.reordered.load(Relaxed),
        self_echo: sh.self_echo.load(Relaxed),
        corrupt: sh.corrupt.load(Relaxed),
        delivery_s,
        hist,
        server_cpu_s,
        client_cpu_s,
        disconnected: sh.disconnected.load(Relaxed),
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back() {
        let mut out = Vec::new();
        push_line(&mut out, "abcd1234", 7, 42, 123_456_789, 64);
        assert_eq!(out.len(), 64);
        assert_eq!(out.last(), Some(&b'\n'));
        let text = &out[b"CL abcd1234 ".len()..out.len() - 1];
        assert_eq!(parse_fields(text), Some((7, 42, 123_456_789)));
        // Too short to pad: the marker alone.
        out.clear();
        push_line(&mut out, "abcd1234", 7, 42, 5, 8);
        assert_eq!(&out[..], b"CL abcd1234 7 42 5\n");
        assert_eq!(parse_fields(b"7 42 5\r"), Some((7, 42, 5)));
    }

    #[test]
    fn designated_receivers_are_non_senders_in_turn() {
        // 10 clients, 3 senders: receivers 9, 8, 7.
        let r: Vec<_> = (0..3).map(|i| designated_receiver(10, 3, i)).collect();
        assert_eq!(r, [Some(9), Some(8), Some(7)]);
        // More senders than non-senders: they share them.
        let r: Vec<_> = (0..4).map(|i| designated_receiver(6, 4, i)).collect();
        assert_eq!(r, [Some(5), Some(4), Some(5), Some(4)]);
        // Everybody sends: the next client.
        let r: Vec<_> = (0..3).map(|i| designated_receiver(3, 3, i)).collect();
        assert_eq!(r, [Some(1), Some(2), Some(0)]);
        assert_eq!(designated_receiver(1, 1, 0), None);
    }

    #[test]
    fn stalled_clients_cut_off_are_seen_without_reading() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut clients = Vec::new();
            let mut accepted = Vec::new();
            for _ in 0..3 {
                clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
                accepted.push(listener.accept().await.unwrap().0);
            }
            // 0 stays, 1 is closed after some data (FIN), 2 is reset once
            // its receive window is full.
            let mut reset = accepted.pop().unwrap();
            let mut closed = accepted.pop().unwrap();
            closed.write_all(b"hello\n").await.unwrap();
            drop(closed);
            let chunk = vec![b'x'; 64 * 1024];
            while tokio::time::timeout(Duration::from_millis(200), reset.write_all(&chunk))
                .await
                .is_ok()
            {}
            socket2::SockRef::from(&reset)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(reset);
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(cut_off(&clients[..1]).await, 0);
            assert_eq!(cut_off(&clients[1..2]).await, 1);
            assert_eq!(cut_off(&clients[2..]).await, 1);
        });
    }

    #[test]
    fn cut_lines_do_not_parse() {
        assert_eq!(parse_fields(b"7 42 12<user4> 34 xxx"), None);
        assert_eq!(parse_fields(b"7 4"), None);
        assert_eq!(parse_fields(b"7  42 5"), None);
    }
}
