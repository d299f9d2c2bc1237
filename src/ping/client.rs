//! `sockit ping`: the probe loop and its output.
//!
//! The loop runs on a blocking thread of its own with a blocking socket:
//! a probe costs one `send` and one `recv`, and the reply wakes exactly the
//! thread that times it, with no event loop or task hand-over in between
//! (the same shape as sockperf's client, which is what we are measured
//! against). Times come from one monotonic clock ([`Instant`]), taken just
//! before `send` and just after `recv` returns; printing happens after the
//! reply is timed.
//!
//! The receive timeout (SO_RCVTIMEO) is changed only when it must be: a
//! wait never overshoots its deadline by more than `TOLERANCE`, and never
//! blocks longer than `SLICE`, so Ctrl-C (the shutdown token) is seen
//! within that. In the `-i 0` fast path the timeout stays as it is and no
//! extra system call is made.
//!
//! Over UDP the socket is connected, so only the server's datagrams reach
//! us and an ICMP port-unreachable comes back as "connection refused":
//! before any reply that means nothing listens there (an error, exit 1);
//! after one, it is counted as an error and the run goes on. Over TCP
//! (`--tcp`) one connection carries every probe; the connect time is
//! reported, and replies are cut from the byte stream at the probe size,
//! resynchronising on the probe magic if the server sends something else.

use std::io::{self, Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::protocol::{self, MAGIC, Reply, Tracker};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::net;
use crate::transport::{Connector, SyncStream};

/// Longest a receive blocks before the loop looks at the shutdown token.
const SLICE: Duration = Duration::from_millis(100);

/// How far past its deadline a wait may end, to spare a system call that
/// would move the timeout by less.
const TOLERANCE: Duration = Duration::from_millis(1);

/// Bytes read from a TCP connection at once.
const TCP_READ: usize = 64 * 1024;

/// What `sockit ping` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Probes to send; None = until Ctrl-C or the deadline.
    pub count: Option<u64>,
    /// Time between probes; zero = the next as soon as the previous one is
    /// answered or has timed out.
    pub interval: Duration,
    /// How long a reply may take to count as received (`-W`).
    pub wait: Duration,
    /// End of the whole run (`-w`).
    pub deadline: Option<Duration>,
    /// Probe size in bytes (`-s`).
    pub size: usize,
    /// One JSON object with every figure instead of text.
    pub json: bool,
    /// Only the summary (no per-reply lines).
    pub quiet: bool,
    /// TCP request/response over one connection instead of UDP.
    pub tcp: bool,
    /// How the TCP connection is made (plain or TLS).
    pub connector: Connector,
}

/// Runs a ping, writes its output to `out`, and fails (exit 1) if no
/// probe was answered in time.
pub async fn ping(config: Config, ctx: Context) -> Result<()> {
    let Context { shutdown, out } = ctx;
    let target = net::display_target(&config.host, config.port);
    let link = if config.tcp {
        let started = Instant::now();
        let stream = config
            .connector
            .connect(&config.host, config.port, config.wait)
            .await?;
        let connect = started.elapsed();
        // The probes run on a blocking thread with SO_RCVTIMEO, TLS
        // included (rustls's blocking stream on the same socket).
        let stream = stream
            .into_sync()
            .map_err(|e| Error::io("cannot set up the TCP connection", e))?;
        Link::Tcp(TcpLink::new(stream, config.size), connect)
    } else {
        let (socket, _) = net::connect_udp(&config.host, config.port).await?;
        let socket = socket
            .into_std()
            .and_then(|s| s.set_nonblocking(false).map(|()| s))
            .map_err(|e| Error::io("cannot set up the UDP socket", e))?;
        Link::Udp(socket)
    };
    let run = tokio::task::spawn_blocking(move || {
        let mut session = Session::new(config, target, link, out);
        session.run(&shutdown)
    });
    match run.await {
        Ok(result) => result,
        Err(e) => Err(Error::io("the ping loop failed", io::Error::other(e))),
    }
}

/// The connection probes go over.
enum Link {
    Udp(UdpSocket),
    /// The stream, and how long connecting took.
    Tcp(TcpLink, Duration),
}

/// A TCP connection cut into replies of the probe size.
struct TcpLink {
    stream: SyncStream,
    size: usize,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out.
    consumed: usize,
}

impl TcpLink {
    fn new(stream: SyncStream, size: usize) -> Self {
        TcpLink {
            stream,
            size: size.max(protocol::MIN_SIZE),
            buf: Vec::with_capacity(TCP_READ + size),
            consumed: 0,
        }
    }

    /// The next whole reply already buffered, if any. Bytes before the
    /// next probe magic are skipped (and reported as `skipped`).
    fn take_frame(&mut self, skipped: &mut bool) -> Option<(usize, usize)> {
        let pending = &self.buf[self.consumed..];
        match memchr::memmem::find(pending, MAGIC) {
            Some(0) => {}
            Some(i) => {
                self.consumed += i;
                *skipped = true;
            }
            None => {
                // Keep what could be the start of a magic; bound the rest.
                let keep = pending.len().min(MAGIC.len() - 1);
                if pending.len() > keep {
                    *skipped = true;
                }
                self.consumed = self.buf.len() - keep;
                return None;
            }
        }
        if self.buf.len() - self.consumed >= self.size {
            let start = self.consumed;
            self.consumed += self.size;
            Some((start, self.size))
        } else {
            None
        }
    }

    /// Moves unread bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
    }
}

/// What one wait for a reply produced.
enum Received {
    /// A message of this many bytes is in the buffer at this offset.
    Message(usize, usize),
    /// The server's bytes did not start with a probe: skip them.
    Skipped,
    /// Nothing before the deadline.
    Nothing,
    /// The port is closed (ICMP port unreachable).
    Refused,
}

/// One ping run: the link, the tracker and the output.
struct Session<W: Write> {
    config: Config,
    target: String,
    link: Link,
    out: W,
    tracker: Tracker,
    epoch: Instant,
    probe: Vec<u8>,
    /// UDP receive buffer (any datagram fits).
    udp_buf: Vec<u8>,
    /// The receive timeout now set on the socket.
    timeout: Option<Duration>,
}

impl<W: Write> Session<W> {
    fn new(config: Config, target: String, link: Link, out: W) -> Self {
        let wait_ns = u64::try_from(config.wait.as_nanos()).unwrap_or(u64::MAX);
        let size = config.size.max(protocol::MIN_SIZE);
        Session {
            tracker: Tracker::new(rand::random(), wait_ns),
            probe: Vec::with_capacity(size),
            udp_buf: vec![0u8; 65_536],
            config,
            target,
            link,
            out,
            epoch: Instant::now(),
            timeout: None,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn run(&mut self, shutdown: &CancellationToken) -> Result<()> {
        self.header()?;
        self.epoch = Instant::now();
        let wait_ns = self.tracker_wait_ns();
        let interval_ns = u64::try_from(self.config.interval.as_nanos()).unwrap_or(u64::MAX);
        let deadline_ns = self
            .config
            .deadline
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut last_sent_ns = 0u64;
        let mut next_send_ns = 0u64;
        let outcome = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            let now = self.now_ns();
            if deadline_ns.is_some_and(|d| now >= d) {
                break Ok(());
            }
            let sent = self.tracker.sent();
            let may_send = self.config.count.is_none_or(|c| sent < c);
            // When the next thing happens: a probe goes out, or the run ends.
            let due = if may_send {
                if interval_ns > 0 {
                    next_send_ns
                } else if sent == 0 || self.tracker.is_answered(sent) {
                    now
                } else {
                    last_sent_ns.saturating_add(wait_ns)
                }
            } else if self.tracker.in_flight(now) == 0 {
                break Ok(());
            } else {
                last_sent_ns.saturating_add(wait_ns)
            };
            if now >= due {
                if !may_send {
                    break Ok(());
                }
                last_sent_ns = self.now_ns();
                let seq = self.tracker.send(last_sent_ns);
                protocol::encode(
                    &mut self.probe,
                    self.tracker.run(),
                    seq,
                    last_sent_ns,
                    self.config.size,
                );
                if let Err(e) = self.send() {
                    break Err(e);
                }
                if interval_ns > 0 {
                    // Keep the schedule; if we fell a whole interval behind
                    // (a stalled machine), start it afresh instead of
                    // sending the missed probes in a burst.
                    next_send_ns = next_send_ns.saturating_add(interval_ns);
                    if next_send_ns <= last_sent_ns {
                        next_send_ns = last_sent_ns.saturating_add(interval_ns);
                    }
                }
                continue;
            }
            let until = deadline_ns.map_or(due, |d| due.min(d));
            match self.receive(until) {
                Ok(()) => {}
                Err(e) => break Err(e),
            }
        };
        let elapsed = self.now_ns();
        match outcome {
            Ok(()) => self.finish(elapsed),
            Err(e) if self.tracker.received() > 0 => {
                // The run broke off after replies came: show what it measured.
                self.finish(elapsed).and(Err(e))
            }
            Err(e) => Err(e),
        }
    }

    fn tracker_wait_ns(&self) -> u64 {
        u64::try_from(self.config.wait.as_nanos()).unwrap_or(u64::MAX)
    }

    /// What the probes travel over, as the output names it: `udp`, `tcp`,
    /// or `tcp+tls` (whose connect time includes the handshake).
    fn protocol(&self) -> &'static str {
        match &self.link {
            Link::Udp(_) => "udp",
            Link::Tcp(..) if self.config.connector.is_tls() => "tcp+tls",
            Link::Tcp(..) => "tcp",
        }
    }

    /// The opening line, as iputils prints `PING host (addr) N bytes of data.`
    fn header(&mut self) -> Result<()> {
        if self.config.json {
            return Ok(());
        }
        let size = self.config.size.max(protocol::MIN_SIZE);
        let line = match &self.link {
            Link::Udp(_) => format!("PING {} (udp): {size} bytes of data", self.target),
            Link::Tcp(_, connect) => format!(
                "PING {} ({}): {size} bytes of data, connected in {:.3} ms",
                self.target,
                self.protocol(),
                connect.as_secs_f64() * 1e3
            ),
        };
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(Error::Stdout)
    }

    fn send(&mut self) -> Result<()> {
        let result = match &mut self.link {
            Link::Udp(socket) => socket.send(&self.probe).map(|_| ()),
            Link::Tcp(tcp, _) => tcp.stream.write_all(&self.probe),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.refused(),
            Err(e) => Err(self.link_error(e)),
        }
    }

    /// Port unreachable: fatal before the first reply, counted after it.
    fn refused(&mut self) -> Result<()> {
        if self.tracker.received() == 0 && !matches!(self.link, Link::Tcp(..)) {
            return Err(Error::UdpRefused {
                peer: self.target.clone(),
            });
        }
        self.tracker.error();
        if !self.config.json && !self.config.quiet {
            writeln!(self.out, "From {}: port unreachable", self.target).map_err(Error::Stdout)?;
        }
        Ok(())
    }

    fn link_error(&self, e: io::Error) -> Error {
        match &self.link {
            Link::Udp(_) => Error::io(format!("cannot exchange datagrams with {}", self.target), e),
            Link::Tcp(..) => Error::closed(&self.target, e),
        }
    }

    /// Waits until `until_ns` at most for one message and handles it.
    fn receive(&mut self, until_ns: u64) -> Result<()> {
        let remaining = Duration::from_nanos(until_ns.saturating_sub(self.now_ns()));
        self.set_timeout(remaining)?;
        let got = match &mut self.link {
            Link::Udp(socket) => match socket.recv(&mut self.udp_buf) {
                Ok(n) => Ok(Received::Message(0, n)),
                Err(e) => Err(e),
            },
            Link::Tcp(tcp, _) => Self::receive_tcp(tcp),
        };
        let now = self.now_ns();
        match got {
            Ok(Received::Message(start, len)) => {
                let bytes = match &self.link {
                    Link::Udp(_) => &self.udp_buf[start..start + len],
                    Link::Tcp(tcp, _) => &tcp.buf[start..start + len],
                };
                let reply = self.tracker.reply(bytes, now);
                self.report(reply, len)
            }
            Ok(Received::Skipped) => {
                self.tracker.reply(b"", now);
                tracing::debug!("skipped bytes from {} that are no probe", self.target);
                Ok(())
            }
            Ok(Received::Nothing) => Ok(()),
            Ok(Received::Refused) => self.refused(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.refused(),
            Err(e) => Err(self.link_error(e)),
        }
    }

    /// One read from the TCP stream, then the next whole frame if any.
    fn receive_tcp(tcp: &mut TcpLink) -> io::Result<Received> {
        let mut skipped = false;
        if let Some((start, len)) = tcp.take_frame(&mut skipped) {
            return Ok(Received::Message(start, len));
        }
        if skipped {
            return Ok(Received::Skipped);
        }
        tcp.compact();
        let filled = tcp.buf.len();
        tcp.buf.resize(filled + TCP_READ, 0);
        let read = tcp.stream.read(&mut tcp.buf[filled..]);
        tcp.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            Ok(_) => match tcp.take_frame(&mut skipped) {
                Some((start, len)) => Ok(Received::Message(start, len)),
                None if skipped => Ok(Received::Skipped),
                None => Ok(Received::Nothing),
            },
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Received::Refused),
            Err(e) => Err(e),
        }
    }

    /// Sets the receive timeout to `remaining` (capped at [`SLICE`]) unless
    /// the one already set is within [`TOLERANCE`] of it.
    fn set_timeout(&mut self, remaining: Duration) -> Result<()> {
        let want = remaining.clamp(Duration::from_micros(1), SLICE);
        if let Some(current) = self.timeout
            && current <= want + TOLERANCE
            && current + TOLERANCE >= want
        {
            return Ok(());
        }
        let result = match &self.link {
            Link::Udp(socket) => socket.set_read_timeout(Some(want)),
            Link::Tcp(tcp, _) => tcp.stream.set_read_timeout(Some(want)),
        };
        result.map_err(|e| Error::io("cannot set the receive timeout", e))?;
        self.timeout = Some(want);
        Ok(())
    }

    /// Prints one line per reply, as iputils ping does.
    fn report(&mut self, reply: Reply, len: usize) -> Result<()> {
        if self.config.json || self.config.quiet {
            return Ok(());
        }
        let (seq, rtt_ns, note) = match reply {
            Reply::Fresh {
                seq,
                rtt_ns,
                reordered,
            } => (seq, rtt_ns, if reordered { " (reordered)" } else { "" }),
            Reply::Late { seq, rtt_ns } => (seq, rtt_ns, " (late, not counted)"),
            Reply::Duplicate { seq, rtt_ns } => (seq, rtt_ns, " (DUP!)"),
            Reply::Foreign => {
                tracing::debug!(
                    "ignored a {len}-byte reply from {} that answers no probe of ours",
                    self.target
                );
                return Ok(());
            }
        };
        writeln!(
            self.out,
            "{len} bytes from {}: seq={seq} rtt={:.3} ms{note}",
            self.target,
            rtt_ns as f64 / 1e6
        )
        .and_then(|()| self.out.flush())
        .map_err(Error::Stdout)
    }

    /// Prints the summary (or the JSON object) and decides the outcome.
    fn finish(&mut self, elapsed_ns: u64) -> Result<()> {
        let summary = self.tracker.summary(elapsed_ns);
        let text = if self.config.json {
            let mut value = summary.json(
                &self.target,
                self.protocol(),
                self.config.size.max(protocol::MIN_SIZE),
            );
            if let Link::Tcp(_, connect) = &self.link {
                value["connect_ms"] =
                    serde_json::json!((connect.as_secs_f64() * 1e6).round() / 1e3);
            }
            format!("{value}\n")
        } else {
            let mut text = String::from("\n");
            text.push_str(&summary.text(&self.target));
            if let Link::Tcp(_, connect) = &self.link {
                text.push_str(&format!(
                    "{} connect time {:.3} ms\n",
                    self.protocol(),
                    connect.as_secs_f64() * 1e3
                ));
            }
            text
        };
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(Error::Stdout)?;
        if summary.received > 0 {
            Ok(())
        } else {
            Err(Error::NoAnswers {
                peer: self.target.clone(),
                sent: summary.transmitted,
                waited: self.config.wait,
                late: summary.late,
            })
        }
    }
}
