//! The shutdown signal: SIGINT or SIGTERM cancels the root token.

use tokio_util::sync::CancellationToken;

/// Waits for SIGINT or SIGTERM, logs which arrived, and cancels `token`.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the broker");
                let _ = ctrl_c.await;
                tracing::info!(signal = "SIGINT", "shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        tracing::info!(signal = "SIGINT", "shutting down");
    }
    token.cancel();
}
