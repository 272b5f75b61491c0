//! A network fuzzer: random and mutated MQTT 3.1.1 and 5.0 packets sent to
//! the live broker for a bounded time. After each batch of connections the
//! broker must still be alive and still run a task end to end, and no task
//! of the process may have panicked.
//!
//! `SWARMQ_FUZZ_SECS` sets the time (default 15 s, the short run in CI);
//! `SWARMQ_FUZZ_SEED` replays a run. The figures of a long run are in
//! docs/PROTOCOL.md ("Conformance and fuzzing").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestBroker, spawn_worker, wait_consumers, within};

/// xorshift64*: small, deterministic from its seed, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// MQTT's variable-length remaining length.
fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn connect(version: u8, client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.extend_from_slice(&[version, 0x02, 0, 30]);
    if version == 5 {
        body.extend_from_slice(&[3, 0x21, 0, 10]); // properties: Receive Maximum 10
    }
    string(client_id.as_bytes(), &mut body);
    packet(0x10, &body)
}

/// A well-formed packet of some kind, for the version, to mutate or send.
fn valid(rng: &mut Rng, version: u8) -> Vec<u8> {
    let props = |body: &mut Vec<u8>| {
        if version == 5 {
            body.push(0);
        }
    };
    let topics: [&[u8]; 8] = [
        b"tasks/fuzz",
        b"tasks/word_count",
        b"swarmq/history/get",
        b"swarmq/revoke",
        b"swarmq/workflows",
        b"swarmq/results/fuzz",
        b"$SYS/x",
        b"a/b",
    ];
    let payloads: [&[u8]; 8] = [
        br#"{"task":"mapper","args":["Fables"]}"#,
        br#"{"id":"x","reply_to":"r/1"}"#,
        br#"{"workflow":{"chain":[{"queue":"fuzz","task":"t"}]}}"#,
        br#"{"countdown":-1,"eta":"soon","priority":99}"#,
        br#"{"result":1}"#,
        b"[1,2,3]",
        b"\xff\xfe",
        b"",
    ];
    match rng.below(7) {
        0..=2 => {
            let qos = rng.below(3) as u8;
            let mut body = Vec::new();
            string(topics[rng.below(topics.len())], &mut body);
            if qos > 0 {
                body.extend_from_slice(&(rng.below(65535) as u16 + 1).to_be_bytes());
            }
            if version == 5 {
                // Sometimes a Response Topic and Correlation Data.
                if rng.below(2) == 0 {
                    let mut p = vec![0x08];
                    string(b"replies/fuzz", &mut p);
                    p.push(0x09);
                    string(b"c1", &mut p);
                    body.push(p.len() as u8);
                    body.extend_from_slice(&p);
                } else {
                    body.push(0);
                }
            }
            body.extend_from_slice(payloads[rng.below(payloads.len())]);
            packet(0x30 | (qos << 1), &body)
        }
        3 => {
            let mut body = (rng.below(65535) as u16 + 1).to_be_bytes().to_vec();
            props(&mut body);
            let filters: [&[u8]; 5] = [
                b"#",
                b"tasks/+",
                b"$share/g/tasks/fuzz",
                b"replies/#",
                b"+/+/#",
            ];
            string(filters[rng.below(filters.len())], &mut body);
            body.push(rng.below(3) as u8);
            packet(0x82, &body)
        }
        4 => {
            let mut body = (rng.below(65535) as u16 + 1).to_be_bytes().to_vec();
            props(&mut body);
            string(b"tasks/+", &mut body);
            packet(0xa2, &body)
        }
        5 => {
            // PUBACK, PUBREC, PUBREL, PUBCOMP for some packet id.
            let first = [0x40, 0x50, 0x62, 0x70][rng.below(4)];
            packet(first, &(rng.below(65535) as u16 + 1).to_be_bytes())
        }
        _ => vec![0xc0, 0], // PINGREQ
    }
}

/// A packet, mutated or not, or plain noise.
fn fuzzed(rng: &mut Rng, version: u8) -> Vec<u8> {
    let mut p = valid(rng, version);
    match rng.below(8) {
        0 => p, // as it is
        1 => {
            let n = rng.below(p.len());
            p.truncate(n);
            p
        }
        2 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
            p
        }
        3 => {
            // A lying remaining length.
            if p.len() > 1 {
                p[1] = rng.next() as u8 | 0x80;
                p.insert(2, rng.next() as u8);
            }
            p
        }
        4 => {
            let i = rng.below(p.len());
            let n = 1 + rng.below(16);
            let noise = rng.bytes(n);
            p.splice(i..i, noise);
            p
        }
        5 => {
            let n = rng.below(64);
            rng.bytes(n)
        }
        6 => {
            // A packet type the client must not send (CONNACK, SUBACK, reserved).
            p[0] = [0x20, 0x90, 0xb0, 0x00, 0xf0][rng.below(5)] | (p[0] & 0x0f);
            p
        }
        _ => {
            let mut twice = p.clone();
            twice.extend_from_slice(&p);
            twice
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_packets_never_crash_the_broker_and_tasks_keep_running() {
    let secs: u64 = std::env::var("SWARMQ_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("SWARMQ_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    // A panic anywhere but in test code (other tests of this binary panic
    // in handlers on purpose) counts as a crash.
    let panics = Arc::new(AtomicU64::new(0));
    let hook_panics = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_none_or(|l| !l.file().starts_with("tests/"))
        {
            hook_panics.fetch_add(1, Ordering::Relaxed);
        }
        previous(info);
    }));

    let broker = TestBroker::start_with(&[("mqtt.connect_timeout_ms", "1000")]).await;
    let (_stop, _worker) = spawn_worker(
        &broker.url(),
        "fuzz-worker",
        "fuzz",
        4,
        "echo",
        |ctx| async move { Ok(json!(ctx.args)) },
    );
    wait_consumers(&broker, "fuzz", 1).await;
    let client = swarmq_worker::Client::connect(&broker.url()).await.unwrap();

    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut packets, mut connections, mut batches) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        let mut batch = Vec::new();
        for c in 0..32 {
            let version = if rng.below(2) == 0 { 4 } else { 5 };
            let mut script = Vec::new();
            // Mostly a proper CONNECT first, so the packets after it reach
            // the session; sometimes a mangled one.
            if rng.below(5) > 0 {
                script.push(connect(version, &format!("fuzz-{batches}-{c}")));
            }
            for _ in 0..1 + rng.below(12) {
                script.push(fuzzed(&mut rng, version));
            }
            packets += script.len() as u64;
            connections += 1;
            let addr = broker.mqtt;
            batch.push(tokio::spawn(async move {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                    return;
                };
                for p in script {
                    if s.write_all(&p).await.is_err() {
                        return;
                    }
                }
                // Read what comes back for a moment, then go.
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_millis(50), async {
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }));
        }
        for b in batch {
            let _ = b.await;
        }
        batches += 1;
        // Alive, and still running tasks end to end.
        let request = swarmq_worker::wire::TaskRequest {
            task: Some("echo".into()),
            args: vec![json!(batches)],
            ..Default::default()
        };
        let result = within(
            &format!("a task after batch {batches} (seed {seed})"),
            client.call("fuzz", request, Duration::from_secs(10)),
        )
        .await
        .unwrap_or_else(|e| panic!("no task result after batch {batches} (seed {seed}): {e}"));
        assert_eq!(result.result, Some(json!([batches])), "seed {seed}");
        let (status, _) = broker.http_get("/healthz").await;
        assert_eq!(status, 200, "seed {seed}");
    }
    let crashed = panics.load(Ordering::Relaxed);
    println!(
        "fuzz: seed {seed}, {secs} s: {packets} packets on {connections} connections in {batches} batches, panics {crashed}"
    );
    assert_eq!(crashed, 0, "a task panicked (seed {seed})");
}
