//! `sockit json serve`: every JSON value in, the same value back as one
//! compact line; bad input answered with `{"error":...,"offset":...}` and
//! the connection kept open (see [`super::protocol`] for the framing).
//!
//! Replies are written as the values are decoded and flushed when no
//! further value is already waiting, so a client that pipelines many
//! values gets them back in few writes, and one that never reads stops
//! being read from once its socket buffer is full: memory stays bounded
//! by `--max-size` plus one read buffer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::protocol::{Frame, JsonCodec};
use crate::echo::server::accept;
use crate::error::Result;

/// How long shutdown waits for connections to wind down.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Serves JSON echo on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    max_size: usize,
    max_connections: usize,
    shutdown: CancellationToken,
) -> Result<()> {
    let limit = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = shutdown.cancelled() => break,
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tracing::debug!("json connection from {peer}");
            tokio::select! {
                result = serve_connection(stream, max_size) => {
                    if let Err(e) = result {
                        tracing::debug!("json connection from {peer} ended: {e}");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
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
