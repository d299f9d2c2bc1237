//! `sockit echo send`: request/response against any echo-like server.
//!
//! Over UDP every message is one datagram and the reply is the next
//! datagram back. Over TCP every message is sent as a line (`\n` appended,
//! as `nc` sends what you type) and the reply is read until the first of:
//! a newline, the server closing the connection (seed 003's server answers
//! without a newline and closes), or a pause of `QUIET` after some bytes
//! arrived (a server that answers without newline and stays open).
//! Nothing at all within `-w` seconds is an error.

use std::io::Write;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::messages::Messages;
use crate::net;
use crate::text::printable;
use crate::transport::{Connector, Stream};

/// A reply with no newline is taken as complete after this much silence.
const QUIET: Duration = Duration::from_millis(200);

/// A reply longer than this is printed in pieces of this size.
const MAX_REPLY: usize = 1024 * 1024;

/// What `echo send` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain TCP or TLS (`--tls`, with how the server is checked).
    pub connector: Connector,
    pub host: String,
    pub port: u16,
    /// Datagrams instead of a TCP connection (`-u`).
    pub udp: bool,
    /// How long to wait for each reply (`-w`), and for the TCP connect.
    pub wait: Duration,
    /// One JSON object per reply instead of the bare reply text (`--json`).
    pub json: bool,
}

/// Sends every message and prints every reply on `out`, one per line.
pub async fn send(mut messages: Messages, config: Config, ctx: Context) -> Result<()> {
    let config = &config;
    let out = &mut { ctx.out };
    let peer = net::display_target(&config.host, config.port);
    if config.udp {
        let (socket, _) = net::connect_udp(&config.host, config.port).await?;
        let mut buf = vec![0u8; 65_536];
        while let Some(message) = messages.next().await? {
            let sent = Instant::now();
            socket
                .send(&message)
                .await
                .map_err(|e| udp_error(&peer, e))?;
            let n = match tokio::time::timeout(config.wait, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(udp_error(&peer, e)),
                Err(_) => return Err(no_reply(&peer, config.wait)),
            };
            print_reply(out, config.json, &message, &buf[..n], sent.elapsed())?;
        }
    } else {
        let stream = config
            .connector
            .connect(&config.host, config.port, config.wait)
            .await?;
        let mut conn = LineConn::new(stream);
        while let Some(mut message) = messages.next().await? {
            let sent = Instant::now();
            message.push(b'\n');
            conn.stream
                .write_all(&message)
                .await
                .map_err(|e| Error::closed(&peer, e))?;
            let reply = conn.reply(&peer, config.wait).await?;
            message.pop();
            print_reply(out, config.json, &message, &reply, sent.elapsed())?;
        }
        let _ = conn.stream.shutdown().await;
    }
    Ok(())
}

fn udp_error(peer: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Error::UdpRefused { peer: peer.into() }
    } else {
        Error::io(format!("cannot exchange datagrams with {peer}"), e)
    }
}

fn no_reply(peer: &str, waited: Duration) -> Error {
    Error::NoReply {
        peer: peer.into(),
        waited,
    }
}

/// Prints one reply as one line: the line ending is dropped, the text made
/// safe for a terminal; or, with `--json`, an object with the message, the
/// reply (invalid UTF-8 replaced) and the round-trip time.
fn print_reply(
    out: &mut impl Write,
    json: bool,
    message: &[u8],
    reply: &[u8],
    rtt: Duration,
) -> Result<()> {
    let reply = reply.strip_suffix(b"\n").unwrap_or(reply);
    let reply = reply.strip_suffix(b"\r").unwrap_or(reply);
    let line = if json {
        serde_json::json!({
            "message": String::from_utf8_lossy(message),
            "reply": String::from_utf8_lossy(reply),
            "rtt_ms": (rtt.as_secs_f64() * 1e6).round() / 1e3,
        })
        .to_string()
    } else {
        printable(reply)
    };
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(Error::Stdout)
}

/// A TCP connection whose input is cut into replies (see the module doc).
struct LineConn {
    stream: Stream,
    buf: BytesMut,
    closed: bool,
}

impl LineConn {
    fn new(stream: Stream) -> Self {
        LineConn {
            stream,
            buf: BytesMut::with_capacity(4096),
            closed: false,
        }
    }

    async fn reply(&mut self, peer: &str, wait: Duration) -> Result<BytesMut> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.split_to(i + 1));
            }
            if self.buf.len() >= MAX_REPLY || (self.closed && !self.buf.is_empty()) {
                return Ok(self.buf.split());
            }
            if self.closed {
                return Err(Error::ended(peer, "the server closed it before replying"));
            }
            let until = if self.buf.is_empty() {
                deadline
            } else {
                deadline.min(Instant::now() + QUIET)
            };
            self.buf.reserve(4096);
            match tokio::time::timeout_at(until, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => self.closed = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Error::closed(peer, e)),
                Err(_) if self.buf.is_empty() => return Err(no_reply(peer, wait)),
                Err(_) => return Ok(self.buf.split()),
            }
        }
    }
}
