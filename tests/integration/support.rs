//! Test harness: a real swarmq broker in-process on ephemeral ports, real MQTT
//! clients (rumqttc 3.1.1 and 5.0), and a polling helper instead of sleeps.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use swarmq::{App, Engine, Settings, Sources};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Every await in a test is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// A broker running in this test process. Dropping it stops it.
pub struct TestBroker {
    pub mqtt: SocketAddr,
    /// The TLS listener, when the settings configure one.
    pub mqtts: Option<SocketAddr>,
    pub http: SocketAddr,
    pub engine: Engine,
    token: CancellationToken,
    run: Option<tokio::task::JoinHandle<()>>,
    sources: Sources,
    pub data_dir: Arc<tempfile::TempDir>,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(&[]).await
    }

    /// Starts with settings overrides, as dotted key → value.
    pub async fn start_with(overrides: &[(&str, &str)]) -> TestBroker {
        TestBroker::start_with_config("", overrides).await
    }

    /// Starts with a TOML config file (for settings overrides cannot express,
    /// such as `[[auth.users]]`) and overrides.
    pub async fn start_with_config(toml: &str, overrides: &[(&str, &str)]) -> TestBroker {
        let data_dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let config = data_dir.path().join("swarmq.toml");
        std::fs::write(&config, toml).expect("write config");
        let mut o: Vec<(String, String)> = vec![
            ("mqtt.listen".into(), "127.0.0.1:0".into()),
            ("http.listen".into(), "127.0.0.1:0".into()),
            (
                "store.data_dir".into(),
                data_dir.path().join("data").display().to_string(),
            ),
            ("shutdown.grace_period_ms".into(), "200".into()),
        ];
        o.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let sources = Sources {
            file: Some(config),
            overrides: o,
            ..Sources::default()
        };
        TestBroker::start_from(sources, data_dir).await
    }

    async fn start_from(sources: Sources, data_dir: Arc<tempfile::TempDir>) -> TestBroker {
        let settings = Settings::load(&sources).expect("settings");
        let app = App::build(settings).await.expect("app builds");
        TestBroker::run_app(app, sources, data_dir)
    }

    fn run_app(app: App, sources: Sources, data_dir: Arc<tempfile::TempDir>) -> TestBroker {
        let (mqtt, mqtts, http) = (app.mqtt_addr(), app.mqtt_tls_addr(), app.http_addr());
        let engine = app.engine().clone();
        let token = CancellationToken::new();
        let run = tokio::spawn(app.run(token.clone()));
        TestBroker {
            mqtt,
            mqtts,
            http,
            engine,
            token,
            run: Some(run),
            sources,
            data_dir,
        }
    }

    /// Stops the broker the way SIGTERM does (drain, flush), waits until it
    /// has stopped, and starts it again on the same data directory and
    /// settings (new ports).
    pub async fn restart(mut self) -> TestBroker {
        self.token.cancel();
        let run = self.run.take();
        let (sources, data_dir) = (self.sources.clone(), self.data_dir.clone());
        drop(self);
        if let Some(run) = run {
            within("broker stops", run).await.expect("broker task");
        }
        // In one process the old broker's connection tasks can outlive its
        // run for a moment and still hold the stores open (a real restart is
        // a new process): retry until their locks are released.
        let settings = Settings::load(&sources).expect("settings");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match App::build(settings.clone()).await {
                Ok(app) => return TestBroker::run_app(app, sources, data_dir),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("broker does not restart: {e:?}"),
            }
        }
    }

    /// The HTTP base URL, for reqwest.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.mqtt)
    }

    pub fn port(&self) -> u16 {
        self.mqtt.port()
    }

    /// GETs a path on the HTTP port; returns (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A minimal HTTP/1.1 GET, enough for /healthz and /metrics.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` until it returns true, failing the test after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `fut`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A raw MQTT 5 client whose incoming packets arrive on a channel.
pub struct V5Peer {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Packet>,
    stop: CancellationToken,
}

impl Drop for V5Peer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl V5Peer {
    pub async fn connect(addr: SocketAddr, id: &str) -> V5Peer {
        V5Peer::connect_with(addr, id, |_| {}).await
    }

    pub async fn connect_with(
        addr: SocketAddr,
        id: &str,
        tweak: impl FnOnce(&mut MqttOptions),
    ) -> V5Peer {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        tweak(&mut opts);
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    ev = eventloop.poll() => match ev {
                        Ok(Event::Incoming(p)) => { if tx.send(p).is_err() { break; } }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        });
        let mut peer = V5Peer { client, rx, stop };
        peer.expect("connack", |p| matches!(p, Packet::ConnAck(_)))
            .await;
        peer
    }

    /// Drops the TCP connection without DISCONNECT, as a crash would.
    pub fn kill(self) {
        self.stop.cancel();
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.expect("suback", |p| matches!(p, Packet::SubAck(_)))
            .await;
    }

    /// Waits for the first packet matching `pred`, discarding others.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
        within(what, async {
            loop {
                let p = self
                    .rx
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("connection closed before {what}"));
                if pred(&p) {
                    return p;
                }
            }
        })
        .await
    }

    pub async fn next_publish(&mut self) -> Publish {
        match self
            .expect("publish", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    /// Publishes QoS 1 and returns the PUBACK reason code.
    pub async fn publish_acked(
        &mut self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        props: PublishProperties,
    ) -> PubAckReason {
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), props)
            .await
            .expect("publish");
        match self
            .expect("puback", |p| matches!(p, Packet::PubAck(_)))
            .await
        {
            Packet::PubAck(ack) => ack.reason,
            _ => unreachable!(),
        }
    }
}

/// Properties asking for a reply on `topic` with `correlation`.
pub fn reply_props(topic: &str, correlation: &str) -> PublishProperties {
    PublishProperties {
        response_topic: Some(topic.into()),
        correlation_data: Some(correlation.as_bytes().to_vec().into()),
        ..PublishProperties::default()
    }
}

pub fn json(p: &Publish) -> serde_json::Value {
    serde_json::from_slice(&p.payload).expect("JSON payload")
}

pub fn topic(p: &Publish) -> String {
    String::from_utf8_lossy(&p.topic).to_string()
}

/// A raw MQTT 3.1.1 client whose incoming publishes arrive on a channel.
pub struct V4Peer {
    pub client: rumqttc::AsyncClient,
    pub rx: mpsc::UnboundedReceiver<rumqttc::Packet>,
    stop: CancellationToken,
}

impl Drop for V4Peer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl V4Peer {
    pub async fn connect(addr: SocketAddr, id: &str) -> V4Peer {
        V4Peer::connect_with(addr, id, |_| {}).await
    }

    pub async fn connect_with(
        addr: SocketAddr,
        id: &str,
        tweak: impl FnOnce(&mut rumqttc::MqttOptions),
    ) -> V4Peer {
        let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        tweak(&mut opts);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    ev = eventloop.poll() => match ev {
                        Ok(rumqttc::Event::Incoming(p)) => { if tx.send(p).is_err() { break; } }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        });
        let mut peer = V4Peer { client, rx, stop };
        peer.expect("connack", |p| matches!(p, rumqttc::Packet::ConnAck(_)))
            .await;
        peer
    }

    pub fn kill(self) {
        self.stop.cancel();
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.expect("suback", |p| matches!(p, rumqttc::Packet::SubAck(_)))
            .await;
    }

    pub async fn expect(
        &mut self,
        what: &str,
        pred: impl Fn(&rumqttc::Packet) -> bool,
    ) -> rumqttc::Packet {
        within(what, async {
            loop {
                let p = self
                    .rx
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("connection closed before {what}"));
                if pred(&p) {
                    return p;
                }
            }
        })
        .await
    }

    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        match self
            .expect("publish", |p| matches!(p, rumqttc::Packet::Publish(_)))
            .await
        {
            rumqttc::Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish");
    }
}

/// Starts an SDK worker serving `handler` as task `task` on `queue`; returns
/// the token that stops it and its join handle.
pub fn spawn_worker<F, Fut>(
    url: &str,
    id: &str,
    queue: &str,
    concurrency: u32,
    task: &str,
    handler: F,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<swarmq_worker::WorkerStats>,
)
where
    F: Fn(swarmq_worker::TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<serde_json::Value, swarmq_worker::TaskError>> + Send + 'static,
{
    let worker = swarmq_worker::Worker::builder(url)
        .client_id(id)
        .queue(queue)
        .concurrency(concurrency)
        .grace_period(Duration::from_secs(5))
        .handler(task, handler)
        .build()
        .expect("worker builds");
    let token = CancellationToken::new();
    let t = token.clone();
    let handle = tokio::spawn(async move { worker.run(t).await.expect("worker runs") });
    (token, handle)
}

/// Waits until the engine lists `n` consumers on `queue`.
pub async fn wait_consumers(broker: &TestBroker, queue: &str, n: usize) {
    let d = broker.engine.clone();
    let q = queue.to_string();
    eventually(&format!("{n} consumers on {queue}"), move || {
        let d = d.clone();
        let q = q.clone();
        async move { d.queues().iter().any(|s| s.name == q && s.consumers == n) }
    })
    .await;
}

/// Kills a child process on drop, so a failing test leaves nothing running.
/// A child started through `setsid` leads its own process group; then the
/// whole group is killed (a shell script and the clients it started).
pub struct ChildGuard {
    pub child: std::process::Child,
    group: bool,
}

impl ChildGuard {
    /// Guards a plain child.
    pub fn new(child: std::process::Child) -> ChildGuard {
        ChildGuard {
            child,
            group: false,
        }
    }

    /// Guards a child started with `setsid`, which leads its process group.
    pub fn group_leader(child: std::process::Child) -> ChildGuard {
        ChildGuard { child, group: true }
    }

    /// Takes the child's piped standard output.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = self.child.id();
        if self.group && pid > 1 {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of the broker whose connections can be cut, to show
/// what clients do when the network drops under them.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    stop: CancellationToken,
}

impl CuttableProxy {
    pub async fn start(upstream: SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let stop = CancellationToken::new();
        let (cut_tx, token) = (cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    () = token.cancelled() => break,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => break },
                };
                let mut cut_rx = cut_tx.subscribe();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        CuttableProxy { addr, cut, stop }
    }

    /// Drops every connection open through the proxy.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
