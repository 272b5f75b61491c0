//! The JSON API under `/api/v1`: everything the dashboard shows and does.
//!
//! Errors are JSON too: `{"error": {"code": "...", "message": "..."}}`, with
//! 400 for bad input, 401 without a valid session, 403 for a viewer trying
//! an admin action, 404 for unknown ids and queues, 409 when the task is in
//! the wrong state for the action, 503 when the history is disabled.
//! `openapi.json` (served at `/api/v1/openapi.json`) documents each route;
//! a test checks the two lists agree.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use swarmq_worker::wire::Status;

use super::HttpState;
use super::auth::{Caller, SESSION_COOKIE};
use crate::engine::{ActionError, RevokeOutcome, WorkflowView, now_us, parse_rfc3339_us};
use crate::history::{
    HistoryStore, MAX_SCAN, SERIES_IN_MEMORY, TaskFilter, TaskRecord, TaskState, unhex,
};
use crate::settings::Role;

/// The OpenAPI document, served verbatim.
const OPENAPI: &str = include_str!("openapi.json");

/// Tasks per page when `limit` is not given.
const DEFAULT_PAGE: usize = 50;

/// Largest page a client may ask for.
pub(super) const MAX_PAGE: usize = 1000;

/// Every route of [`router`], as `(method, path)`; a test compares it with
/// `openapi.json`. Add a route in both places.
#[cfg(test)]
const ROUTES: [(&str, &str); 32] = [
    ("get", "/openapi.json"),
    ("post", "/login"),
    ("post", "/logout"),
    ("get", "/me"),
    ("get", "/overview"),
    ("get", "/series"),
    ("get", "/events"),
    ("get", "/tail"),
    ("get", "/queues"),
    ("get", "/queues/{name}"),
    ("post", "/queues/{name}/purge"),
    ("get", "/queues/{name}/dead"),
    ("delete", "/queues/{name}/dead"),
    ("post", "/queues/{name}/dead/replay"),
    ("delete", "/queues/{name}/dead/{id}"),
    ("post", "/queues/{name}/dead/{id}/replay"),
    ("get", "/workers"),
    ("get", "/schedules"),
    ("post", "/schedules"),
    ("delete", "/schedules/{name}"),
    ("get", "/tasks"),
    ("get", "/tasks/{id}"),
    ("post", "/tasks/{id}/revoke"),
    ("post", "/tasks/{id}/retry"),
    ("get", "/workflows"),
    ("get", "/workflows/{id}"),
    ("post", "/workflows/{id}/revoke"),
    ("get", "/identities"),
    ("post", "/identities"),
    ("post", "/identities/{name}/rotate"),
    ("post", "/identities/{name}/revoke"),
    ("get", "/access/denials"),
];

pub(super) fn router() -> Router<HttpState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/overview", get(overview))
        .route("/series", get(series))
        .route("/events", get(events))
        .route("/tail", get(tail))
        .route("/queues", get(queues))
        .route("/queues/{name}", get(queue))
        .route("/queues/{name}/purge", post(purge))
        .route(
            "/queues/{name}/dead",
            get(dead_letters).delete(discard_all_dead),
        )
        .route("/queues/{name}/dead/replay", post(replay_all_dead))
        .route("/queues/{name}/dead/{id}", delete(discard_dead))
        .route("/queues/{name}/dead/{id}/replay", post(replay_dead))
        .route("/workers", get(workers))
        .route("/schedules", get(schedules).post(add_schedule))
        .route("/schedules/{name}", delete(remove_schedule))
        .route("/tasks", get(tasks))
        .route("/tasks/{id}", get(task))
        .route("/tasks/{id}/revoke", post(revoke))
        .route("/tasks/{id}/retry", post(retry))
        .route("/workflows", get(workflows))
        .route("/workflows/{id}", get(workflow))
        .route("/workflows/{id}/revoke", post(revoke_workflow))
        .route(
            "/identities",
            get(super::identities::list).post(super::identities::add),
        )
        .route("/identities/{name}/rotate", post(super::identities::rotate))
        .route("/identities/{name}/revoke", post(super::identities::revoke))
        .route("/access/denials", get(super::identities::denials))
        .fallback(|| async { ApiError::not_found("no such API route") })
}

/// An API error: a status and a JSON body.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(super) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub(super) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn history_disabled() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_disabled",
            "the task history is disabled (history.enabled = false)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> ApiError {
        match e {
            ActionError::NotFound(_) | ActionError::UnknownQueue(_) => {
                ApiError::not_found(e.to_string())
            }
            ActionError::Unfinished(_) | ActionError::QueueFull(_) => {
                ApiError::conflict(e.to_string())
            }
            ActionError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            ActionError::Store(_) => ApiError::internal(e.to_string()),
        }
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

fn session_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION)
        && let Ok(v) = v.to_str()
        && let Some(token) = v.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<HttpState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let auth = &state.ctx.auth;
        if auth.is_open() {
            return Ok(Caller {
                user: None,
                role: Role::Admin,
            });
        }
        session_token(&parts.headers)
            .and_then(|t| auth.session(&t))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "log in first (POST /api/v1/login)",
                )
            })
    }
}

/// A caller with the admin role.
pub(super) struct Admin(pub(super) Caller);

impl FromRequestParts<HttpState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this action needs the admin role",
            ));
        }
        Ok(Admin(caller))
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

async fn login(
    State(state): State<HttpState>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> ApiResult {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let auth = state.ctx.auth.clone();
    if auth.is_open() {
        return Err(ApiError::bad_request(
            "no users are configured: access is open, there is nothing to log in to",
        ));
    }
    let name = req.username.clone();
    let permit = state.ctx.auth.check_permit().await;
    let outcome = tokio::task::spawn_blocking(move || auth.login(&req.username, &req.password))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    drop(permit);
    let Some((token, role)) = outcome else {
        tracing::warn!(user = %name, "failed login");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong user name or password",
        ));
    };
    tracing::info!(user = %name, role = ?role, "login");
    let cookie = state.ctx.auth.cookie(&token);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, v);
    }
    let body = json!({
        "token": token,
        "user": name,
        "role": role,
        "expires_in_s": state.ctx.auth.ttl().as_secs(),
    });
    Ok((headers, Json(body)).into_response())
}

async fn logout(State(state): State<HttpState>, request_headers: HeaderMap) -> impl IntoResponse {
    if let Some(token) = session_token(&request_headers) {
        state.ctx.auth.logout(&token);
    }
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&state.ctx.auth.expired_cookie()) {
        headers.insert(header::SET_COOKIE, v);
    }
    (StatusCode::NO_CONTENT, headers)
}

async fn me(caller: Caller, State(state): State<HttpState>) -> Json<Value> {
    Json(json!({
        "user": caller.user,
        "role": caller.role,
        "open": state.ctx.auth.is_open(),
    }))
}

fn totals(state: &HttpState) -> Value {
    let m = state.ctx.engine.metrics();
    json!({
        "submitted": m.submitted(),
        "succeeded": m.finished(Status::Success),
        "failed": m.finished(Status::Failure),
        "expired": m.finished(Status::Expired),
        "revoked": m.finished(Status::Revoked),
        "rejected": m.rejected_total(),
        "redelivered": m.redelivered(),
    })
}

async fn overview(_: Caller, State(state): State<HttpState>) -> Json<Value> {
    Json(overview_json(&state))
}

fn overview_json(state: &HttpState) -> Value {
    let ctx = &state.ctx;
    let queues = ctx.engine.queues();
    let s = &ctx.settings.history;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": ctx.started.elapsed().as_secs(),
        "open": ctx.auth.is_open(),
        "totals": totals(state),
        "now": ctx.activity.latest(),
        "connections": ctx.engine.metrics().connections(),
        "store_error": ctx.engine.store_condition(),
        "workers_online": ctx.engine.workers().len(),
        "queues": queues.len(),
        "waiting": queues.iter().map(|q| q.waiting).sum::<usize>(),
        "scheduled": queues.iter().map(|q| q.scheduled).sum::<usize>(),
        "in_flight": queues.iter().map(|q| q.in_flight).sum::<usize>(),
        "queues_without_consumer": queues.iter().filter(|q| q.waiting > 0 && q.consumers == 0).map(|q| q.name.clone()).collect::<Vec<_>>(),
        "history": {
            "enabled": ctx.history.is_some(),
            "retained": ctx.history.as_ref().map(HistoryStore::retained),
            "max_tasks": s.max_tasks,
            "max_age_secs": s.max_age_secs,
            "backlog": ctx.history_backlog.pending(),
            "events_dropped": ctx.history_backlog.dropped(),
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    minutes: Option<String>,
}

async fn series(
    _: Caller,
    State(state): State<HttpState>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let max = (SERIES_IN_MEMORY / 60) as u64;
    let minutes = match q.minutes.as_deref() {
        None => 15,
        Some(m) => m
            .parse::<u64>()
            .ok()
            .filter(|m| (1..=max).contains(m))
            .ok_or_else(|| ApiError::bad_request(format!("minutes must be 1 to {max}")))?,
    };
    let since = (now_us() / 1000).saturating_sub(minutes * 60_000);
    let points = state.ctx.activity.series(since);
    Ok(Json(json!({"interval_s": 1, "minutes": minutes, "points": points})).into_response())
}

/// Pushes a `tick` event every second with what the dashboard refreshes:
/// the latest sample, totals, queue depths and counts.
async fn events(
    _: Caller,
    State(state): State<HttpState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use futures_util::StreamExt as _;
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = state.ctx.shutdown.clone();
    let stream =
        futures_util::stream::unfold((state, interval), |(state, mut interval)| async move {
            interval.tick().await;
            let data = overview_json(&state).to_string();
            Some((
                Ok(Event::default().event("tick").data(data)),
                (state, interval),
            ))
        })
        .take_until(async move { stop.cancelled().await });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
struct TailQuery {
    queue: Option<String>,
}

/// Streams each task event as it is recorded: a `task` event per step
/// (data: one JSON object), and a `lagged` event with the number missed
/// when the caller reads too slowly to keep up.
async fn tail(
    _: Caller,
    State(state): State<HttpState>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    use futures_util::StreamExt as _;
    use tokio::sync::broadcast::error::RecvError;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let queue = q.queue.filter(|q| !q.is_empty());
    if let Some(name) = &queue
        && !swarmq_worker::wire::is_valid_queue_name(name)
    {
        return Err(ApiError::bad_request(format!(
            "invalid queue name `{name}`"
        )));
    }
    let rx = state.ctx.tail.follow();
    let stop = state.ctx.shutdown.clone();
    let stream = futures_util::stream::unfold((rx, queue), |(mut rx, queue)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    let ev = Event::default().event("lagged").data(n.to_string());
                    return Some((Ok(ev), (rx, queue)));
                }
                Err(RecvError::Closed) => return None,
            };
            if queue.is_some() && event.queue != queue {
                continue;
            }
            let ev = Event::default().event("task").data(event.json.as_str());
            return Some((Ok(ev), (rx, queue)));
        }
    })
    .take_until(async move { stop.cancelled().await });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn queues(_: Caller, State(state): State<HttpState>) -> Json<Value> {
    let names: Vec<String> = state
        .ctx
        .engine
        .queues()
        .into_iter()
        .map(|q| q.name)
        .collect();
    let list: Vec<Value> = names.iter().filter_map(|n| queue_json(&state, n)).collect();
    Json(json!({ "queues": list }))
}

fn queue_json(state: &HttpState, name: &str) -> Option<Value> {
    let ctx = &state.ctx;
    let q = ctx.engine.queues().into_iter().find(|q| q.name == name)?;
    let consumers: Vec<Value> = ctx
        .engine
        .workers()
        .into_iter()
        .filter(|w| w.queues.iter().any(|n| n == name))
        .map(|w| json!({"worker": w.id, "capacity": w.capacity, "in_flight": w.in_flight}))
        .collect();
    let limits = ctx.engine.limits(name);
    let warning = (q.waiting > 0 && q.consumers == 0).then(|| {
        format!(
            "{} task(s) waiting and no worker consumes this queue: subscribe one to $share/<group>/tasks/{name}",
            q.waiting
        )
    });
    Some(json!({
        "name": q.name,
        "waiting": q.waiting,
        "scheduled": q.scheduled,
        "in_flight": q.in_flight,
        "dead_letters": ctx.engine.dead_letters(name, None, 0).map_or(0, |p| p.total),
        "consumer_count": q.consumers,
        "consumers": consumers,
        "rates": ctx.activity.queue_rates(name),
        "limits": {
            "max_length": limits.max_length,
            "lease_timeout_ms": limits.lease_timeout_ms,
            "max_attempts": limits.retry.max_attempts,
            "backoff_ms": limits.retry.backoff_ms,
            "backoff_max_ms": limits.retry.backoff_max_ms,
            "jitter": limits.retry.jitter,
            "max_per_worker": limits.max_per_worker,
            "max_in_flight": limits.max_in_flight,
            "rate_limit": limits.rate_limit.map(|r| format!("{}/{}", r.count, match r.period_ms {
                1_000 => "s",
                60_000 => "m",
                _ => "h",
            })),
        },
        "warning": warning,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueQuery {
    limit: Option<String>,
}

async fn queue(
    _: Caller,
    State(state): State<HttpState>,
    Path(name): Path<String>,
    query: Result<Query<QueueQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = parse_limit(q.limit.as_deref(), 100)?;
    let mut v = queue_json(&state, &name)
        .ok_or_else(|| ApiError::not_found(format!("unknown queue `{name}`")))?;
    let waiting: Vec<Value> = state
        .ctx
        .engine
        .waiting_tasks(&name, limit)
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            json!({"id": t.id, "task": t.task, "submitted_at_us": t.submitted_at_us,
                "attempts": t.attempts, "priority": t.priority, "due_at_us": t.due_at_us})
        })
        .collect();
    v["next_waiting"] = Value::Array(waiting);
    Ok(Json(v).into_response())
}

async fn purge(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult {
    let n = state.ctx.engine.purge(&name)?;
    tracing::warn!(queue = %name, purged = n, user = ?caller.user, "queue purged through the API");
    Ok(Json(json!({"queue": name, "purged": n})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

async fn dead_letters(
    _: Caller,
    State(state): State<HttpState>,
    Path(name): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = parse_limit(q.limit.as_deref(), DEFAULT_PAGE)?;
    let cursor = match typed("cursor", q.cursor)? {
        None => None,
        Some(c) => Some(
            unhex(&c).ok_or_else(|| ApiError::bad_request("cursor is not one this API gave"))?,
        ),
    };
    let engine = state.ctx.engine.clone();
    let queue = name.clone();
    // A page reads the store: off the async threads.
    let page =
        tokio::task::spawn_blocking(move || engine.dead_letters(&queue, cursor.as_deref(), limit))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
    let letters: Vec<Value> = page
        .letters
        .iter()
        .map(|l| {
            json!({
                "id": l.task.id,
                "queue": l.task.queue,
                "task": l.task.task,
                "args": l.task.args,
                "kwargs": l.task.kwargs,
                "error": l.error,
                "attempts": l.attempts,
                "failed_at_us": l.failed_at_us,
                "submitted_at_us": l.task.submitted_at_us,
                "priority": l.task.priority,
                "reply_topic": l.task.reply.as_ref().map(|r| r.topic.clone()),
            })
        })
        .collect();
    Ok(Json(json!({
        "queue": name,
        "total": page.total,
        "dead_letters": letters,
        "next_cursor": page.next_cursor.map(|c| crate::history::hex_string(&c)),
    }))
    .into_response())
}

/// A dead-letter action's error; "not found" names the letter.
fn dead_letter_error(e: ActionError, queue: &str, id: &str) -> ApiError {
    match e {
        ActionError::NotFound(_) => {
            ApiError::not_found(format!("no dead letter `{id}` in queue `{queue}`"))
        }
        other => other.into(),
    }
}

async fn replay_dead(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    state
        .ctx
        .engine
        .replay_dead(&name, &id)
        .map_err(|e| dead_letter_error(e, &name, &id))?;
    tracing::info!(task_id = %id, queue = %name, user = ?caller.user, "dead letter replayed through the API");
    Ok(Json(json!({"id": id, "status": "queued"})).into_response())
}

async fn discard_dead(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    state
        .ctx
        .engine
        .discard_dead(&name, &id)
        .map_err(|e| dead_letter_error(e, &name, &id))?;
    tracing::info!(task_id = %id, queue = %name, user = ?caller.user, "dead letter discarded through the API");
    Ok(Json(json!({"id": id, "status": "discarded"})).into_response())
}

async fn replay_all_dead(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult {
    all_dead(state, caller, name, true).await
}

async fn discard_all_dead(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult {
    all_dead(state, caller, name, false).await
}

async fn all_dead(state: HttpState, caller: Caller, name: String, replay: bool) -> ApiResult {
    let engine = state.ctx.engine.clone();
    let queue = name.clone();
    let (n, err) = tokio::task::spawn_blocking(move || engine.all_dead(&queue, replay))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let what = if replay { "replayed" } else { "discarded" };
    tracing::info!(queue = %name, count = n, user = ?caller.user, "dead letters {what} through the API");
    if let Some(e) = err {
        let mut e = ApiError::from(e);
        e.message = format!("{what} {n}, then: {}", e.message);
        return Err(e);
    }
    Ok(Json(json!({"queue": name, what: n})).into_response())
}

fn schedule_json(v: &crate::engine::ScheduleView) -> Value {
    let r = &v.record;
    let mut spec = serde_json::to_value(&r.spec).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut spec {
        map.insert("source".into(), json!(r.source));
        map.insert("created_at_us".into(), json!(r.created_at_us));
        map.insert("last_fired_us".into(), json!(r.last_fired_us));
        map.insert(
            "last_firing_id".into(),
            json!(
                r.last_fired_us
                    .map(|t| crate::engine::firing_id(&r.spec.name, t))
            ),
        );
        map.insert("next_due_us".into(), json!(v.next_due_us));
    }
    spec
}

async fn schedules(_: Caller, State(state): State<HttpState>) -> Json<Value> {
    let list: Vec<Value> = state
        .ctx
        .engine
        .schedules()
        .iter()
        .map(schedule_json)
        .collect();
    Json(json!({ "schedules": list }))
}

impl From<crate::engine::ScheduleError> for ApiError {
    fn from(e: crate::engine::ScheduleError) -> ApiError {
        use crate::engine::ScheduleError as E;
        match e {
            E::Invalid(_) => ApiError::bad_request(e.to_string()),
            E::Exists(_) | E::Declared(_) => ApiError::conflict(e.to_string()),
            E::NotFound(_) => ApiError::not_found(e.to_string()),
            E::Store(_) => ApiError::internal(e.to_string()),
        }
    }
}

async fn add_schedule(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut body = match body {
        Value::Object(m) => m,
        _ => return Err(ApiError::bad_request("a schedule is a JSON object")),
    };
    if body.contains_key("every") == body.contains_key("cron") {
        return Err(ApiError::bad_request(
            "a schedule needs exactly one of `every` and `cron`",
        ));
    }
    // The task name defaults to the queue's, as in [[schedules]].
    if !body.contains_key("task")
        && let Some(q) = body.get("queue").cloned()
    {
        body.insert("task".into(), q);
    }
    let spec: crate::engine::ScheduleSpec = serde_json::from_value(Value::Object(body)).map_err(|e| {
        ApiError::bad_request(format!(
            "a schedule has name, queue, task, args, kwargs, reply_to, timezone and exactly one of every and cron: {e}"
        ))
    })?;
    let view = state.ctx.engine.add_schedule(spec)?;
    tracing::info!(schedule = %view.record.spec.name, user = ?caller.user, "schedule added through the API");
    Ok((StatusCode::CREATED, Json(schedule_json(&view))).into_response())
}

async fn remove_schedule(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult {
    state.ctx.engine.remove_schedule(&name)?;
    tracing::info!(schedule = %name, user = ?caller.user, "schedule removed through the API");
    Ok(Json(json!({"name": name, "status": "removed"})).into_response())
}

async fn workers(_: Caller, State(state): State<HttpState>) -> Json<Value> {
    let ctx = &state.ctx;
    let live: HashMap<String, _> = ctx
        .engine
        .workers()
        .into_iter()
        .map(|w| (w.id.clone(), w))
        .collect();
    let mut known = ctx.activity.workers();
    // The recorder lags the engine by up to one interval: a worker that
    // just joined is shown from the live view alone.
    for (id, w) in &live {
        if !known.iter().any(|k| &k.id == id) {
            let now = now_us();
            known.push(crate::history::WorkerInfo {
                id: id.clone(),
                queues: w.queues.clone(),
                capacity: w.capacity,
                online: true,
                connected_since_us: now,
                last_seen_us: now,
                completed: 0,
                failed: 0,
            });
        }
    }
    known.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.id.cmp(&b.id)));
    let list: Vec<Value> = known
        .into_iter()
        .map(|k| {
            let l = live.get(&k.id);
            json!({
                "id": k.id,
                "online": l.is_some(),
                "queues": l.map_or(k.queues.clone(), |l| l.queues.clone()),
                "capacity": l.map_or(k.capacity, |l| l.capacity),
                "in_flight": l.map_or(0, |l| l.in_flight),
                "quarantined_until_us": l.and_then(|l| l.quarantined_until_us),
                "completed": k.completed,
                "failed": k.failed,
                "connected_since_us": k.connected_since_us,
                "last_seen_us": if l.is_some() { k.last_seen_us.max(k.connected_since_us) } else { k.last_seen_us },
            })
        })
        .collect();
    Json(json!({ "workers": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskQuery {
    id: Option<String>,
    queue: Option<String>,
    task: Option<String>,
    worker: Option<String>,
    requester: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

fn parse_limit(s: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match s {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}"))),
    }
}

/// A time as milliseconds since the epoch, or RFC 3339 (with `Z` or a
/// `±HH:MM` offset); in microseconds, times before the epoch as 0.
fn parse_time(field: &str, s: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "{field} must be milliseconds since the epoch or an RFC 3339 time (2026-11-28T10:00:00Z)"
        ))
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .ok()
            .and_then(|ms| ms.checked_mul(1000))
            .ok_or_else(|| ApiError::bad_request(format!("{field} is out of range")));
    }
    parse_rfc3339_us(s).ok_or_else(bad)
}

/// A typed filter given as `name=` (empty) is a mistake, not "any".
fn typed(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() => Err(ApiError::bad_request(format!("{field} is empty"))),
        other => Ok(other),
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

async fn tasks(
    _: Caller,
    State(state): State<HttpState>,
    query: Result<Query<TaskQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let history = state
        .ctx
        .history
        .clone()
        .ok_or_else(ApiError::history_disabled)?;
    let status = match typed("status", q.status)? {
        None => None,
        Some(s) => Some(TaskState::parse(&s).ok_or_else(|| {
            let all: Vec<&str> = TaskState::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::bad_request(format!("status must be one of {}", all.join(", ")))
        })?),
    };
    let since_us = typed("since", q.since)?
        .map(|s| parse_time("since", &s))
        .transpose()?;
    let until_us = typed("until", q.until)?
        .map(|s| parse_time("until", &s))
        .transpose()?;
    if let (Some(a), Some(b)) = (since_us, until_us)
        && a > b
    {
        return Err(ApiError::bad_request("since is after until"));
    }
    let cursor = match typed("cursor", q.cursor)? {
        None => None,
        Some(c) => Some(
            unhex(&c).ok_or_else(|| ApiError::bad_request("cursor is not one this API gave"))?,
        ),
    };
    let filter = TaskFilter {
        id: non_empty(q.id),
        queue: non_empty(q.queue),
        task: non_empty(q.task),
        worker: non_empty(q.worker),
        requester: non_empty(q.requester),
        status,
        since_us,
        until_us,
        cursor,
        limit: parse_limit(q.limit.as_deref(), DEFAULT_PAGE)?,
    };
    // A search reads up to MAX_SCAN entries from disk: off the async threads.
    let started = Instant::now();
    let page = tokio::task::spawn_blocking(move || history.search(&filter))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut v = serde_json::to_value(&page).map_err(|e| ApiError::internal(e.to_string()))?;
    v["max_scan"] = json!(MAX_SCAN);
    v["took_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
    Ok(Json(v).into_response())
}

/// Task `id` from the history, with every step sent so far: 503 when it is
/// disabled, 404 when unknown.
async fn history_record(state: &HttpState, id: &str) -> Result<TaskRecord, ApiError> {
    let history = state
        .ctx
        .history
        .as_ref()
        .ok_or_else(ApiError::history_disabled)?;
    history
        .read(id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no task `{id}` in the history")))
}

async fn task(_: Caller, State(state): State<HttpState>, Path(id): Path<String>) -> ApiResult {
    let record = history_record(&state, &id).await?;
    Ok(Json(record.to_json()).into_response())
}

/// Workflow `id`: as the engine runs it, or its final state from the history.
async fn workflow_view(state: &HttpState, id: &str) -> Result<WorkflowView, ApiError> {
    if let Some(view) = state.ctx.engine.workflow(id) {
        return Ok(view);
    }
    let found = match &state.ctx.history {
        Some(h) => h
            .read_workflow(id)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?,
        None => None,
    };
    found.ok_or_else(|| ApiError::not_found(format!("no workflow `{id}`")))
}

async fn workflow(_: Caller, State(state): State<HttpState>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(workflow_view(&state, &id).await?).into_response())
}

/// The workflows running now and the most recent finished ones, without
/// their trees.
async fn workflows(_: Caller, State(state): State<HttpState>) -> ApiResult {
    let summary = |mut v: WorkflowView| {
        v.tree.children.clear();
        json!({
            "id": v.id, "status": v.status, "members": v.members, "counts": v.counts,
            "error": v.error, "requester": v.requester,
            "submitted_at_us": v.submitted_at_us, "finished_at_us": v.finished_at_us,
            "kind": v.tree.kind,
        })
    };
    let engine = &state.ctx.engine;
    let running: Vec<Value> = engine
        .running_workflows()
        .iter()
        .filter_map(|id| engine.workflow(id))
        .map(summary)
        .collect();
    let mut recent = Vec::new();
    if let Some(h) = &state.ctx.history {
        let ids = h
            .recent_workflows(100)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        for id in ids {
            if let Ok(Some(v)) = h.read_workflow(&id).await {
                recent.push(summary(v));
            }
        }
    }
    Ok(Json(json!({"running": running, "recent": recent})).into_response())
}

async fn revoke_workflow(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> ApiResult {
    if state.ctx.engine.workflow(&id).is_none() {
        let view = workflow_view(&state, &id).await?;
        return Err(ApiError::conflict(format!(
            "workflow `{id}` is already {}; only running workflows can be revoked",
            view.status
        )));
    }
    match state.ctx.engine.revoke(&id, "revoked by an operator") {
        RevokeOutcome::Revoked => {
            tracing::info!(workflow_id = %id, user = ?caller.user, "workflow revoked through the API");
            Ok(Json(json!({"id": id, "status": "revoked"})).into_response())
        }
        RevokeOutcome::Finished | RevokeOutcome::Unknown => Err(ApiError::conflict(format!(
            "workflow `{id}` finished before it could be revoked"
        ))),
    }
}

async fn revoke(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> ApiResult {
    match state.ctx.engine.revoke(&id, "revoked by an operator") {
        RevokeOutcome::Revoked => {
            tracing::info!(task_id = %id, user = ?caller.user, "task revoked through the API");
            Ok(Json(json!({"id": id, "status": "revoked"})).into_response())
        }
        RevokeOutcome::Finished | RevokeOutcome::Unknown => {
            let known = match &state.ctx.history {
                Some(h) => h.read(&id).await.ok().flatten(),
                None => None,
            };
            Err(match known {
                Some(r) => ApiError::conflict(format!(
                    "task `{id}` is already {}; only unfinished tasks can be revoked",
                    r.summary.status.as_str()
                )),
                None => ApiError::not_found(format!("no unfinished task `{id}`")),
            })
        }
    }
}

async fn retry(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> ApiResult {
    let record = history_record(&state, &id).await?;
    let status = record.summary.status;
    let unfinished = state.ctx.engine.is_unfinished(&id);
    let retryable = matches!(
        status,
        TaskState::Failure | TaskState::Expired | TaskState::Revoked
    );
    if unfinished || !retryable {
        return Err(ApiError::conflict(format!(
            "task `{id}` is {}; only failed, expired or revoked tasks can be retried",
            if unfinished {
                "unfinished"
            } else {
                status.as_str()
            }
        )));
    }
    state.ctx.engine.resubmit(record.to_stored_task())?;
    tracing::info!(task_id = %id, user = ?caller.user, "task retried through the API");
    Ok(Json(json!({"id": id, "status": "queued"})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_every_route_and_nothing_else() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .filter(|m| *m != "parameters")
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn times_parse_as_ms_or_rfc3339() {
        assert_eq!(parse_time("since", "1000").unwrap(), 1_000_000);
        assert_eq!(
            parse_time("since", "1970-01-01T00:00:01Z").unwrap(),
            1_000_000
        );
        assert_eq!(
            parse_time("since", "1970-01-01T01:00:01+01:00").unwrap(),
            1_000_000
        );
        assert_eq!(parse_time("since", "0361-01-09T19:01:08-01:24").unwrap(), 0);
        assert!(parse_time("since", "2026-01-01T00:00:00+0x:00").is_err());
        assert!(parse_time("since", "1969-13-01T00:00:00Z").is_err());
        assert!(parse_time("since", "yesterday").is_err());
        assert!(parse_time("since", "99999999999999999999").is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(parse_limit(None, 50).unwrap(), 50);
        assert_eq!(parse_limit(Some("1000"), 50).unwrap(), 1000);
        assert!(parse_limit(Some("1001"), 50).is_err());
        assert!(parse_limit(Some("0"), 50).is_err());
        assert!(parse_limit(Some("x"), 50).is_err());
    }
}

/// Property tests of the history request parsers a client's query string
/// reaches: times, page sizes, cursors and statuses. Whatever arrives gets
/// an answer without a panic; what is well formed reads back as meant.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::{parse_limit, parse_time};
    use crate::history::{TaskState, hex_string, unhex};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_query_value_gets_an_answer(s in ".{0,40}") {
            let _ = parse_time("since", &s);
            let _ = parse_limit(Some(&s), 50);
            let _ = unhex(&s);
            let _ = TaskState::parse(&s);
        }

        #[test]
        fn milliseconds_and_rfc3339_times_read_back(ms in 0u64..4_102_444_800_000) {
            prop_assert_eq!(parse_time("since", &ms.to_string()).ok(), Some(ms * 1000));
            let t = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string();
            prop_assert_eq!(parse_time("until", &t).ok(), Some(ms * 1000), "{}", t);
        }

        #[test]
        fn a_cursor_the_api_gave_reads_back(key in prop::collection::vec(any::<u8>(), 8..40)) {
            prop_assert_eq!(unhex(&hex_string(&key)), Some(key));
        }

        #[test]
        fn page_sizes_outside_1_to_max_are_refused(n in any::<u64>()) {
            let ok = parse_limit(Some(&n.to_string()), 50).is_ok();
            prop_assert_eq!(ok, (1..=super::MAX_PAGE as u64).contains(&n));
        }
    }
}
