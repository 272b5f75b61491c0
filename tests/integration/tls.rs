//! MQTT over TLS: the second listener, served when a certificate is
//! configured, beside the plain one. Certificates are made per test with
//! rcgen (a CA, and a server certificate it signs for localhost/127.0.0.1);
//! clients are the SDK (`mqtts://` with `ca_file`) and mosquitto_rr/pub.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use swarmq::{App, Settings, Sources};
use swarmq_worker::wire::TaskRequest;
use swarmq_worker::{Client, RequestError, TlsError, Worker, WorkerError};

use crate::certs::{TlsFiles, make_certs};
use crate::support::*;

/// A broker with both listeners, its certificates, and the directory that
/// holds them (removed when dropped).
async fn tls_broker() -> (TestBroker, TlsFiles, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = make_certs(dir.path());
    let (cert, key) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
    );
    let broker = TestBroker::start_with(&[
        ("mqtt.tls_listen", "127.0.0.1:0"),
        ("mqtt.tls_cert_file", &cert),
        ("mqtt.tls_key_file", &key),
    ])
    .await;
    (broker, files, dir)
}

fn mapper_over(url: &str, ca: Option<&Path>, id: &str) -> Result<Worker, WorkerError> {
    let mut b = Worker::builder(url)
        .client_id(id)
        .queue("word_count")
        .concurrency(4)
        .handler("mapper", |t| async move {
            let w: String = t.arg(0)?;
            Ok(json!([w, 1]))
        });
    if let Some(ca) = ca {
        b = b.ca_file(ca);
    }
    b.build()
}

fn mapper_request(word: &str) -> TaskRequest {
    TaskRequest {
        task: Some("mapper".into()),
        args: vec![json!(word)],
        ..TaskRequest::default()
    }
}

/// Runs a mosquitto client to completion; returns (success, stdout).
async fn mosquitto(program: &str, args: &[&str]) -> (bool, String) {
    let out = within(
        program,
        tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("command runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Whether mosquitto_pub delivers `{}` to tasks/word_count at QoS 1 on
/// `port`, with `extra` arguments (host, CA file).
async fn publish_ok(port: &str, extra: &[&str]) -> bool {
    let mut args = vec!["-p", port, "-q", "1", "-t", "tasks/word_count", "-m", "{}"];
    args.extend_from_slice(extra);
    mosquitto("mosquitto_pub", &args).await.0
}

#[tokio::test]
async fn tls_listener_serves_sdk_workers_clients_and_mosquitto_beside_plain_tcp() {
    let (broker, files, _dir) = tls_broker().await;
    let tls = broker.mqtts.expect("the TLS listener is bound");
    assert_ne!(tls.port(), broker.mqtt.port());
    let tls_url = format!("mqtts://localhost:{}", tls.port());

    // A worker over TLS serves the queue.
    let worker = mapper_over(&tls_url, Some(&files.ca), "tls-worker").expect("worker builds");
    let token = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(worker.run(token.clone()));
    wait_consumers(&broker, "word_count", 1).await;

    // An SDK client over TLS, and one over plain TCP at the same time.
    let over_tls = Client::builder(&tls_url)
        .ca_file(&files.ca)
        .connect()
        .await
        .expect("TLS client connects");
    let plain = Client::connect(&broker.url()).await.expect("plain client");
    let a = over_tls
        .call("word_count", mapper_request("Fables"), WAIT)
        .await
        .expect("result over TLS");
    let b = plain
        .call("word_count", mapper_request("Farmer"), WAIT)
        .await
        .expect("result over TCP");
    assert_eq!(a.worker.as_deref(), Some("tls-worker"));
    assert_eq!(a.into_result().expect("success"), json!(["Fables", 1]));
    assert_eq!(b.into_result().expect("success"), json!(["Farmer", 1]));

    // mosquitto_rr (MQTT 5) over TLS, verifying the broker by the test CA,
    // by name and by address.
    let ca = files.ca.display().to_string();
    let port = tls.port().to_string();
    for host in ["localhost", "127.0.0.1"] {
        let (ok, out) = mosquitto(
            "mosquitto_rr",
            &[
                "--cafile",
                &ca,
                "-h",
                host,
                "-p",
                &port,
                "-W",
                "20",
                "-t",
                "tasks/word_count",
                "-e",
                "replies/tls-rr",
                "-m",
                r#"{"task":"mapper","args":["caught"]}"#,
            ],
        )
        .await;
        assert!(ok, "mosquitto_rr over TLS to {host} failed");
        let v: Value = serde_json::from_str(out.trim()).expect("a JSON result");
        assert_eq!(v["status"], "success", "{v}");
        assert_eq!(v["result"], json!(["caught", 1]));
    }

    token.cancel();
    within("worker stops", run)
        .await
        .expect("worker task")
        .expect("worker runs");
}

#[tokio::test]
async fn clients_that_cannot_verify_the_broker_or_skip_tls_are_refused_and_nothing_else_is_disturbed()
 {
    let (broker, files, _dir) = tls_broker().await;
    let tls = broker.mqtts.expect("the TLS listener is bound");
    let port = tls.port().to_string();

    // mosquitto with a CA that did not sign the broker's certificate.
    let other = tempfile::tempdir().expect("tempdir");
    let stranger = make_certs(other.path());
    let stranger_ca = stranger.ca.display().to_string();
    let ok = publish_ok(&port, &["--cafile", &stranger_ca, "-h", "localhost"]).await;
    assert!(!ok, "a client that cannot verify the certificate must fail");

    // Plain MQTT sent to the TLS port is not a TLS handshake: refused.
    let ok = publish_ok(&port, &["-h", "127.0.0.1"]).await;
    assert!(!ok, "plain MQTT on the TLS port must fail");

    // The SDK refuses to connect to a broker it cannot verify.
    let url = format!("mqtts://localhost:{}", tls.port());
    match Client::builder(&url).ca_file(&stranger.ca).connect().await {
        Err(RequestError::Connect { reason, .. }) => {
            assert!(!reason.is_empty());
        }
        Err(e) => panic!("expected a connection failure, got {e}"),
        Ok(_) => panic!("connected to a broker it cannot verify"),
    }

    // Neither attempt reached the queue, and both listeners still serve.
    assert_eq!(
        broker
            .engine
            .queues()
            .iter()
            .map(|q| q.waiting)
            .sum::<usize>(),
        0
    );
    let good = Client::builder(&url)
        .ca_file(&files.ca)
        .connect()
        .await
        .expect("a verifying client still connects");
    let plain = Client::connect(&broker.url())
        .await
        .expect("plain TCP still serves");
    let _ = (good, plain);
}

#[tokio::test]
async fn tls_settings_and_files_are_checked_at_start_with_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = make_certs(dir.path());
    let base = |extra: &[(&str, String)]| {
        let mut overrides = vec![
            ("mqtt.listen".to_string(), "127.0.0.1:0".to_string()),
            ("mqtt.tls_listen".to_string(), "127.0.0.1:0".to_string()),
            ("http.listen".to_string(), "127.0.0.1:0".to_string()),
            (
                "store.data_dir".to_string(),
                dir.path().join("data").display().to_string(),
            ),
        ];
        overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Sources {
            overrides,
            ..Sources::default()
        }
    };

    // A certificate without its key (and the reverse) is a settings error.
    let err = Settings::load(&base(&[(
        "mqtt.tls_cert_file",
        files.cert.display().to_string(),
    )]))
    .expect_err("a certificate needs a key");
    assert!(err.to_string().contains("mqtt.tls_key_file"), "{err}");
    let err = Settings::load(&base(&[(
        "mqtt.tls_key_file",
        files.key.display().to_string(),
    )]))
    .expect_err("a key needs a certificate");
    assert!(err.to_string().contains("mqtt.tls_cert_file"), "{err}");

    // A missing file and a key that is not a key fail the start, naming the files.
    let missing = dir.path().join("nope.pem");
    for (cert, key) in [(&missing, &files.key), (&files.cert, &files.ca)] {
        let settings = Settings::load(&base(&[
            ("mqtt.tls_cert_file", cert.display().to_string()),
            ("mqtt.tls_key_file", key.display().to_string()),
        ]))
        .expect("settings");
        let err = App::build(settings).await.expect_err("start must fail");
        let text = format!("{:#}", anyhow::Error::from(err));
        assert!(
            text.contains(&cert.display().to_string()) && text.contains("TLS"),
            "{text}"
        );
    }

    // Without a certificate, no TLS listener.
    let settings = Settings::load(&base(&[])).expect("settings");
    let app = App::build(settings).await.expect("starts without TLS");
    assert_eq!(app.mqtt_tls_addr(), None);
}

#[tokio::test]
async fn sdk_checks_its_tls_settings_when_built() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("junk.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let missing = dir.path().join("missing.pem");
    for ca in [&not_pem, &missing] {
        match mapper_over("mqtts://localhost:8883", Some(ca), "w") {
            Err(WorkerError::Tls(TlsError::Ca { path, .. })) => assert_eq!(&path, ca),
            Err(e) => panic!("expected a CA error, got {e}"),
            Ok(_) => panic!("built a worker with an unusable CA file"),
        }
    }
    // A CA file on a plain address is simply unused.
    assert!(mapper_over("mqtt://localhost:1883", Some(&missing), "w").is_ok());
}
