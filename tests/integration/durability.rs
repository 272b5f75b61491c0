//! Durability with the real binary: `kill -9` of the broker loses no task it
//! acknowledged, and queued tasks are delivered after the restart.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};
use serde_json::json;

use crate::support::*;

/// The swarmq binary, started on ephemeral ports.
pub(crate) struct BrokerProcess {
    child: Child,
    pub(crate) mqtt: SocketAddr,
}

impl BrokerProcess {
    pub(crate) fn start(data_dir: &Path) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swarmq"))
            .args([
                "serve",
                "--mqtt-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("SWARMQ_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn swarmq");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("mqtt="))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let mqtt = rx.recv_timeout(WAIT).expect("broker logs its MQTT address");
        BrokerProcess { child, mqtt }
    }

    pub(crate) fn kill_9(&mut self) {
        // Child::kill sends SIGKILL on Unix: no chance to flush anything.
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_task_and_restart_delivers_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());

    // Submit with QoS 1, one at a time, recording each task whose PUBACK came.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut producer = V5Peer::connect(broker.mqtt, "producer").await;
    let (a, s) = (acked.clone(), stop.clone());
    let submitting = tokio::spawn(async move {
        for i in 0..100_000 {
            if s.load(Ordering::SeqCst) {
                break;
            }
            let id = format!("k-{i}");
            let body = json!({"id": id, "task": "job", "args": [i]}).to_string();
            producer
                .client
                .publish_with_properties(
                    "tasks/durable",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    body,
                    PublishProperties::default(),
                )
                .await
                .ok();
            let got = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match producer.rx.recv().await {
                        Some(rumqttc::v5::mqttbytes::v5::Packet::PubAck(ack)) => {
                            return Some(ack.reason);
                        }
                        Some(_) => {}
                        None => return None,
                    }
                }
            })
            .await;
            match got {
                Ok(Some(PubAckReason::Success)) => a.lock().unwrap().push(id),
                _ => break,
            }
        }
    });
    // Kill mid-stream, at whatever point the producer has reached.
    eventually("some tasks acknowledged", || async {
        acked.lock().unwrap().len() >= 300
    })
    .await;
    broker.kill_9();
    stop.store(true, Ordering::SeqCst);
    within("producer notices", submitting).await.unwrap();
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    // Restart on the same data directory; a worker drains the queue.
    let broker = BrokerProcess::start(dir.path());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    let (_w, _) = spawn_worker(
        &format!("mqtt://{}", broker.mqtt),
        "drain",
        "durable",
        16,
        "job",
        move |t| {
            let seen = s2.clone();
            async move {
                seen.lock().unwrap().push(t.id.clone());
                Ok(json!(null))
            }
        },
    );
    let want: HashSet<String> = acked.iter().cloned().collect();
    eventually(
        "every acknowledged task delivered after restart",
        || async {
            let got: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
            want.is_subset(&got)
        },
    )
    .await;
    // At most the one task in flight at the kill comes on top of the acked ones.
    let seen = seen.lock().unwrap().clone();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a task was delivered twice");
    assert!(
        seen.len() <= acked.len() + 1,
        "{} delivered for {} acked",
        seen.len(),
        acked.len()
    );
}

#[tokio::test]
async fn queued_tasks_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path());
    let mut producer = V5Peer::connect(broker.mqtt, "p2").await;
    for i in 0..50 {
        let code = producer
            .publish_acked(
                "tasks/restart",
                json!({"args": [i]}).to_string(),
                PublishProperties::default(),
            )
            .await;
        assert_eq!(code, PubAckReason::Success);
    }
    drop(producer);
    // SIGTERM, then wait for a clean exit.
    let pid = broker.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = within("graceful exit", async {
        loop {
            if let Some(s) = broker.child.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status:?}");
    let broker = BrokerProcess::start(dir.path());
    let client = swarmq_worker::Client::connect(&format!("mqtt://{}", broker.mqtt))
        .await
        .unwrap();
    let done = Arc::new(Mutex::new(HashSet::new()));
    let d2 = done.clone();
    let (_w, _) = spawn_worker(
        &format!("mqtt://{}", broker.mqtt),
        "after",
        "restart",
        4,
        "restart",
        move |t| {
            let done = d2.clone();
            async move {
                done.lock().unwrap().insert(t.arg::<i64>(0)?);
                Ok(json!(null))
            }
        },
    );
    eventually("50 tasks run after restart", || async {
        done.lock().unwrap().len() == 50
    })
    .await;
    drop(client);
}
