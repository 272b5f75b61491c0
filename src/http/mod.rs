//! The HTTP port: the dashboard (`/`), the JSON API (`/api/v1`, described
//! by `/api/v1/openapi.json`), `/healthz` and Prometheus `/metrics`.
//!
//! The dashboard is three static files compiled into the binary; it reads
//! and changes everything through the API, like any other client. `/healthz`
//! and `/metrics` stay open whatever the auth settings, for probes and
//! scrapers (bind the port to a private network when that matters).

mod api;
pub mod auth;
mod identities;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
    pub async fn run(self, ctx: HttpContext, serving: Arc<AtomicBool>, token: CancellationToken) {
        let state = HttpState {
            ctx: Arc::new(ctx),
            serving,
        };
        let app = Router::new()
            .route("/", get(dashboard_page))
            .route("/app.js", get(dashboard_script))
            .route("/style.css", get(dashboard_style))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .nest("/api/v1", api::router())
            .with_state(state);
        let res = axum::serve(self.listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "HTTP server failed");
        }
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

async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.serving.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
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
