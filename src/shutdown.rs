//! The one shutdown signal.
//!
//! `main` calls [`on_signals`] once; the token it returns is handed to every
//! server and every task they start (never read from a global), so a test
//! can stop an in-process server by cancelling its own token, and Ctrl-C or
//! SIGTERM stop a real one. Servers must notice the token within 1 s.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first Ctrl-C or SIGTERM.
///
/// Must be called inside a Tokio runtime. If the SIGTERM handler cannot be
/// installed the process still stops on Ctrl-C; that failure is logged.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!("cannot watch SIGTERM: {e}"),
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!("cannot watch Ctrl-C: {e}");
        std::future::pending::<()>().await;
    }
}
