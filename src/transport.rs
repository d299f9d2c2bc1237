//! The transport seam: what a TCP service reads and writes, whatever the
//! bytes travel in.
//!
//! Every TCP server accepts through [`crate::service::serve_tcp`], which
//! hands each accepted socket to an [`Acceptor`] *inside the connection's
//! own task* (so a peer that stalls in a handshake blocks nobody) and then
//! gives the service a [`Stream`]. Every TCP client connects through a
//! [`Connector`] and gets the same type. Services are written against
//! [`Stream`] only, never against `TcpStream`, so a new transport (TLS, a
//! WebSocket) is a new variant here and a new acceptor/connector mode, not
//! a change to chat, echo or JSON.
//!
//! [`Stream`] is an enum rather than a boxed trait object so that an idle
//! plain connection stays exactly as small as a bare `TcpStream` (the chat
//! room is meant for ten thousand of them); a larger variant is to be
//! boxed. Besides `AsyncRead`/`AsyncWrite` it offers the readiness calls
//! (`poll_read_ready` + `try_read`, `poll_write_ready` +
//! `try_write_vectored`) that chat's hand-written poll loop and echo's
//! buffer-on-demand reads are built on: they let a connection wait for
//! input without holding a read buffer. A variant with a session layer
//! (TLS) answers them from its own state: "readable" when it already has
//! plaintext or the socket has bytes, `try_*` by driving the session once
//! without waiting.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BufMut;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::error::Result;

/// A connection as services see it.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP: the bytes on the wire are the service's bytes.
    Plain(TcpStream),
    /// TLS over TCP (boxed: a plain connection stays small).
    Tls(Box<Tls>),
}

/// A TLS session and its socket, with what the readiness calls need:
/// plaintext read ahead while looking for readiness, kept until taken.
/// The lock is never contended (one task owns a connection); it lets the
/// `&self` readiness calls drive the session, as they must.
pub struct Tls {
    inner: Mutex<TlsInner>,
}

struct TlsInner {
    io: tokio_rustls::TlsStream<TcpStream>,
    /// Plaintext read by `poll_read_ready`, from `taken` on.
    ahead: Vec<u8>,
    taken: usize,
    /// The peer closed the session.
    eof: bool,
    /// The waker of the task that last asked for readiness: the `try_*`
    /// calls poll the session with it, so a wake-up they cause (tokio's
    /// cooperative yield, a socket's readiness) reaches that task instead
    /// of being lost.
    waker: Option<Waker>,
}

impl TlsInner {
    fn remember(&mut self, cx: &Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }

    fn waker(&self) -> Waker {
        self.waker.clone().unwrap_or_else(|| Waker::noop().clone())
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// Plaintext read ahead at once, at most.
const READ_AHEAD: usize = 16 * 1024;

thread_local! {
    /// Where `poll_read_ready` reads ahead into, one per runtime thread.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_AHEAD].into_boxed_slice());
}

impl Tls {
    fn new(io: tokio_rustls::TlsStream<TcpStream>) -> Tls {
        Tls {
            inner: Mutex::new(TlsInner {
                io,
                ahead: Vec::new(),
                taken: 0,
                eof: false,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TlsInner> {
        // Poisoned only by a panic inside a read or write: the session is
        // as good as the socket under it then, and the next call says so.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut t = self.lock();
        t.remember(cx);
        if t.taken < t.ahead.len() || t.eof {
            return Poll::Ready(Ok(()));
        }
        let t = &mut *t;
        // Read into this thread's scratch buffer, and keep only what came:
        // an idle member's poll (most polls) then allocates nothing, and
        // no poll zeroes 16 KiB first.
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(&mut scratch[..]);
            let polled = Pin::new(&mut t.io).poll_read(cx, &mut buf);
            match polled {
                Poll::Ready(Ok(())) => {
                    let got = buf.filled();
                    if got.is_empty() {
                        t.eof = true;
                    }
                    t.ahead = got.to_vec();
                    t.taken = 0;
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }

    /// Reads without waiting: what was read ahead first, then whatever
    /// the session has.
    fn try_read(&self, out: &mut [u8]) -> io::Result<usize> {
        let mut t = self.lock();
        if t.taken < t.ahead.len() {
            let n = out.len().min(t.ahead.len() - t.taken);
            out[..n].copy_from_slice(&t.ahead[t.taken..t.taken + n]);
            t.taken += n;
            if t.taken == t.ahead.len() {
                t.ahead = Vec::new();
                t.taken = 0;
            }
            return Ok(n);
        }
        if t.eof {
            return Ok(0);
        }
        let waker = t.waker();
        let mut cx = Context::from_waker(&waker);
        let mut buf = ReadBuf::new(out);
        match Pin::new(&mut t.io).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Ready once what the session holds for the socket is out.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut t = self.lock();
        t.remember(cx);
        Pin::new(&mut t.io).poll_flush(cx)
    }

    /// Writes without waiting: taken only once the session's earlier
    /// records are out (so "written" never hides bytes stuck behind a
    /// full socket for long: see [`Stream::has_unsent`]).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut t = self.lock();
        let waker = t.waker();
        let mut cx = Context::from_waker(&waker);
        match Pin::new(&mut t.io).poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
        }
        match Pin::new(&mut t.io).poll_write_vectored(&mut cx, bufs) {
            Poll::Ready(Ok(n)) => {
                let _ = Pin::new(&mut t.io).poll_flush(&mut cx);
                Ok(n)
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn has_unsent(&self) -> bool {
        self.lock().io.get_ref().1.wants_write()
    }
}

impl Stream {
    /// Ready when a read may make progress (data, end of stream or an
    /// error is waiting); registers `cx` for a wake-up otherwise.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::Tls(t) => t.poll_read_ready(cx),
        }
    }

    /// Reads what is waiting without waiting (`WouldBlock` if nothing is).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_read(buf),
            Stream::Tls(t) => t.try_read(buf),
        }
    }

    /// Ready when a write may make progress; registers `cx` otherwise.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_write_ready(cx),
            Stream::Tls(t) => t.poll_write_ready(cx),
        }
    }

    /// Waits until a write may make progress.
    pub async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    /// Writes what fits without waiting (`WouldBlock` if nothing does).
    /// One slice goes out with `send(2)`, several with one `writev(2)`.
    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => match bufs {
                [one] => s.try_write(one),
                _ => s.try_write_vectored(bufs),
            },
            Stream::Tls(t) => t.try_write_vectored(bufs),
        }
    }

    /// True while bytes taken by a write are still on their way to the
    /// socket (a TLS session's records behind a full socket): the writer
    /// then waits for [`Stream::poll_write_ready`] as for a full socket.
    pub fn has_unsent(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.has_unsent(),
        }
    }

    /// Makes closing this connection reset it: unread and unsent bytes are
    /// dropped at once instead of lingering for a peer that will not read
    /// them. (A zero linger never blocks the thread on close.)
    pub fn reset_on_close(&self) {
        let linger = |s: &TcpStream| {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        };
        match self {
            Stream::Plain(s) => linger(s),
            Stream::Tls(t) => linger(t.lock().io.get_ref().0),
        }
    }

    /// Borrows the two directions separately, so one task can read and
    /// write at once without a lock (plain TCP splits for free).
    pub fn split(&mut self) -> (Reader<'_>, Writer<'_>) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.split();
                (Reader::Plain(r), Writer::Plain(w))
            }
            Stream::Tls(t) => (Reader::Tls(t), Writer::Tls(t)),
        }
    }

    /// The connection as a blocking socket, for services that move bytes
    /// with blocking system calls on threads of their own (file
    /// transfer's `sendfile` and receive pipeline).
    ///
    /// A plain stream is its own socket. A TLS stream is bridged: the
    /// service gets one end of a Unix socket pair and a task on the
    /// runtime pumps between the other end and the session, each way
    /// with its half-close (end of input becomes `close_notify`). Those
    /// services keep their threads and system calls unchanged, and one
    /// thread may read while another writes, which one rustls session
    /// cannot do. The price is a copy each way through the pair
    /// (measured in BENCHMARKS.md, "TLS file transfer").
    ///
    /// The socket is socket2's type, which covers both a TCP socket and
    /// a Unix one with the calls these services use (`try_clone`,
    /// timeouts, `shutdown`, `Read`/`Write` on `&Socket`, the fd for
    /// `sendfile`).
    pub fn into_blocking(self) -> io::Result<(socket2::Socket, Bridge)> {
        let tls = match self {
            Stream::Plain(s) => return Ok((blocking(s)?.into(), Bridge::default())),
            Stream::Tls(t) => t,
        };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let ours = tokio::net::UnixStream::from_std(ours)?;
        let fault = Fault::default();
        let pump = tokio::spawn(pump(Stream::Tls(tls), ours, fault.clone()));
        Ok((
            theirs.into(),
            Bridge {
                pump: Some(pump),
                fault,
            },
        ))
    }

    /// The connection for one blocking thread that both writes and reads
    /// it (ping's probe and reply, with `SO_RCVTIMEO`): the plain socket,
    /// or the client session driven by rustls's blocking `StreamOwned`
    /// on it. No bridge (see [`Stream::into_blocking`]) sits between, so a
    /// round trip measures TLS and the network, not a hop through a
    /// socket pair and a task wake-up each way.
    pub fn into_sync(self) -> io::Result<SyncStream> {
        let tls = match self {
            Stream::Plain(s) => return Ok(SyncStream::Plain(blocking(s)?)),
            Stream::Tls(t) => t.inner.into_inner().unwrap_or_else(PoisonError::into_inner),
        };
        if tls.taken < tls.ahead.len() {
            // Nothing reads a connection before it is handed over.
            return Err(io::Error::other("plaintext was read ahead of the handover"));
        }
        let tokio_rustls::TlsStream::Client(session) = tls.io else {
            return Err(io::Error::other(
                "only a client session runs on a blocking thread",
            ));
        };
        let (tcp, conn) = session.into_inner();
        Ok(SyncStream::Tls(Box::new(rustls::StreamOwned::new(
            conn,
            blocking(tcp)?,
        ))))
    }
}

/// The runtime's socket as an ordinary blocking one, for a thread of its
/// own.
fn blocking(tcp: TcpStream) -> io::Result<std::net::TcpStream> {
    let tcp = tcp.into_std()?;
    tcp.set_nonblocking(false)?;
    Ok(tcp)
}

/// A connection as one blocking thread uses it (see [`Stream::into_sync`]).
#[derive(Debug)]
pub enum SyncStream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl SyncStream {
    /// `SO_RCVTIMEO` on the socket: a read with nothing to read ends with
    /// `WouldBlock` after it (through TLS too; the session keeps what it
    /// had read of a record).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            SyncStream::Plain(s) => s.set_read_timeout(timeout),
            SyncStream::Tls(t) => t.sock.set_read_timeout(timeout),
        }
    }
}

impl io::Read for SyncStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SyncStream::Plain(s) => s.read(buf),
            SyncStream::Tls(t) => t.read(buf),
        }
    }
}

impl io::Write for SyncStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SyncStream::Plain(s) => s.write(buf),
            SyncStream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            SyncStream::Plain(s) => s.flush(),
            SyncStream::Tls(t) => t.flush(),
        }
    }
}

/// Bytes moved per system call by a TLS bridge's pump, each way: a TLS
/// record is 16 KiB, so this is a few records per wakeup.
const PUMP_BUFFER: usize = 256 << 10;

/// Moves bytes both ways between a TLS session and its bridge until both
/// directions have ended. A failure is kept in `fault` *before* the pair
/// is dropped, so the service finds it there once its socket ends: that
/// is the one place the session's outcome is kept.
async fn pump(mut tls: Stream, mut pair: tokio::net::UnixStream, fault: Fault) {
    let moved =
        tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut pair, PUMP_BUFFER, PUMP_BUFFER)
            .await;
    if let Err(e) = &moved {
        // rustls's own words ("peer closed connection without sending TLS
        // close_notify", "received fatal alert: ..."); `tls_cause` speaks
        // of a server's handshake, and either end may be the peer here.
        let _ = fault.0.set(crate::error::cause(e));
    }
}

/// Why a bridged TLS session failed (a record that does not decrypt, the
/// peer's alert, a reset), for a service to name instead of the bare end
/// of its own socket, which is all it sees. Empty for a plain connection
/// and for a session that has not failed.
#[derive(Debug, Clone, Default)]
pub struct Fault(Arc<std::sync::OnceLock<String>>);

impl Fault {
    /// The failure, as a phrase for inside `( )`.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    /// `e`'s cause in those words, or the session's failure if there was
    /// one (then `e` is only its echo on the service's socket).
    pub fn explain(&self, e: &io::Error) -> String {
        match self.get() {
            Some(why) => format!("the TLS session failed: {why}"),
            None => crate::error::cause(e),
        }
    }
}

/// What keeps a bridged TLS connection going (see
/// [`Stream::into_blocking`]); nothing for a plain one.
#[derive(Debug, Default)]
pub struct Bridge {
    pump: Option<tokio::task::JoinHandle<()>>,
    fault: Fault,
}

impl Bridge {
    /// Where the session's failure will be, for the service's threads.
    pub fn fault(&self) -> Fault {
        self.fault.clone()
    }

    /// Waits, once the service has closed its socket, until the bridge has
    /// passed everything on and ended the session (at most `wait`), so the
    /// peer sees the TLS stream end before this process may exit. How the
    /// session ended is in [`Bridge::fault`].
    pub async fn finish(self, wait: Duration) {
        if let Some(pump) = self.pump
            && tokio::time::timeout(wait, pump).await.is_err()
        {
            tracing::debug!("a TLS session did not end within {wait:?}");
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => t.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(&mut t.lock().io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(t) => Pin::new(&mut t.lock().io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(_) => true,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(t) => Pin::new(&mut t.lock().io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(&mut t.lock().io).poll_shutdown(cx),
        }
    }
}

impl Tls {
    /// `AsyncRead`: what was read ahead first.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut t = self.lock();
        if t.taken < t.ahead.len() {
            let n = buf.remaining().min(t.ahead.len() - t.taken);
            buf.put_slice(&t.ahead[t.taken..t.taken + n]);
            t.taken += n;
            if t.taken == t.ahead.len() {
                t.ahead = Vec::new();
                t.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if t.eof {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut t.io).poll_read(cx, buf)
    }
}

/// The reading direction of a [`Stream::split`].
#[derive(Debug)]
pub enum Reader<'a> {
    Plain(ReadHalf<'a>),
    Tls(&'a Tls),
}

impl Reader<'_> {
    /// Waits until a read may make progress, holding no buffer meanwhile.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Reader::Plain(r) => r.readable().await,
            Reader::Tls(t) => std::future::poll_fn(|cx| t.poll_read_ready(cx)).await,
        }
    }

    /// Reads what is waiting into `buf`'s spare capacity without waiting.
    pub fn try_read_buf<B: BufMut>(&mut self, buf: &mut B) -> io::Result<usize> {
        match self {
            Reader::Plain(r) => r.try_read_buf(buf),
            Reader::Tls(t) => {
                let mut chunk = [0u8; 8192];
                let want = buf.remaining_mut().min(chunk.len());
                let n = t.try_read(&mut chunk[..want])?;
                buf.put_slice(&chunk[..n]);
                Ok(n)
            }
        }
    }
}

/// The writing direction of a [`Stream::split`].
#[derive(Debug)]
pub enum Writer<'a> {
    Plain(WriteHalf<'a>),
    Tls(&'a Tls),
}

impl AsyncWrite for Writer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Writer::Tls(t) => Pin::new(&mut t.lock().io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_flush(cx),
            Writer::Tls(t) => Pin::new(&mut t.lock().io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Writer::Tls(t) => Pin::new(&mut t.lock().io).poll_shutdown(cx),
        }
    }
}

/// Turns an accepted socket into a [`Stream`]. It is cheap to clone (one
/// per connection task) and runs in that task; the accept loop bounds it
/// with [`HANDSHAKE_TIMEOUT`].
#[derive(Debug, Clone, Default)]
pub struct Acceptor {
    mode: Mode,
}

/// How accepted sockets are taken on.
#[derive(Debug, Clone, Default)]
enum Mode {
    /// As they are.
    #[default]
    Plain,
    /// TLS for a peer whose first byte starts a TLS record (a ClientHello
    /// starts with 0x16, which no text protocol's first line does), plain
    /// for the others unless `only`.
    Tls {
        config: Arc<rustls::ServerConfig>,
        only: bool,
        first: FirstWord,
    },
}

/// Who speaks first in a service's protocol: what a `--tls` server may
/// wait for before it decides a peer is a plaintext one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstWord {
    /// The client (echo, JSON): wait for its first byte, however long the
    /// handshake timeout allows.
    Client,
    /// The server (chat's welcome): a client silent for [`SNIFF_WAIT`] is
    /// a plaintext one waiting to be greeted.
    Server,
}

/// How long a `--tls` chat server waits for a peer's first byte before
/// taking it as a plaintext client waiting for its welcome. A TLS client
/// sends its ClientHello at once, but one on a loaded machine (hundreds
/// of handshakes in flight, measured) can take a few hundred ms to get
/// it out: a shorter wait would greet it in plaintext and break its
/// handshake, a longer one makes a plaintext client wait for its welcome.
pub const SNIFF_WAIT: Duration = Duration::from_secs(1);

/// What a `--tls-only` server tells a plaintext client before closing.
pub const TLS_ONLY: &[u8] =
    b"* error: this server takes TLS connections only (connect with --tls)\n";

/// The TLS settings every sockit endpoint uses: ring's primitives (they
/// build with a C compiler alone, no cmake or assembler, as aws-lc would
/// need), TLS 1.2 and 1.3, with AES-128-GCM preferred over rustls's
/// default AES-256-GCM: both are standard TLS 1.3 suites, and 128-bit
/// keys are ten rounds of AES instead of fourteen, which is what bulk
/// transfer pays per byte (measured in BENCHMARKS.md, "TLS file
/// transfer"). The other suites stay, in rustls's order, for peers
/// without AES-GCM.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let preferred = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != preferred);
    Arc::new(provider)
}

/// The longest a peer may take over a transport handshake before its
/// connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Acceptor {
    /// Takes connections as plain TCP.
    pub fn plain() -> Self {
        Acceptor::default()
    }

    /// Takes connections in TLS with `identity` (and, unless `only`,
    /// plaintext ones on the same port).
    pub fn tls(identity: &crate::identity::Identity, only: bool, first: FirstWord) -> Result<Self> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            })
            .map_err(|e| crate::error::Error::Input {
                what: "cannot set up TLS".into(),
                why: e.to_string(),
            })?;
        Ok(Acceptor {
            mode: Mode::Tls {
                config: Arc::new(config),
                only,
                first,
            },
        })
    }

    /// Whether connections are taken as they come (no handshake).
    pub fn is_plain(&self) -> bool {
        matches!(self.mode, Mode::Plain)
    }

    /// Takes one accepted socket on; an error (or the timeout) drops the
    /// connection and is logged by the accept loop.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        match &self.mode {
            // Nothing to wait for: no timer for plain connections.
            Mode::Plain => Ok(Stream::Plain(tcp)),
            Mode::Tls {
                config,
                only,
                first: speaker,
            } => {
                let mut first = [0u8; 1];
                // The accept loop's handshake timeout bounds the wait.
                let wait = match speaker {
                    FirstWord::Client => HANDSHAKE_TIMEOUT,
                    FirstWord::Server => SNIFF_WAIT,
                };
                let sniffed = tokio::time::timeout(wait, tcp.peek(&mut first)).await;
                let tls = matches!(sniffed, Ok(Ok(1))) && first[0] == 0x16;
                if tls {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                    let session = acceptor.accept(tcp).await?;
                    return Ok(Stream::Tls(Box::new(Tls::new(session.into()))));
                }
                if let Ok(Err(e)) = sniffed {
                    return Err(e);
                }
                if *only {
                    let mut tcp = tcp;
                    tokio::io::AsyncWriteExt::write_all(&mut tcp, TLS_ONLY).await?;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tcp).await;
                    return Err(io::Error::other("a plaintext client, refused (--tls-only)"));
                }
                Ok(Stream::Plain(tcp))
            }
        }
    }
}

/// Opens client connections as [`Stream`]s: resolves, tries each address
/// within the wait, and sets up the transport.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    tls: Option<(Arc<rustls::ClientConfig>, crate::trust::Trust)>,
}

impl Connector {
    /// Connects in plain TCP.
    pub fn plain() -> Self {
        Connector::default()
    }

    /// Connects in TLS, checking the server as `trust` says (see
    /// `crate::trust`).
    pub fn tls(trust: crate::trust::Trust) -> Result<Self> {
        let config = crate::trust::client_config(&trust)?;
        Ok(Connector {
            tls: Some((config, trust)),
        })
    }

    /// Whether connections are made in TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `host:port`, each address tried for at most `wait`
    /// (and the TLS handshake within `wait` too).
    pub async fn connect(&self, host: &str, port: u16, wait: Duration) -> Result<Stream> {
        let tcp = crate::net::connect_tcp(host, port, wait).await?;
        let Some((config, trust)) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let peer = crate::net::display_target(host, port);
        let failed = |why: String| crate::error::Error::Input {
            what: format!("TLS with {peer} failed"),
            why,
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| failed(format!("'{host}' is no host name")))?;
        let handshake = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp);
        let session = match tokio::time::timeout(wait, handshake).await {
            Ok(Ok(session)) => session,
            Ok(Err(e)) => return Err(failed(tls_cause(&e))),
            Err(_) => return Err(failed(format!("no handshake within {wait:?}"))),
        };
        let cert = session
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first());
        crate::trust::check(trust, &peer, cert)?;
        Ok(Stream::Tls(Box::new(Tls::new(session.into()))))
    }
}

/// A failed handshake as the short phrase after a `(`.
fn tls_cause(e: &io::Error) -> String {
    let text = e.to_string();
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "the server closed the connection: does it take TLS?".into()
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        "the server does not speak TLS".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain stream is no bigger than the socket it wraps: idle chat
    /// clients cost what they cost before the seam.
    #[test]
    fn plain_stream_is_as_small_as_a_socket() {
        assert_eq!(
            std::mem::size_of::<Stream>(),
            std::mem::size_of::<TcpStream>()
        );
    }

    /// Bytes written through one [`Stream`] arrive through the other, by
    /// the readiness calls and by `AsyncRead`/`AsyncWrite` alike.
    #[tokio::test]
    async fn accepted_and_connected_streams_carry_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connector = Connector::plain();
        let client = connector.connect("127.0.0.1", port, Duration::from_secs(5));
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut client = client.unwrap();
        let mut server = Acceptor::plain().accept(accepted.unwrap().0).await.unwrap();

        client.write_all(b"ping\n").await.unwrap();
        std::future::poll_fn(|cx| server.poll_read_ready(cx))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let n = server.try_read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping\n");

        server.writable().await.unwrap();
        let parts = [IoSlice::new(b"po"), IoSlice::new(b"ng\n")];
        assert_eq!(server.try_write_vectored(&parts).unwrap(), 5);
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong\n");

        let (mut reader, mut writer) = server.split();
        writer.shutdown().await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        client.write_all(b"half").await.unwrap();
        reader.readable().await.unwrap();
        let mut rest = bytes::BytesMut::with_capacity(16);
        assert_eq!(reader.try_read_buf(&mut rest).unwrap(), 4);
        assert_eq!(&rest[..], b"half");
    }
}
