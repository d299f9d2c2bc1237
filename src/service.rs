//! What every TCP server shares: a cap on connections taken before
//! accepting (so a flood waits in the kernel's backlog instead of costing
//! us memory), accept errors met with backoff instead of ending the server
//! (EMFILE passes), one task per connection that first takes the socket on
//! through the server's [`Acceptor`] (the transport handshake, so a peer
//! stalling in it holds only its own task), and shutdown: stop accepting,
//! cancel every connection through the same token, and wait a bounded
//! grace period for them to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::transport::{Acceptor, HANDSHAKE_TIMEOUT, Stream};

/// How long shutdown waits for connections to wind down (well inside the
/// 1 s promised to users).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// What happens to a running connection when the server shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnShutdown {
    /// The handler is dropped at once: the protocol has no way to say
    /// goodbye (echo, JSON), so the peer just sees the connection close.
    Drop,
    /// The handler watches the token itself and is given up to
    /// [`SHUTDOWN_GRACE`] to tell its peer (chat's `* server shutting
    /// down`) and close cleanly.
    Finish,
}

/// How a TCP server takes connections on: shared by every service.
#[derive(Debug)]
pub struct Listen {
    /// The bound listening socket.
    pub listener: TcpListener,
    /// What turns each accepted socket into a [`Stream`].
    pub acceptor: Acceptor,
    /// Most connections served at once; more wait in the backlog.
    pub max_connections: usize,
    /// Who may connect (`--allow`, `--deny`).
    pub access: Arc<Access>,
}

/// Serves connections from `listen` with `handle` until `shutdown` is
/// cancelled. `handle` gets the connection and its own clone of the token;
/// `on_shutdown` says whether it is trusted to end by itself when the
/// token fires or is dropped.
pub async fn serve_tcp<F, Fut>(
    listen: Listen,
    shutdown: CancellationToken,
    on_shutdown: OnShutdown,
    handle: F,
) where
    F: Fn(Stream, SocketAddr, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let Listen {
        listener,
        acceptor,
        max_connections,
        access,
    } = listen;
    let handle = Arc::new(handle);
    let limit = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    loop {
        // Shutdown first: once it is asked for, not one more connection.
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        if !access.is_open() && !access.permits(peer.ip()) {
            access.refuse(peer, "a connection");
            drop(permit);
            // Told why in its own task: a peer that does not read blocks
            // nobody.
            tracker.spawn(refuse(tcp, peer));
            continue;
        }
        tracing::debug!("connection from {peer}");
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        let handle = handle.clone();
        tracker.spawn(async move {
            // Bounded, so a peer that stalls mid-handshake is dropped. A
            // plain connection needs no handshake and takes no timer; the
            // TLS one is boxed, because this task's future is as large as
            // its largest state for as long as the connection lives, and
            // a rustls handshake in it cost every idle plaintext member
            // about 0.9 KiB (measured, BENCHMARKS.md "TLS chat").
            let accepted = if acceptor.is_plain() {
                Ok(Ok(Stream::Plain(tcp)))
            } else {
                Box::pin(tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    acceptor.accept(tcp),
                ))
                .await
            };
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!("connection from {peer} refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(
                        "connection from {peer}: no handshake within {HANDSHAKE_TIMEOUT:?}"
                    );
                    return;
                }
            };
            let connection = handle(stream, peer, shutdown.clone());
            let result = match on_shutdown {
                OnShutdown::Finish => Some(connection.await),
                OnShutdown::Drop => tokio::select! {
                    result = connection => Some(result),
                    _ = shutdown.cancelled() => None,
                },
            };
            if let Some(Err(e)) = result {
                tracing::debug!("connection from {peer} ended: {e}");
            }
            drop(permit);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
}

/// What a refused peer is told before the connection closes.
fn refusal(peer: SocketAddr) -> String {
    format!("* error: not allowed from {}\n", peer.ip().to_canonical())
}

/// Tells a refused peer so, closes our side and waits (briefly) for it
/// to close its side: closing with its input unread would reset the
/// connection and could destroy the line before it is read.
async fn refuse(mut tcp: TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let line = refusal(peer);
    let _ = tokio::time::timeout_at(deadline, tcp.write_all(line.as_bytes())).await;
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

/// Accepts the next connection, backing off instead of failing when the
/// process runs out of file descriptors or a peer reset early. Accepted
/// sockets get TCP_NODELAY (answers go out at once) and keepalive.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                crate::net::keepalive(&stream);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
