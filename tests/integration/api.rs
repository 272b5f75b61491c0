//! The JSON API under /api/v1, the task history behind it, the MQTT result
//! fetch, and dashboard figures on /metrics: every endpoint, its bad input
//! and its auth failures, against the real broker with real workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use swarmq_worker::wire::TaskRequest;
use swarmq_worker::{Client, TaskError};

use crate::support::*;

/// A reqwest client for one broker, optionally with a bearer token.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    cookie: Option<String>,
}

impl Api {
    pub(crate) fn new(broker: &TestBroker) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: broker.http_url("/api/v1"),
            token: None,
            cookie: None,
        }
    }

    pub(crate) fn with_token(broker: &TestBroker, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..Api::new(broker)
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        r
    }

    async fn send(r: reqwest::RequestBuilder) -> (u16, Value) {
        let res = within("HTTP response", r.send()).await.expect("HTTP");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        Api::send(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn post(&self, path: &str) -> (u16, Value) {
        Api::send(self.request(reqwest::Method::POST, path)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> (u16, Value) {
        Api::send(self.request(reqwest::Method::DELETE, path)).await
    }

    async fn login(&self, user: &str, password: &str) -> (u16, Value, Option<String>) {
        let res = within(
            "login",
            self.http
                .post(format!("{}/login", self.base))
                .json(&json!({"username": user, "password": password}))
                .send(),
        )
        .await
        .expect("HTTP");
        let status = res.status().as_u16();
        let cookie = res
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        (status, res.json().await.unwrap_or(Value::Null), cookie)
    }

    /// GETs until `pred` holds on the body (the history lags the dispatcher
    /// by up to one recorder interval).
    pub(crate) async fn get_until(&self, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, v) = self.get(path).await;
            if status == 200 && pred(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on {path}; last answer {status} {v}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

pub(crate) fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn request(id: &str, args: Value) -> TaskRequest {
    TaskRequest {
        task: Some("echo".into()),
        id: Some(id.into()),
        args: args.as_array().cloned().unwrap_or_default(),
        ..TaskRequest::default()
    }
}

#[tokio::test]
async fn api_shows_overview_queues_workers_tasks_and_series() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(
        &broker.url(),
        "api-w1",
        "echo",
        4,
        "echo",
        |ctx| async move { Ok(json!(ctx.args)) },
    );
    wait_consumers(&broker, "echo", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    for i in 0..12 {
        let r = client
            .call("echo", request(&format!("t{i:02}"), json!([i])), WAIT)
            .await
            .unwrap();
        assert_eq!(r.status.as_str(), "success");
    }
    let api = Api::new(&broker);

    let me = api.get("/me").await;
    assert_eq!(
        me,
        (200, json!({"user": null, "role": "admin", "open": true}))
    );

    let ov = api
        .get_until("/overview", |v| v["history"]["retained"] == 12)
        .await;
    assert_eq!(ov["totals"]["submitted"], 12);
    assert_eq!(ov["totals"]["succeeded"], 12);
    assert_eq!(ov["workers_online"], 1);
    assert_eq!(ov["open"], true);

    let (status, q) = api.get("/queues").await;
    assert_eq!(status, 200);
    let echo = &q["queues"][0];
    assert_eq!(echo["name"], "echo");
    assert_eq!(
        echo["consumers"],
        json!([{"worker": "api-w1", "capacity": 4, "in_flight": 0}])
    );
    assert_eq!(echo["warning"], Value::Null);
    assert_eq!(echo["limits"]["max_attempts"], 5);

    let (status, one) = api.get("/queues/echo?limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(one["next_waiting"], json!([]));

    let workers = api
        .get_until("/workers", |v| v["workers"][0]["completed"] == 12)
        .await;
    let w = &workers["workers"][0];
    assert_eq!(w["id"], "api-w1");
    assert_eq!(w["online"], true);
    assert_eq!(w["queues"], json!(["echo"]));
    assert_eq!(w["capacity"], 4);
    assert_eq!(w["failed"], 0);
    assert!(w["connected_since_us"].as_u64().unwrap() > 0);

    // Every task, newest first, through pages of 5 that chain by cursor.
    let mut ids = Vec::new();
    let mut path = "/tasks?queue=echo&limit=5".to_string();
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["tasks"].as_array().unwrap().len() <= 5);
        ids.extend(
            page["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/tasks?queue=echo&limit=5&cursor={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..12).rev().map(|i| format!("t{i:02}")).collect();
    assert_eq!(ids, expected);

    // Filters: by id, status, worker, task name, time window.
    let (_, by_id) = api.get("/tasks?id=t03").await;
    assert_eq!(by_id["tasks"].as_array().unwrap().len(), 1);
    let (_, failures) = api.get("/tasks?status=failure").await;
    assert_eq!(failures["tasks"], json!([]));
    let (_, by_worker) = api.get("/tasks?worker=api-w1&task=echo&limit=100").await;
    assert_eq!(by_worker["tasks"].as_array().unwrap().len(), 12);
    let (_, other_worker) = api.get("/tasks?worker=nobody").await;
    assert_eq!(other_worker["tasks"], json!([]));
    let (_, t5) = api.get("/tasks/t05").await;
    // To the microsecond, in RFC 3339: tasks a round trip apart can share a millisecond.
    let t5_at = std::time::UNIX_EPOCH
        + std::time::Duration::from_micros(t5["submitted_at_us"].as_u64().unwrap());
    let since = humantime::format_rfc3339_micros(t5_at).to_string();
    let (_, window) = api
        .get(&format!(
            "/tasks?since={since}&until=2100-01-01T00:00:00Z&limit=100"
        ))
        .await;
    let in_window = window["tasks"].as_array().unwrap();
    assert!(in_window.iter().any(|t| t["id"] == "t05"));
    assert!(!in_window.iter().any(|t| t["id"] == "t04"));

    // One task in full.
    assert_eq!(t5["status"], "success");
    assert_eq!(t5["args"], json!([5]));
    assert_eq!(t5["result"], json!([5]));
    assert_eq!(t5["worker"], "api-w1");
    assert_eq!(t5["attempts"], 1);
    assert!(
        t5["reply_topic"]
            .as_str()
            .unwrap()
            .starts_with("swarmq/replies/")
    );
    assert!(t5["run_ms"].as_f64().is_some());
    assert!(t5["queued_ms"].as_f64().is_some());

    let series = api
        .get_until("/series?minutes=5", |v| {
            v["points"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["completed_per_s"].as_f64() > Some(0.0)))
        })
        .await;
    assert_eq!(series["interval_s"], 1);

    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test]
async fn events_stream_pushes_ticks() {
    let broker = TestBroker::start().await;
    let res = reqwest::get(broker.http_url("/api/v1/events"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut res = res;
    let mut text = String::new();
    let mut ticks = 0;
    while ticks < 2 {
        let chunk = within("an event", res.chunk()).await.unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        ticks = text.matches("event: tick").count();
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let v: Value = serde_json::from_str(data).unwrap();
    assert!(v["totals"]["submitted"].is_u64());
}

#[tokio::test]
async fn bad_input_gets_400_404_with_a_json_error() {
    let broker = TestBroker::start().await;
    let api = Api::new(&broker);
    for path in [
        "/tasks?status=bogus",
        "/tasks?limit=0",
        "/tasks?limit=1001",
        "/tasks?limit=ten",
        "/tasks?since=yesterday",
        "/tasks?since=2000&until=1000",
        "/tasks?cursor=zz",
        "/tasks?until=",
        "/tasks?status=",
        "/tasks?cursor=0011",
        "/tasks?colour=red",
        "/series?minutes=0",
        "/series?minutes=61",
        "/queues/q?limit=0",
    ] {
        let (status, v) = api.get(path).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(error_code(&v), "bad_request", "{path}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    for (method, path) in [
        ("GET", "/tasks/no-such-task"),
        ("GET", "/queues/no-such-queue"),
        ("POST", "/queues/no-such-queue/purge"),
        ("POST", "/tasks/no-such-task/revoke"),
        ("POST", "/tasks/no-such-task/retry"),
        ("GET", "/no-such-route"),
    ] {
        let (status, v) = match method {
            "GET" => api.get(path).await,
            _ => api.post(path).await,
        };
        assert_eq!(status, 404, "{path}: {v}");
        assert_eq!(error_code(&v), "not_found", "{path}: {v}");
    }
    // Logging in when access is open, and malformed login bodies.
    let (status, v, _) = api.login("a", "b").await;
    assert_eq!((status, error_code(&v)), (400, "bad_request"));
    let res = reqwest::Client::new()
        .post(broker.http_url("/api/v1/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn history_disabled_gives_503_and_live_pages_still_work() {
    let broker = TestBroker::start_with(&[("history.enabled", "false")]).await;
    let api = Api::new(&broker);
    let (status, v) = api.get("/tasks").await;
    assert_eq!((status, error_code(&v)), (503, "history_disabled"));
    let (status, v) = api.get("/tasks/x").await;
    assert_eq!((status, error_code(&v)), (503, "history_disabled"));
    assert_eq!(api.get("/overview").await.0, 200);
    assert_eq!(api.get("/workers").await.0, 200);
}

#[tokio::test]
async fn admin_revokes_retries_and_purges_and_requesters_hear_of_it() {
    let broker = TestBroker::start().await;
    let api = Api::new(&broker);
    let mut requester = V5Peer::connect(broker.mqtt, "api-requester").await;
    requester.subscribe("replies/ops").await;
    for id in ["r1", "r2", "r3"] {
        let reason = requester
            .publish_acked(
                "tasks/idle",
                json!({"id": id, "args": [id]}).to_string(),
                reply_props("replies/ops", id),
            )
            .await;
        assert_eq!(reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success);
    }
    // No worker: the queue warns.
    let (_, q) = api.get("/queues/idle").await;
    assert_eq!(q["waiting"], 3);
    assert!(q["warning"].as_str().unwrap().contains("no worker"));
    let ids: Vec<&str> = q["next_waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    let (_, ov) = api.get("/overview").await;
    assert_eq!(ov["queues_without_consumer"], json!(["idle"]));

    // Revoke r2: its requester gets `revoked`, the history says so.
    let (status, v) = api.post("/tasks/r2/revoke").await;
    assert_eq!((status, v), (200, json!({"id": "r2", "status": "revoked"})));
    let reply = requester.next_publish().await;
    assert_eq!(json(&reply)["status"], "revoked");
    assert_eq!(json(&reply)["id"], "r2");
    api.get_until("/tasks/r2", |v| v["status"] == "revoked")
        .await;
    let (status, v) = api.post("/tasks/r2/revoke").await;
    assert_eq!((status, error_code(&v)), (409, "conflict"));
    assert!(v["error"]["message"].as_str().unwrap().contains("revoked"));

    // Retry r2: queued again under its id.
    let (status, v) = api.post("/tasks/r2/retry").await;
    assert_eq!((status, v), (200, json!({"id": "r2", "status": "queued"})));
    assert_eq!(api.get("/queues/idle").await.1["waiting"], 3);
    let (status, v) = api.post("/tasks/r2/retry").await;
    assert_eq!((status, error_code(&v)), (409, "conflict"), "{v}");

    // Purge: all three revoked, each requester told.
    let (status, v) = api.post("/queues/idle/purge").await;
    assert_eq!((status, v), (200, json!({"queue": "idle", "purged": 3})));
    let mut told = Vec::new();
    for _ in 0..3 {
        let r = json(&requester.next_publish().await);
        assert_eq!(r["status"], "revoked");
        told.push(r["id"].as_str().unwrap().to_string());
    }
    told.sort();
    assert_eq!(told, ["r1", "r2", "r3"]);
    assert_eq!(api.get("/queues/idle").await.1["waiting"], 0);

    // A running task is revoked too: its requester hears at once, the
    // worker's later answer changes nothing. A successful task cannot be
    // retried.
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let (_w, _) = spawn_worker(&broker.url(), "api-slow", "slow", 1, "slow", move |t| {
        let r = r.clone();
        async move {
            while !r.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Ok::<_, TaskError>(json!(t.id))
        }
    });
    wait_consumers(&broker, "slow", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    let submit = |id: &str| {
        client.submit(
            "slow",
            TaskRequest {
                id: Some(id.into()),
                task: Some("slow".into()),
                ..TaskRequest::default()
            },
        )
    };
    let pending = submit("busy").await.unwrap();
    api.get_until("/tasks/busy", |v| v["status"] == "running")
        .await;
    let (status, v) = api.post("/tasks/busy/revoke").await;
    assert_eq!(
        (status, v),
        (200, json!({"id": "busy", "status": "revoked"}))
    );
    let result = within("busy result", pending).await.unwrap();
    assert_eq!(result.status, swarmq_worker::wire::Status::Revoked);
    let done = submit("done").await.unwrap();
    release.store(true, Ordering::Relaxed);
    assert_eq!(
        within("done result", done).await.unwrap().result,
        Some(json!("done"))
    );
    api.get_until("/tasks/done", |v| v["status"] == "success")
        .await;
    assert_eq!(api.get("/tasks/busy").await.1["status"], "revoked");
    let (status, v) = api.post("/tasks/done/retry").await;
    assert_eq!((status, error_code(&v)), (409, "conflict"));
}

const ADMIN_PASSWORD: &str = "correct horse";
const VIEWER_PASSWORD: &str = "battery staple";

fn users_toml() -> String {
    let admin = swarmq::http::hash_password(ADMIN_PASSWORD).unwrap();
    let viewer = swarmq::http::hash_password(VIEWER_PASSWORD).unwrap();
    format!(
        "[auth]\nsession_ttl_secs = 3600\n\
         [[auth.users]]\nname = \"ada\"\nrole = \"admin\"\npassword_hash = \"{admin}\"\n\
         [[auth.users]]\nname = \"vic\"\nrole = \"viewer\"\npassword_hash = \"{viewer}\"\n"
    )
}

#[tokio::test]
async fn logins_roles_and_sessions_guard_the_api() {
    let broker = TestBroker::start_with_config(&users_toml(), &[]).await;
    let anonymous = Api::new(&broker);

    // Without a session: 401 everywhere but the document and login.
    for path in [
        "/me",
        "/overview",
        "/series",
        "/events",
        "/queues",
        "/workers",
        "/tasks",
        "/tasks/x",
    ] {
        let (status, v) = anonymous.get(path).await;
        assert_eq!((status, error_code(&v)), (401, "unauthorized"), "{path}");
    }
    for path in ["/queues/q/purge", "/tasks/x/revoke", "/tasks/x/retry"] {
        assert_eq!(anonymous.post(path).await.0, 401, "{path}");
    }
    assert_eq!(anonymous.get("/openapi.json").await.0, 200);
    // Probes and scrapers stay open.
    assert_eq!(broker.http_get("/healthz").await.0, 200);
    assert_eq!(broker.http_get("/metrics").await.0, 200);

    // Wrong credentials.
    let (status, v, cookie) = anonymous.login("ada", "wrong").await;
    assert_eq!((status, error_code(&v)), (401, "unauthorized"));
    assert!(cookie.is_none());
    assert_eq!(anonymous.login("nobody", ADMIN_PASSWORD).await.0, 401);
    assert_eq!(Api::with_token(&broker, "forged").get("/me").await.0, 401);

    // A viewer reads, and is refused every action.
    let (status, v, _) = anonymous.login("vic", VIEWER_PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!(v["role"], "viewer");
    let viewer = Api::with_token(&broker, v["token"].as_str().unwrap());
    assert_eq!(
        viewer.get("/me").await,
        (200, json!({"user": "vic", "role": "viewer", "open": false}))
    );
    assert_eq!(viewer.get("/overview").await.0, 200);
    assert_eq!(viewer.get("/tasks").await.0, 200);
    for path in ["/queues/q/purge", "/tasks/x/revoke", "/tasks/x/retry"] {
        let (status, v) = viewer.post(path).await;
        assert_eq!((status, error_code(&v)), (403, "forbidden"), "{path}");
    }

    // An admin by cookie: the Set-Cookie of the login works as a session.
    let (status, v, cookie) = anonymous.login("ada", ADMIN_PASSWORD).await;
    assert_eq!((status, v["role"].as_str()), (200, Some("admin")));
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Strict"));
    let admin = Api {
        cookie: Some(cookie.split(';').next().unwrap().to_string()),
        ..Api::new(&broker)
    };
    assert_eq!(admin.get("/me").await.1["user"], "ada");
    let (status, v) = admin.post("/queues/q/purge").await;
    assert_eq!(
        (status, error_code(&v)),
        (404, "not_found"),
        "admin passes auth"
    );

    // Logout ends the session.
    assert_eq!(admin.post("/logout").await.0, 204);
    assert_eq!(admin.get("/me").await.0, 401);
    assert_eq!(viewer.get("/me").await.0, 200);
}

#[tokio::test]
async fn a_bad_password_hash_stops_the_broker_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[auth.users]]\nname = \"x\"\nrole = \"admin\"\npassword_hash = \"plain\"\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmq"))
        .args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.users[0].password_hash"), "{err}");
}

#[tokio::test]
async fn hash_password_prints_a_hash_the_broker_accepts() {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmq"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"s3cret\n").await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let toml =
        format!("[[auth.users]]\nname = \"op\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n");
    let broker = TestBroker::start_with_config(&toml, &[]).await;
    let (status, _, _) = Api::new(&broker).login("op", "s3cret").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn history_workers_and_series_survive_a_restart() {
    let broker = TestBroker::start().await;
    let (w, handle) = spawn_worker(
        &broker.url(),
        "keeper",
        "keep",
        2,
        "echo",
        |ctx| async move { Ok(json!({"echo": ctx.args})) },
    );
    wait_consumers(&broker, "keep", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    for i in 0..5 {
        client
            .call("keep", request(&format!("k{i}"), json!([i])), WAIT)
            .await
            .unwrap();
    }
    let api = Api::new(&broker);
    api.get_until("/workers", |v| v["workers"][0]["completed"] == 5)
        .await;
    api.get_until("/series", |v| !v["points"].as_array().unwrap().is_empty())
        .await;
    w.cancel();
    within("worker stops", handle).await.unwrap();
    drop((client, api));

    let broker = broker.restart().await;
    let api = Api::new(&broker);
    let (status, k3) = api.get("/tasks/k3").await;
    assert_eq!(status, 200);
    assert_eq!(k3["status"], "success");
    assert_eq!(k3["result"], json!({"echo": [3]}));
    let (_, page) = api.get("/tasks?queue=keep").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 5);
    assert_eq!(page["retained"], 5);
    let (_, workers) = api.get("/workers").await;
    let keeper = &workers["workers"][0];
    assert_eq!(keeper["id"], "keeper");
    assert_eq!(keeper["online"], false);
    assert_eq!(keeper["completed"], 5);
    let (_, series) = api.get("/series").await;
    assert!(!series["points"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn retention_keeps_the_newest_tasks() {
    let broker = TestBroker::start_with(&[("history.max_tasks", "10")]).await;
    let (_w, _) = spawn_worker(&broker.url(), "ret-w", "ret", 8, "echo", |_| async {
        Ok(json!(null))
    });
    wait_consumers(&broker, "ret", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    for i in 0..30 {
        client
            .call("ret", request(&format!("n{i:02}"), json!([])), WAIT)
            .await
            .unwrap();
    }
    let api = Api::new(&broker);
    api.get_until("/tasks/n29", |v| v["status"] == "success")
        .await;
    api.get_until("/overview", |v| v["history"]["retained"] == 10)
        .await;
    assert_eq!(api.get("/tasks/n00").await.0, 404);
    assert_eq!(api.get("/tasks/n19").await.0, 404);
    assert_eq!(api.get("/tasks/n20").await.0, 200);
}

#[tokio::test]
async fn a_result_can_be_fetched_later_over_mqtt() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(&broker.url(), "fetch-w", "f", 1, "echo", |ctx| async move {
        Ok(json!(ctx.args))
    });
    wait_consumers(&broker, "f", 1).await;
    // A fire-and-forget task: no reply topic at all.
    let mut device = V4Peer::connect(broker.mqtt, "fetch-device").await;
    device
        .publish(
            "tasks/f",
            json!({"id": "later-1", "task": "echo", "args": ["x"]}).to_string(),
        )
        .await;
    let api = Api::new(&broker);
    api.get_until("/tasks/later-1", |v| v["status"] == "success")
        .await;

    // MQTT 5: Response Topic + Correlation Data.
    let mut v5 = V5Peer::connect(broker.mqtt, "fetch-v5").await;
    v5.subscribe("me/history").await;
    v5.publish_acked(
        "swarmq/history/get",
        json!({"id": "later-1"}).to_string(),
        reply_props("me/history", "c-9"),
    )
    .await;
    let answer = v5.next_publish().await;
    assert_eq!(
        answer
            .properties
            .as_ref()
            .unwrap()
            .correlation_data
            .as_deref(),
        Some(&b"c-9"[..])
    );
    let a = json(&answer);
    assert_eq!(a["status"], "success");
    assert_eq!(a["result"], json!(["x"]));
    assert_eq!(a["worker"], "fetch-w");

    // MQTT 3.1.1: reply_to + correlation_id; unknown ids and bad requests.
    device.subscribe("dev/history").await;
    device
        .publish(
            "swarmq/history/get",
            json!({"id": "later-1", "reply_to": "dev/history", "correlation_id": "q1"}).to_string(),
        )
        .await;
    let a: Value = serde_json::from_slice(&device.next_publish().await.payload).unwrap();
    assert_eq!(
        (a["status"].as_str(), a["correlation_id"].as_str()),
        (Some("success"), Some("q1"))
    );
    device
        .publish(
            "swarmq/history/get",
            json!({"id": "never", "reply_to": "dev/history"}).to_string(),
        )
        .await;
    let a: Value = serde_json::from_slice(&device.next_publish().await.payload).unwrap();
    assert_eq!(a["status"], "unknown");
    assert!(a["error"].as_str().unwrap().contains("never"));
    device
        .publish(
            "swarmq/history/get",
            json!({"id": 5, "reply_to": "dev/history"}).to_string(),
        )
        .await;
    let a: Value = serde_json::from_slice(&device.next_publish().await.payload).unwrap();
    assert_eq!(a["status"], "invalid_request");
}

#[tokio::test]
async fn metrics_carry_the_dashboard_figures() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(&broker.url(), "prom-w", "p", 2, "echo", |ctx| async move {
        if ctx.args.first() == Some(&json!("fail")) {
            Err(TaskError::failed("asked to fail"))
        } else {
            Ok(json!(1))
        }
    });
    wait_consumers(&broker, "p", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    for i in 0..4 {
        client
            .call("p", request(&format!("p{i}"), json!([i])), WAIT)
            .await
            .unwrap();
    }
    client
        .call("p", request("pf", json!(["fail"])), WAIT)
        .await
        .unwrap();
    let expected = [
        "swarmq_queue_tasks_total{queue=\"p\",event=\"submitted\"} 5\n",
        "swarmq_queue_tasks_total{queue=\"p\",event=\"completed\"} 4\n",
        "swarmq_queue_tasks_total{queue=\"p\",event=\"failed\"} 1\n",
        "swarmq_worker_tasks_total{worker=\"prom-w\",status=\"success\"} 4\n",
        "swarmq_worker_tasks_total{worker=\"prom-w\",status=\"failure\"} 1\n",
        "swarmq_workers_known{state=\"online\"} 1\n",
        "swarmq_history_tasks 5\n",
        "swarmq_tasks_finished_total{status=\"revoked\"} 0\n",
    ];
    eventually("dashboard figures on /metrics", || async {
        let (_, body) = broker.http_get("/metrics").await;
        expected.iter().all(|l| body.contains(l))
    })
    .await;
}

#[tokio::test]
async fn a_refused_task_with_an_id_is_kept_with_its_reason_and_never_overwrites_a_real_one() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(&broker.url(), "rej-w", "rq", 1, "echo", |_| async {
        Ok(json!("ran"))
    });
    wait_consumers(&broker, "rq", 1).await;
    let device = V4Peer::connect(broker.mqtt, "rej-device").await;
    device
        .publish(
            "tasks/rq",
            json!({"id": "bad-1", "args": "not a list"}).to_string(),
        )
        .await;
    device
        .publish(
            "tasks/rq",
            json!({"id": "good-1", "task": "echo"}).to_string(),
        )
        .await;
    let api = Api::new(&broker);
    let bad = api
        .get_until("/tasks/bad-1", |v| v["status"] == "rejected")
        .await;
    assert!(bad["error"].as_str().unwrap().contains("args"), "{bad}");
    assert_eq!(bad["queue"], "rq");
    api.get_until("/tasks/good-1", |v| v["status"] == "success")
        .await;
    // The same id again, malformed: refused, and good-1's record stays.
    device
        .publish(
            "tasks/rq",
            json!({"id": "good-1", "kwargs": [1]}).to_string(),
        )
        .await;
    // Counted (so its event was sent), then nothing left for the recorder.
    eventually("the second refusal recorded", || async {
        let m = broker.http_get("/metrics").await.1;
        m.contains("swarmq_tasks_rejected_total{reason=\"invalid_payload\"} 2\n")
            && m.contains("swarmq_history_backlog 0\n")
    })
    .await;
    let (_, good) = api.get("/tasks/good-1").await;
    assert_eq!(good["status"], "success");
    assert_eq!(good["result"], "ran");
    let (_, rejected) = api.get("/tasks?status=rejected").await;
    let ids: Vec<&str> = rejected["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bad-1"]);
}
