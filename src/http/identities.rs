//! `/api/v1/identities` and `/api/v1/access/denials`: the identity registry
//! and the recent denials, for admins and the dashboard's Devices page.
//!
//! Changes go through the same [`IdentityFile`] as `swarmq identity`, then
//! the access layer rereads it at once, so the API's caller sees its change
//! take effect before the response (a revoked identity's connections are
//! closed within the broker's next look, a fraction of a second).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use super::api::{Admin, ApiError, ApiResult};
use super::auth::Caller;
use crate::access::registry::NewIdentity;
use crate::access::{Identity, IdentityFile, IdentityRole, Origin, RegistryError};
use crate::engine::now_us;

fn identity_json(i: &Identity, live: u32, last_seen_us: Option<u64>) -> Value {
    json!({
        "name": i.name,
        "role": i.role.as_str(),
        "queues": i.queues,
        "origin": match i.origin { Origin::Config => "config", Origin::Registry => "registry" },
        "status": if i.is_revoked() { "revoked" } else { "active" },
        "created_at_us": (i.created_at_us > 0).then_some(i.created_at_us),
        "revoked_at_us": i.revoked_at_us,
        "token": i.token_hash.is_some(),
        "password": i.password_hash.is_some(),
        "max_connections": i.max_connections,
        "publish_rate": i.publish_rate,
        "live_connections": live,
        "last_seen_us": last_seen_us,
    })
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Refused(m) if m.starts_with("no identity") => ApiError::not_found(m),
        RegistryError::Refused(m) if m.contains("exists") || m.contains("revoked") => {
            ApiError::conflict(m)
        }
        RegistryError::Refused(m) => ApiError::bad_request(m),
        other => ApiError::internal(other.to_string()),
    }
}

/// Runs `change` on the identities file off the async threads (argon2 for
/// a password, the file's fsync), then applies it at once.
async fn change_file<T: Send + 'static>(
    state: &HttpState,
    change: impl FnOnce(&IdentityFile) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    let file = state.ctx.access.file().clone();
    let out = tokio::task::spawn_blocking(move || change(&file))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(registry_error)?;
    if let Err(e) = state.ctx.access.reload_if_changed() {
        tracing::error!(error = %e, "cannot reread the identities after a change");
    }
    Ok(out)
}

fn refuse_declared(state: &HttpState, name: &str) -> Result<(), ApiError> {
    match state.ctx.access.identity(name) {
        Some(i) if i.origin == Origin::Config => Err(ApiError::conflict(format!(
            "identity `{name}` is declared in the configuration: change it there"
        ))),
        _ => Ok(()),
    }
}

pub(super) async fn list(_: Admin, State(state): State<HttpState>) -> Json<Value> {
    let access = &state.ctx.access;
    let list: Vec<Value> = access
        .directory()
        .all()
        .map(|i| {
            identity_json(
                i,
                access.live_connections(&i.name),
                access.last_seen_us(&i.name),
            )
        })
        .collect();
    Json(json!({
        "identities": list,
        "profile": if access.is_open() { "development" } else { "secured" },
        "anonymous_allowed": access.anonymous_allowed(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddBody {
    name: String,
    role: String,
    #[serde(default)]
    queues: Vec<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    max_connections: Option<u32>,
    #[serde(default)]
    publish_rate: Option<f64>,
}

pub(super) async fn add(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    body: Result<Json<AddBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let role = IdentityRole::parse(&body.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown role `{}`: device, worker, app or admin",
            body.role
        ))
    })?;
    refuse_declared(&state, &body.name)?;
    let new = NewIdentity {
        name: body.name.clone(),
        role,
        queues: body.queues,
        password: body.password,
        max_connections: body.max_connections,
        publish_rate: body.publish_rate,
    };
    let token = change_file(&state, move |file| file.add(new, now_us())).await?;
    tracing::info!(identity = %body.name, role = role.as_str(), user = ?caller.user, "identity added through the API");
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": body.name, "role": role.as_str(), "token": token})),
    )
        .into_response())
}

pub(super) async fn rotate(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult {
    refuse_declared(&state, &name)?;
    let n = name.clone();
    let token = change_file(&state, move |file| file.rotate(&n)).await?;
    tracing::info!(identity = %name, user = ?caller.user, "identity token rotated through the API");
    Ok(Json(json!({"name": name, "token": token})).into_response())
}

pub(super) async fn revoke(
    Admin(caller): Admin,
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> ApiResult {
    refuse_declared(&state, &name)?;
    let n = name.clone();
    change_file(&state, move |file| file.revoke(&n, now_us())).await?;
    tracing::info!(identity = %name, user = ?caller.user, "identity revoked through the API");
    Ok(Json(json!({"name": name, "status": "revoked"})).into_response())
}

pub(super) async fn denials(_: Caller, State(state): State<HttpState>) -> Json<Value> {
    let access = &state.ctx.access;
    let f = access.figures();
    Json(json!({
        "denials": access.recent_denials(),
        "denied_publish": f.denied_publish,
        "denied_subscribe": f.denied_subscribe,
        "denied_other": f.denied_other,
        "auth_failures": f.auth_failures,
        "profile": if access.is_open() { "development" } else { "secured" },
    }))
}
