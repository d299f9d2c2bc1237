//! The TCP side of the echo server.
//!
//! Connections are accepted by [`crate::service::serve_tcp`] (connection
//! cap, accept backoff, shutdown). Each connection reads and writes at the
//! same time: a reader turns input into answers and a writer sends them,
//! joined by a channel of at most [`CHUNKS_IN_FLIGHT`] chunks. A client
//! that streams without reading therefore fills that channel and its own
//! socket buffers and is then simply not read from any more, which bounds
//! what it can cost us, while a client that reads as it writes never
//! deadlocks (the 100 MB full-duplex test).
//!
//! The read buffer is taken only once bytes are waiting and given back
//! after a conversation-sized read, so an idle connection holds no 64 KiB
//! buffer; a bulk stream keeps reading into full-size buffers.

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::protocol::StreamReply;
use super::server::Config;
use crate::error::Result;
use crate::service::{self, Listen};
use crate::transport::Stream;

/// Bytes read from a TCP connection at once.
const READ_CHUNK: usize = 64 * 1024;

/// A read smaller than this is conversation, not a bulk stream: the buffer
/// is released afterwards instead of being kept for the next read.
const SMALL_READ: usize = READ_CHUNK / 4;

/// Answer chunks queued between a connection's reader and writer.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Serves echo over TCP on `listen` until `shutdown` is cancelled.
pub async fn run_tcp(listen: Listen, config: Config, shutdown: CancellationToken) -> Result<()> {
    service::serve_tcp(
        listen,
        shutdown,
        service::OnShutdown::Drop,
        move |stream, _, _| serve_connection(stream, config.clone()),
    )
    .await;
    Ok(())
}

/// One TCP connection: read and answer concurrently until the peer is done
/// sending and every answer has been written, then close our side.
async fn serve_connection(mut stream: Stream, config: Config) -> std::io::Result<()> {
    let (mut reader, mut writer) = stream.split();
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(CHUNKS_IN_FLIGHT);
    let delay = config.delay;
    let read_side = async move {
        let mut state = StreamReply::new(config.reply);
        let mut input = BytesMut::new();
        let mut answer = BytesMut::new();
        loop {
            reader.readable().await?;
            input.reserve(READ_CHUNK);
            let n = match reader.try_read_buf(&mut input) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            let arrived = Instant::now();
            if n == 0 {
                state.finish(&mut answer);
                let last = answer.split().freeze();
                if !last.is_empty() {
                    // A send error means the writer failed; it reports.
                    let _ = tx.send((arrived, last)).await;
                }
                return Ok(());
            }
            if state.is_identity() {
                if tx.send((arrived, input.split().freeze())).await.is_err() {
                    return Ok(());
                }
            } else {
                // Answer in pieces of at most READ_CHUNK bytes each, so a
                // read full of newlines under a long --reply cannot make
                // one huge answer; the channel's bound gives backpressure.
                let step = state.input_for(READ_CHUNK);
                let mut pieces = input.chunks(step).peekable();
                while let Some(piece) = pieces.next() {
                    state.push(piece, pieces.peek().is_none(), &mut answer);
                    if !answer.is_empty()
                        && tx.send((arrived, answer.split().freeze())).await.is_err()
                    {
                        return Ok(());
                    }
                }
                input.clear();
            }
            if n < SMALL_READ {
                input = BytesMut::new();
                answer = BytesMut::new();
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
