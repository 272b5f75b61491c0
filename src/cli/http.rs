//! The HTTP API as a client command sees it: JSON in and out, the caller's
//! credentials as a bearer token, and each failure with its exit code.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Failure, FailureKind, Target};

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the API at `target.api`, logged in when credentials were given.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// Connects as `target` says. A machine token (`sqt_…`) is used as the
    /// bearer token directly; a password is exchanged for a session token
    /// (POST /api/v1/login). With access open, no login is needed.
    pub(crate) async fn connect(target: &Target) -> Result<Api, Failure> {
        let base = target.api.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::usage(format!(
                "invalid API address `{}`: expected http://HOST:PORT",
                target.api
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Failure::usage(e.to_string()))?;
        let mut api = Api {
            http,
            base,
            token: None,
        };
        let password = target.password()?;
        match (&target.username, password) {
            (_, Some(p)) if p.starts_with("sqt_") => api.token = Some(p),
            (Some(user), Some(p)) => {
                let login = api
                    .send(
                        Method::POST,
                        "/login",
                        Some(json!({"username": user, "password": p})),
                        None,
                    )
                    .await;
                match login {
                    Ok(v) => api.token = v["token"].as_str().map(String::from),
                    // 400: access is open, there is nothing to log in to.
                    Err(f) if f.kind == FailureKind::Usage => {}
                    Err(f) => return Err(f),
                }
            }
            _ => {}
        }
        Ok(api)
    }

    /// GET `path` (under /api/v1).
    pub(crate) async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(Method::GET, path, None, None).await
    }

    /// POST to `path` (under /api/v1), with no body.
    pub(crate) async fn post(&self, path: &str) -> Result<Value, Failure> {
        self.send(Method::POST, path, None, None).await
    }

    /// GET `path` as a stream of server-sent events; `on_event` gets each
    /// event's name and data, until the stream ends or it returns false.
    pub(crate) async fn follow(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), Failure> {
        let (url, request) = self.request(Method::GET, path);
        let mut response = request.send().await.map_err(|e| unreachable(&url, &e))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            return Err(api_failure(status, &body));
        }
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(e) => {
                    return Err(Failure::new(
                        FailureKind::Unreachable,
                        format!("the stream from {url} broke: {e}"),
                    ));
                }
            };
            buffer.extend_from_slice(&chunk);
            // Events end with a blank line.
            while let Some(end) = find_blank_line(&buffer) {
                let block = String::from_utf8_lossy(&buffer[..end]).into_owned();
                buffer.drain(..end + 2);
                let mut name = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if (!data.is_empty() || name != "message") && !on_event(name, &data) {
                    return Ok(());
                }
            }
        }
    }

    /// A request to `path` (under /api/v1) with the caller's token, and its URL.
    fn request(&self, method: Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        (url, request)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, Failure> {
        let (url, request) = self.request(method, path);
        let mut request = request.timeout(timeout.unwrap_or(REQUEST_TIMEOUT));
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.map_err(|e| unreachable(&url, &e))?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(api_failure(status, &body))
        }
    }
}

fn find_blank_line(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|w| w == b"\n\n")
}

fn unreachable(url: &str, e: &reqwest::Error) -> Failure {
    let why = if e.is_timeout() {
        "no answer in time".to_string()
    } else if e.is_connect() {
        "connection refused or unreachable".to_string()
    } else {
        e.to_string()
    };
    Failure::new(
        FailureKind::Unreachable,
        format!("cannot reach the API at {url}: {why}"),
    )
}

/// An API error answer, with its message and exit code.
fn api_failure(status: StatusCode, body: &Value) -> Failure {
    let message = body["error"]["message"]
        .as_str()
        .map_or_else(|| status.to_string(), String::from);
    let kind = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FailureKind::Denied,
        StatusCode::NOT_FOUND => FailureKind::NotFound,
        StatusCode::BAD_REQUEST => FailureKind::Usage,
        _ => FailureKind::NotSucceeded,
    };
    let message = match status {
        StatusCode::UNAUTHORIZED => {
            format!("{message} (give --username and --password, or a token)")
        }
        _ => message,
    };
    Failure::new(kind, message)
}
