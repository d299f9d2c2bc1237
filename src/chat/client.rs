//! `sockit chat join`: print what the room says while sending stdin lines.
//!
//! Receiving and sending run concurrently in one loop: incoming bytes are
//! printed line by line as they arrive (escaped, so a peer cannot take
//! over the terminal), and stdin is read by its own task so that a line
//! being typed is never lost to a `select!`. A chunk without a newline is
//! printed once the server pauses, so the seed's Python server, which
//! relays raw chunks, reads well too.
//!
//! With `-n NAME` the client adapts to the server: sockit greets with
//! `* welcome to sockit chat`, and then `/nick NAME` is sent; any other
//! server (the seed's) gets every message prefixed `[NAME] `, as seed task
//! 4-3's client does.
//!
//! Leaving (`bye`, `/quit` or the end of stdin) sends the seed's `bye`,
//! which both sockit and the seed server understand, closes the sending
//! side, and prints what still arrives until the server closes (bounded).

use std::io::Write;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::messages::Messages;
use crate::net;
use crate::text::printable;
use crate::transport::Connector;

/// What `chat join` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain TCP or TLS (`--tls`, with how the server is checked).
    pub connector: Connector,
    pub host: String,
    pub port: u16,
    /// The nick to use (`-n`).
    pub name: Option<String>,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
}

/// How long to wait for sockit's welcome before treating the server as a
/// plain relay (only with `-n`).
const GREETING: Duration = Duration::from_millis(500);

/// A received chunk without a newline is printed after this long.
const PAUSE: Duration = Duration::from_millis(100);

/// After leaving, how long to keep printing before giving up on the
/// server closing.
const LINGER: Duration = Duration::from_secs(2);

/// The start of sockit's welcome line.
const WELCOME: &[u8] = b"* welcome to sockit chat";

/// Longest incoming line kept whole; longer ones are printed in pieces.
const MAX_INCOMING_LINE: usize = 1 << 20;

/// How the server was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// Not known yet (waiting for a greeting, with `-n` only).
    Unknown,
    Sockit,
    /// Anything else: a plain relay.
    Other,
}

/// Joins the room and runs until the user leaves or the server closes.
pub async fn join(messages: Messages, config: Config, ctx: Context) -> Result<()> {
    let config = &config;
    let out = &mut { ctx.out };
    let peer = net::display_target(&config.host, config.port);
    let stream = config
        .connector
        .connect(&config.host, config.port, config.connect_timeout)
        .await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let broken = |e: std::io::Error| Error::closed(&peer, e);

    let (lines_tx, mut lines) = mpsc::channel::<Result<Vec<u8>>>(16);
    let stdin_task = tokio::spawn(read_input(messages, lines_tx));

    let mut server = if config.name.is_some() {
        Server::Unknown
    } else {
        Server::Other
    };
    let greeting_deadline = Instant::now() + GREETING;
    let mut incoming = Incoming::default();
    let mut buf = vec![0; 16 * 1024];
    let pause = tokio::time::sleep(PAUSE);
    tokio::pin!(pause);
    // Set once we have said bye: from then on we only print.
    let mut leaving: Option<Instant> = None;

    let result = loop {
        let waiting_input = leaving.is_none() && server != Server::Unknown;
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(n) => n,
                    Err(e) => break Err(broken(e)),
                };
                if n == 0 {
                    incoming.flush(out)?;
                    if leaving.is_none() {
                        tracing::info!("the server closed the connection");
                    }
                    break Ok(());
                }
                let first = incoming.feed(&buf[..n], out)?;
                if server == Server::Unknown && let Some(first) = first {
                    match recognise(&first, config.name.as_deref(), &mut writer).await {
                        Ok(known) => server = known,
                        Err(e) => break Err(broken(e)),
                    }
                }
                if incoming.has_partial() {
                    pause.as_mut().reset(Instant::now() + PAUSE);
                }
            }
            _ = &mut pause, if incoming.has_partial() => incoming.flush(out)?,
            _ = tokio::time::sleep_until(greeting_deadline), if server == Server::Unknown => {
                server = Server::Other;
            }
            _ = tokio::time::sleep_until(leaving.unwrap_or_else(Instant::now)), if leaving.is_some() => {
                incoming.flush(out)?;
                break Ok(());
            }
            line = lines.recv(), if waiting_input => {
                let line = match line {
                    Some(Ok(line)) => Some(line),
                    Some(Err(e)) => break Err(e),
                    None => None,
                };
                let name = config.name.as_deref().filter(|_| server == Server::Other);
                match send_input(&mut writer, name, line).await {
                    Ok(true) => {}
                    Ok(false) => leaving = Some(Instant::now() + LINGER),
                    Err(e) => break Err(broken(e)),
                }
            }
        }
    };
    stdin_task.abort();
    out.flush().map_err(Error::Stdout)?;
    result
}

/// Tells sockit from any other server by the first line it sent, and on
/// sockit takes the nick asked for with `/nick`.
async fn recognise(
    first: &[u8],
    name: Option<&str>,
    writer: &mut (impl AsyncWriteExt + Unpin),
) -> std::io::Result<Server> {
    if !first.starts_with(WELCOME) {
        return Ok(Server::Other);
    }
    if let Some(name) = name {
        writer
            .write_all(format!("/nick {name}\n").as_bytes())
            .await?;
    }
    Ok(Server::Sockit)
}

/// Sends what the user typed: a line, or (for `bye`, `/quit` or the end
/// of input) the goodbye. `Ok(false)` once leaving.
async fn send_input(
    writer: &mut (impl AsyncWriteExt + Unpin),
    name: Option<&str>,
    line: Option<Vec<u8>>,
) -> std::io::Result<bool> {
    match line {
        Some(line) if line != b"bye" && line != b"/quit" => {
            send_line(writer, name, &line).await?;
            Ok(true)
        }
        _ => {
            say_bye(writer).await?;
            Ok(false)
        }
    }
}

/// Sends one typed line, with the seed 4-3 `[NAME] ` prefix when `name`
/// is given (a server that is not sockit).
async fn send_line(
    writer: &mut (impl AsyncWriteExt + Unpin),
    name: Option<&str>,
    line: &[u8],
) -> std::io::Result<()> {
    let mut message = Vec::with_capacity(line.len() + 40);
    if let Some(name) = name {
        message.extend_from_slice(format!("[{name}] ").as_bytes());
    }
    message.extend_from_slice(line);
    message.push(b'\n');
    writer.write_all(&message).await
}

/// Leaves the seed's way (`bye`, which sockit understands too) and closes
/// the sending side.
async fn say_bye(writer: &mut (impl AsyncWriteExt + Unpin)) -> std::io::Result<()> {
    writer.write_all(b"bye").await?;
    writer.shutdown().await
}

/// Feeds stdin lines to the main loop; cancel-safe because the channel is.
async fn read_input(mut messages: Messages, lines: mpsc::Sender<Result<Vec<u8>>>) {
    loop {
        let next = messages.next().await;
        let done = !matches!(next, Ok(Some(_)));
        let item = match next {
            Ok(Some(line)) => Ok(line),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        if lines.send(item).await.is_err() || done {
            return;
        }
    }
}

/// Incoming bytes turned into printed lines.
#[derive(Default)]
struct Incoming {
    partial: Vec<u8>,
    /// The first complete line has been seen (for server recognition).
    seen_first: bool,
}

impl Incoming {
    /// Prints every complete line in `data`; returns the first line ever
    /// received, the once it completes.
    fn feed(&mut self, mut data: &[u8], out: &mut impl Write) -> Result<Option<Vec<u8>>> {
        let mut first = None;
        while let Some(end) = memchr::memchr(b'\n', data) {
            self.partial.extend_from_slice(&data[..end]);
            data = &data[end + 1..];
            if !self.seen_first {
                self.seen_first = true;
                first = Some(self.partial.clone());
            }
            self.print_partial(out)?;
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() > MAX_INCOMING_LINE {
            self.print_partial(out)?;
        }
        out.flush().map_err(Error::Stdout)?;
        Ok(first)
    }

    fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// The server paused mid-line: print what we have as a line.
    fn flush(&mut self, out: &mut impl Write) -> Result<()> {
        if self.has_partial() {
            self.seen_first = true;
            self.print_partial(out)?;
        }
        out.flush().map_err(Error::Stdout)
    }

    fn print_partial(&mut self, out: &mut impl Write) -> Result<()> {
        let line = self.partial.strip_suffix(b"\r").unwrap_or(&self.partial);
        writeln!(out, "{}", printable(line)).map_err(Error::Stdout)?;
        self.partial.clear();
        Ok(())
    }
}
