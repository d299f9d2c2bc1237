//! `sockit json send`: send JSON values, print each reply on its own line.
//!
//! Values come from the arguments (checked by the CLI before anything is
//! sent) or as NDJSON on stdin, where a line that is not valid JSON is
//! reported with its line number and skipped, and makes the exit code 1.
//! Each value goes out as one compact line; the reply is read with the
//! same codec the server uses, so a seed server's reply, which has no
//! newline, is recognised as soon as its last byte arrives.

use std::io::Write;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

use super::protocol::{Frame, JsonCodec, parse_value};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::messages::Messages;
use crate::net;
use crate::transport::Connector;

/// Largest reply accepted: generous, since the user asked for it, yet
/// bounded, since the server may be anything.
const MAX_REPLY: usize = 64 << 20;

/// What `json send` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plain TCP or TLS (`--tls`, with how the server is checked).
    pub connector: Connector,
    pub host: String,
    pub port: u16,
    /// How long to wait for each reply (`-w`), and for the connect.
    pub wait: Duration,
}

/// Sends every value and prints every reply on `out`.
pub async fn send(mut messages: Messages, config: Config, ctx: Context) -> Result<()> {
    let config = &config;
    let out = &mut { ctx.out };
    let peer = net::display_target(&config.host, config.port);
    let stream = config
        .connector
        .connect(&config.host, config.port, config.wait)
        .await?;
    let mut framed = Framed::new(stream, JsonCodec::eager(MAX_REPLY));
    let mut skipped = Vec::new();
    let mut number = 0usize;
    while let Some(line) = messages.next().await? {
        number += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = match parse_value(&line) {
            Ok(v) => v,
            Err(why) => {
                tracing::warn!("skipping input line {number}: not valid JSON ({why})");
                skipped.push(number);
                continue;
            }
        };
        framed
            .send(Frame::Value(value))
            .await
            .map_err(|e| Error::closed(&peer, e))?;
        let reply = match tokio::time::timeout(config.wait, framed.next()).await {
            Err(_) => {
                return Err(Error::NoReply {
                    peer,
                    waited: config.wait,
                });
            }
            Ok(None) => {
                return Err(Error::ended(peer, "the server closed it before replying"));
            }
            Ok(Some(Err(e))) => return Err(Error::closed(&peer, e)),
            Ok(Some(Ok(frame))) => frame,
        };
        let line = match reply {
            Frame::Value(bytes) => bytes.to_vec(),
            Frame::Error { message, offset } => {
                format!("(reply is not valid JSON at offset {offset}: {message})").into_bytes()
            }
        };
        out.write_all(&line)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .map_err(Error::Stdout)?;
    }
    if let Some(first) = skipped.first() {
        return Err(Error::Input {
            what: format!(
                "{} input line(s) were not valid JSON and were not sent",
                skipped.len()
            ),
            why: format!("first at line {first}"),
        });
    }
    Ok(())
}
