//! The HTTP endpoint: `/healthz` and Prometheus `/metrics`.
//!
//! It reads from the dispatcher and the metrics; it changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
struct HttpState {
    dispatcher: Dispatcher,
    /// True while the broker accepts connections; `/healthz` reports it.
    serving: Arc<AtomicBool>,
}

/// The bound HTTP listener, ready to serve.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
}

impl HttpServer {
    /// Binds `addr`.
    ///
    /// # Errors
    ///
    /// Fails when the address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<HttpServer> {
        Ok(HttpServer {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// Only if the socket was closed under us.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `token` is cancelled.
    pub async fn run(
        self,
        dispatcher: Dispatcher,
        serving: Arc<AtomicBool>,
        token: CancellationToken,
    ) {
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .with_state(HttpState {
                dispatcher,
                serving,
            });
        let res = axum::serve(self.listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }
}

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.serving.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let queues = state.dispatcher.queues();
    let workers = state.dispatcher.workers().len();
    let body = state.dispatcher.metrics().render(&queues, workers);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
