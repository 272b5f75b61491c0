//! The HTTP port: the dashboard (`/`), the JSON API (`/api/v1`, described
//! by `/api/v1/openapi.json`), `/healthz` and Prometheus `/metrics`.
//!
//! The dashboard is three static files compiled into the binary; it reads
//! and changes everything through the API, like any other client. `/healthz`
//! and `/metrics` stay open whatever the auth settings, for probes and
//! scrapers (bind the port to a private network when that matters).

mod api;
pub mod auth;
mod connections;
mod identities;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::history::{Activity, Backlog, HistoryStore};
use crate::metrics::{ActivityView, DenialCounts, Metrics};
use crate::settings::Settings;
pub use auth::{Auth, AuthError, hash_password};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpContext {
    /// Identities and access decisions.
    pub access: crate::access::Access,
    /// The task engine.
    pub engine: Engine,
    /// Task history, when enabled.
    pub history: Option<HistoryStore>,
    /// Live worker and rate figures.
    pub activity: Arc<Activity>,
    /// Users and sessions.
    pub auth: Arc<Auth>,
    /// Events not yet recorded in the history.
    pub history_backlog: Arc<Backlog>,
    /// Task events as they are recorded, for live followers.
    pub tail: crate::history::Tail,
    /// The settings the broker runs with.
    pub settings: Settings,
    /// When the broker started.
    pub started: Instant,
    /// Cancelled when the HTTP server stops; ends live event streams.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext").finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct HttpState {
    ctx: Arc<HttpContext>,
    /// True while the broker accepts connections; `/healthz` reports it.
    serving: Arc<AtomicBool>,
    /// HTTP connections closed on arrival at `http.max_connections`.
    refused: Arc<std::sync::atomic::AtomicU64>,
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
    ///
    /// Its own accept loop rather than `axum::serve`, for three limits a
    /// hostile client would otherwise find missing: at most
    /// `http.max_connections` at once (beyond, the connection that has
    /// waited longest for a request is closed to make room, or the new one
    /// when all are serving requests), `http.header_timeout_ms` to send a
    /// request's headers, and `http.body_timeout_ms` to send its body. A
    /// slowloris client holds a socket for seconds, not forever, never more
    /// than the cap, and never keeps a whole request from being served.
    pub async fn run(self, ctx: HttpContext, serving: Arc<AtomicBool>, token: CancellationToken) {
        let limits = ctx.settings.http.clone();
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let state = HttpState {
            ctx: Arc::new(ctx),
            serving,
            refused: refused.clone(),
        };
        let app = Router::new()
            .route("/", get(dashboard_page))
            .route("/app.js", get(dashboard_script))
            .route("/style.css", get(dashboard_style))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .nest("/api/v1", api::router())
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                Duration::from_millis(limits.body_timeout_ms),
            ))
            .with_state(state);
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let tasks = tokio_util::task::TaskTracker::new();
        let open = Arc::new(connections::Connections::default());
        let header_timeout = Duration::from_millis(limits.header_timeout_ms);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait, do not spin.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = token.cancelled() => break,
            };
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                // At the cap: the connection that has waited longest for a
                // request makes room (its task ends and frees its slot);
                // when every one is serving a request, this one is refused.
                Err(_) if open.evict_oldest_waiting() => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    match tokio::time::timeout(
                        Duration::from_secs(1),
                        slots.clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(slot)) => slot,
                        _ => {
                            drop(stream);
                            continue;
                        }
                    }
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "HTTP connection over http.max_connections; closed");
                    drop(stream);
                    continue;
                }
            };
            let (id, evicted) = open.open();
            let service = connections::Tracked {
                inner: hyper_util::service::TowerToHyperService::new(app.clone()),
                id,
                connections: open.clone(),
            };
            let token = token.clone();
            let open = open.clone();
            tasks.spawn(async move {
                let _slot = slot;
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    // Waiting longest for a request when a new one came at the cap.
                    () = evicted.cancelled() => {}
                    () = token.cancelled() => {
                        // Finish the request in progress, then close.
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
                open.close(id);
            });
        }
        tasks.close();
        tasks.wait().await;
    }
}

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

async fn dashboard_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page loads comes from this origin; no inline script.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
            ),
        ],
        INDEX_HTML,
    )
}

async fn dashboard_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn dashboard_style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

/// 200 while the broker serves and its queue store can write; 503 with the
/// reason otherwise (a full disk: until writes resume by themselves).
async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    if !state.serving.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not serving\n".to_string());
    }
    match state.ctx.engine.store_condition() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("queue store cannot write: {reason}\n"),
        ),
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let ctx = &state.ctx;
    let queues = ctx.engine.queues();
    let workers = ctx.engine.workers().len();
    let mut body = ctx.engine.metrics().render(&queues, workers);
    let view = ActivityView {
        queues: ctx.activity.queue_counts(),
        workers: ctx
            .activity
            .workers()
            .into_iter()
            .map(|w| (w.id, w.online, w.completed, w.failed))
            .collect(),
        history_tasks: ctx.history.as_ref().map(HistoryStore::retained),
        history_backlog: ctx.history_backlog.pending(),
        history_dropped: ctx.history_backlog.dropped(),
    };
    Metrics::render_activity(&mut body, &view);
    let _ = std::fmt::Write::write_fmt(
        &mut body,
        format_args!(
            "# HELP {name} HTTP connections closed at http.max_connections (the one waiting longest for a request, or the new one when all serve requests).\n# TYPE {name} counter\n{name} {}\n",
            state.refused.load(Ordering::Relaxed),
            name = crate::metrics::HTTP_REFUSED
        ),
    );
    let f = ctx.access.figures();
    Metrics::render_denials(
        &mut body,
        DenialCounts {
            publish: f.denied_publish,
            subscribe: f.denied_subscribe,
            other: f.denied_other,
            auth_failures: f.auth_failures,
        },
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
