//! The one shutdown signal.
//!
//! `main` calls [`on_signals`] once; the token it returns is handed to every
//! server and every task they start (never read from a global), so a test
//! can stop an in-process server by cancelling its own token, and Ctrl-C or
//! SIGTERM stop a real one. Servers must notice the token within 1 s.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first Ctrl-C (SIGINT) or SIGTERM.
///
/// The handlers are installed before this returns, so a signal that comes
/// right after a server has announced itself is never met by the default
/// action (which would kill the process without a clean shutdown). Must be
/// called inside a Tokio runtime. If a handler cannot be installed, that is
/// logged and the default action stays in place for that signal.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|e| tracing::warn!("cannot watch Ctrl-C: {e}"))
            .ok();
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|e| tracing::warn!("cannot watch SIGTERM: {e}"))
            .ok();
        tokio::spawn(async move {
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let terminated = async {
                match terminate.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = interrupted => {}
                _ = terminated => {}
            }
            tracing::info!("shutdown requested");
            trigger.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            trigger.cancel();
        }
    });
    token
}
