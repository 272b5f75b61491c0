//! The HTTP endpoint: /healthz and Prometheus /metrics.

use serde_json::json;
use swarmq_worker::Client;
use swarmq_worker::wire::TaskRequest;

use crate::support::*;

#[tokio::test]
async fn healthz_answers_ok_while_serving() {
    let broker = TestBroker::start().await;
    assert_eq!(broker.http_get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(broker.http_get("/nope").await.0, 404);
}

#[tokio::test]
async fn metrics_carry_tasks_queues_workers_connections_and_latency() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(&broker.url(), "metrics-w", "m", 2, "m", |_| async {
        Ok(json!(1))
    });
    wait_consumers(&broker, "m", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    for _ in 0..5 {
        let r = client
            .call("m", TaskRequest::default(), WAIT)
            .await
            .unwrap();
        assert_eq!(r.status.as_str(), "success");
    }
    let (status, body) = broker.http_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "swarmq_tasks_submitted_total 5\n",
        "swarmq_tasks_finished_total{status=\"success\"} 5\n",
        "swarmq_queue_waiting{queue=\"m\"} 0\n",
        "swarmq_queue_in_flight{queue=\"m\"} 0\n",
        "swarmq_queue_consumers{queue=\"m\"} 1\n",
        "swarmq_workers_online 1\n",
        "swarmq_broker_connections 2\n",
        "swarmq_task_latency_seconds_count 5\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
}

/// Every metric the shipped Grafana dashboard queries is one /metrics serves.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_served_metrics() {
    let broker = TestBroker::start().await;
    let (_w, _) = spawn_worker(&broker.url(), "grafana-w", "g", 1, "g", |_| async {
        Ok(json!(1))
    });
    wait_consumers(&broker, "g", 1).await;
    let client = Client::connect(&broker.url()).await.unwrap();
    client
        .call("g", TaskRequest::default(), WAIT)
        .await
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/grafana-dashboard.json")).unwrap();
    let mut queried: Vec<String> = Vec::new();
    for panel in doc["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("swarmq_") {
                    queried.push(word.to_string());
                }
            }
        }
    }
    let all_served = || async {
        let (_, body) = broker.http_get("/metrics").await;
        let served: std::collections::HashSet<&str> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        queried.iter().all(|word| served.contains(word.as_str()))
    };
    // Per-queue and per-worker series appear once the recorder has the
    // task, each when its own update lands: wait for all of them.
    eventually("every series the dashboard queries on /metrics", all_served).await;
    assert!(queried.len() >= 15);
}
