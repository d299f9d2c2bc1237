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
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::error::Result;

/// A connection as services see it.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP: the bytes on the wire are the service's bytes.
    Plain(TcpStream),
}

impl Stream {
    /// Ready when a read may make progress (data, end of stream or an
    /// error is waiting); registers `cx` for a wake-up otherwise.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
        }
    }

    /// Reads what is waiting without waiting (`WouldBlock` if nothing is).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_read(buf),
        }
    }

    /// Ready when a write may make progress; registers `cx` otherwise.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_write_ready(cx),
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
        }
    }

    /// Makes closing this connection reset it: unread and unsent bytes are
    /// dropped at once instead of lingering for a peer that will not read
    /// them. (A zero linger never blocks the thread on close.)
    pub fn reset_on_close(&self) {
        match self {
            Stream::Plain(s) => {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
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
        }
    }

    /// The plain socket underneath, for services that move bytes with
    /// blocking system calls on a thread of their own (file transfer's
    /// `splice`/`sendfile` pipeline). `None` for a transport whose bytes
    /// are not the service's bytes.
    pub fn into_plain(self) -> Option<TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
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
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The reading direction of a [`Stream::split`].
#[derive(Debug)]
pub enum Reader<'a> {
    Plain(ReadHalf<'a>),
}

impl Reader<'_> {
    /// Waits until a read may make progress, holding no buffer meanwhile.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Reader::Plain(r) => r.readable().await,
        }
    }

    /// Reads what is waiting into `buf`'s spare capacity without waiting.
    pub fn try_read_buf<B: BufMut>(&mut self, buf: &mut B) -> io::Result<usize> {
        match self {
            Reader::Plain(r) => r.try_read_buf(buf),
        }
    }
}

/// The writing direction of a [`Stream::split`].
#[derive(Debug)]
pub enum Writer<'a> {
    Plain(WriteHalf<'a>),
}

impl AsyncWrite for Writer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => Pin::new(w).poll_shutdown(cx),
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
#[derive(Debug, Clone, Copy, Default)]
enum Mode {
    /// As they are.
    #[default]
    Plain,
}

/// The longest a peer may take over a transport handshake before its
/// connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Acceptor {
    /// Takes connections as plain TCP.
    pub fn plain() -> Self {
        Acceptor::default()
    }

    /// Takes one accepted socket on; an error (or the timeout) drops the
    /// connection and is logged by the accept loop.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        match self.mode {
            // Nothing to wait for: no timer for plain connections.
            Mode::Plain => Ok(Stream::Plain(tcp)),
        }
    }
}

/// Opens client connections as [`Stream`]s: resolves, tries each address
/// within the wait, and sets up the transport.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    mode: Mode,
}

impl Connector {
    /// Connects in plain TCP.
    pub fn plain() -> Self {
        Connector::default()
    }

    /// Connects to `host:port`, each address tried for at most `wait`.
    pub async fn connect(&self, host: &str, port: u16, wait: Duration) -> Result<Stream> {
        let tcp = crate::net::connect_tcp(host, port, wait).await?;
        match self.mode {
            Mode::Plain => Ok(Stream::Plain(tcp)),
        }
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
