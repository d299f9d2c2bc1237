//! `sockit json serve`: every JSON value in, the same value back as one
//! compact line; bad input answered with `{"error":...,"offset":...}` and
//! the connection kept open (see `super::protocol` for the framing).
//!
//! Replies are written as the values are decoded and flushed when no
//! further value is already waiting, so a client that pipelines many
//! values gets them back in few writes, and one that never reads stops
//! being read from once its socket buffer is full: memory stays bounded
//! by `--max-size` plus one read buffer.

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_util::codec::Framed;

use super::protocol::{Frame, JsonCodec};
use crate::context::Context;
use crate::error::Result;
use crate::service::{self, Listen};
use crate::transport::Stream;

/// What `json serve`'s flags decide.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest value accepted, in bytes (`--max-size`).
    pub max_size: usize,
}

/// Serves JSON echo on `listen` until the shutdown token is cancelled.
pub async fn run(listen: Listen, config: Config, ctx: Context) -> Result<()> {
    let max_size = config.max_size;
    service::serve_tcp(
        listen,
        ctx.shutdown,
        service::OnShutdown::Drop,
        move |stream, _, _| serve_connection(stream, max_size),
    )
    .await;
    Ok(())
}

async fn serve_connection(stream: Stream, max_size: usize) -> std::io::Result<()> {
    let mut framed = Framed::new(stream, JsonCodec::new(max_size));
    while let Some(frame) = framed.next().await {
        feed(&mut framed, frame?).await?;
        // Answer every value already received before paying for a flush.
        // Polling once never waits; the write buffer stays bounded because
        // `feed` flushes by itself past tokio-util's backpressure boundary.
        while let Some(next) = framed.next().now_or_never() {
            match next {
                Some(frame) => feed(&mut framed, frame?).await?,
                None => return framed.flush().await,
            }
        }
        framed.flush().await?;
        release_idle_buffers(&mut framed);
    }
    framed.flush().await
}

/// Buffers above this size are given back when a connection goes idle.
const KEEP_BUFFER: usize = 64 * 1024;

/// A connection that once carried a large value must not keep its peak
/// buffers while it idles: with everything answered and flushed, buffers
/// grown past [`KEEP_BUFFER`] are replaced by empty ones.
fn release_idle_buffers(framed: &mut Framed<Stream, JsonCodec>) {
    if framed.read_buffer().is_empty() && framed.read_buffer().capacity() > KEEP_BUFFER {
        *framed.read_buffer_mut() = bytes::BytesMut::new();
    }
    if framed.write_buffer().is_empty() && framed.write_buffer().capacity() > KEEP_BUFFER {
        *framed.write_buffer_mut() = bytes::BytesMut::new();
    }
}

async fn feed(framed: &mut Framed<Stream, JsonCodec>, frame: Frame) -> std::io::Result<()> {
    if let Frame::Error { message, offset } = &frame {
        tracing::debug!("bad json at offset {offset}: {message}");
    }
    framed.feed(frame).await
}
