//! `sockit json serve`: every JSON value in, the same value back as one
//! compact line; bad input answered with `{"error":...,"offset":...}` and
//! the connection kept open (see [`super::protocol`] for the framing).
//!
//! Replies are written as the values are decoded and flushed when no
//! further value is already waiting, so a client that pipelines many
//! values gets them back in few writes, and one that never reads stops
//! being read from once its socket buffer is full: memory stays bounded
//! by `--max-size` plus one read buffer.

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::protocol::{Frame, JsonCodec};
use crate::error::Result;
use crate::service;

/// Serves JSON echo on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    max_size: usize,
    max_connections: usize,
    shutdown: CancellationToken,
) -> Result<()> {
    service::serve_tcp(listener, max_connections, shutdown, move |stream, _, _| {
        serve_connection(stream, max_size)
    })
    .await;
    Ok(())
}

async fn serve_connection(stream: TcpStream, max_size: usize) -> std::io::Result<()> {
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
    }
    framed.flush().await
}

async fn feed(framed: &mut Framed<TcpStream, JsonCodec>, frame: Frame) -> std::io::Result<()> {
    if let Frame::Error { message, offset } = &frame {
        tracing::debug!("bad json at offset {offset}: {message}");
    }
    framed.feed(frame).await
}
