//! [`EmbeddedBroker`]: the rmqtt MQTT broker, embedded and wired to the engine.
//!
//! This is the only module that names `rmqtt`. It builds the broker's context
//! and its listeners (plain TCP, and TLS when a certificate is configured)
//! from our [`MqttSettings`], installs the task-aware
//! shared-subscription policy ([`shared`]) and the hooks ([`hooks`]) that turn
//! MQTT events into [`Engine`] calls, and implements the engine's
//! [`Outbox`] port: [`BrokerOutbox`] hands the engine's [`Effect`]s to rmqtt.
//! Effects of an engine call made by a hook are published by that client's
//! session task right after the call (the hot path: no hop to another
//! task); effects of calls from elsewhere (the API, the timer) go to one
//! publisher task. Either way the effects of one call leave in the order
//! they were decided.
//!
//! rmqtt has no shutdown API: [`EmbeddedBroker::run`] drops the server future
//! when its token is cancelled, which closes the listener and every connection.

mod guard;
mod hooks;
mod shared;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use rmqtt::codec::types::{Publish as CodecPublish, QoS};
use rmqtt::codec::v5::PublishProperties;
use rmqtt::context::ServerContext;
use rmqtt::net::{Builder, Listener};
use rmqtt::server::MqttServer;
use rmqtt::session::SessionState;
use rmqtt::types::{From, Id, Publish};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::engine::{Effect, Engine, Outbox};
use crate::history::HistoryStore;
use crate::settings::{MqttSettings, TaskSettings};

/// Client id the broker's own messages (task deliveries, results) come from.
const DISPATCHER_CLIENT_ID: &str = "$swarmq";

/// Listener ids given to rmqtt, which keys each listener's settings by them.
const LISTENER_ID: u16 = 1;
const TLS_LISTENER_ID: u16 = 2;

/// Errors while starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The MQTT listener could not bind its address.
    #[error("cannot listen for MQTT on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: rmqtt::Error,
    },
    /// The TLS listener could not load its certificate or key.
    #[error("cannot serve MQTT over TLS with {cert} and {key}: {message}")]
    Tls {
        /// Certificate file.
        cert: String,
        /// Key file.
        key: String,
        /// rmqtt's message (the file and what is wrong with it).
        message: String,
    },
    /// An rmqtt plugin failed to start.
    #[error("cannot start the broker's `{name}` plugin: {message}")]
    Plugin {
        /// Plugin name.
        name: &'static str,
        /// rmqtt's message.
        message: String,
    },
}

tokio::task_local! {
    /// Effects of the engine call a hook is making on its session task;
    /// [`Publisher::inline`] publishes them right after the call.
    static INLINE: RefCell<Vec<Effect>>;
}

/// The engine's effects port, as the broker implements it.
///
/// Inside [`Publisher::inline`] (a hook's engine call) effects are collected
/// for the calling task to publish. Anywhere else they go to a queue that
/// the broker's publisher task drains. The queue is unbounded because the
/// engine must never block under its lock. What bounds it is the publisher
/// task, which forwards each effect into rmqtt's per-session queues
/// (themselves bounded by `mqtt.max_mqueue_len`) as fast as the engine
/// produces them; it grows only while that task waits for a CPU.
#[derive(Debug, Clone)]
pub struct BrokerOutbox {
    tx: UnboundedSender<Vec<Effect>>,
}

impl Outbox for BrokerOutbox {
    fn send(&self, effects: Vec<Effect>) {
        let mut effects = Some(effects);
        let inline = INLINE
            .try_with(|buf| buf.borrow_mut().extend(effects.take().unwrap_or_default()))
            .is_ok();
        if !inline && let Some(effects) = effects {
            // Fails only once the broker has stopped, when nobody can receive.
            let _ = self.tx.send(effects);
        }
    }
}

/// The receiving end of a [`BrokerOutbox`], handed to [`EmbeddedBroker::bind`].
#[derive(Debug)]
pub struct EffectQueue {
    rx: UnboundedReceiver<Vec<Effect>>,
}

/// A new effects port for the engine and the queue the broker drains.
pub fn outbox() -> (BrokerOutbox, EffectQueue) {
    let (tx, rx) = unbounded_channel();
    (BrokerOutbox { tx }, EffectQueue { rx })
}

/// The embedded broker, bound and ready to run.
pub struct EmbeddedBroker {
    guard: Arc<guard::Guard>,
    scx: ServerContext,
    listener: Listener,
    local_addr: SocketAddr,
    tls: Option<(Listener, SocketAddr)>,
    publisher: Publisher,
    effects: EffectQueue,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("local_addr", &self.local_addr)
            .field("tls_addr", &self.tls_addr())
            .finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Builds the broker context, installs plugins and hooks, and binds the listener.
    ///
    /// # Errors
    ///
    /// Fails when an address cannot be bound, the TLS certificate or key
    /// cannot be loaded, or a plugin cannot start.
    pub async fn bind(
        mqtt: &MqttSettings,
        tasks: &TaskSettings,
        engine: Engine,
        history: Option<HistoryStore>,
        access: Access,
        effects: EffectQueue,
    ) -> Result<EmbeddedBroker, BrokerError> {
        let scx = ServerContext::new()
            .plugins_config_map_add(
                "rmqtt-retainer",
                "storage.type = \"ram\"\nmax_retained_messages = 0\n",
            )
            .build()
            .await;

        rmqtt_retainer::register_named(&scx, "rmqtt-retainer", true, false)
            .await
            .map_err(|e| BrokerError::Plugin {
                name: "rmqtt-retainer",
                message: e.to_string(),
            })?;
        *scx.extends.shared_subscription_mut().await =
            Box::new(shared::TaskAwareSharing::default());

        let publisher = Publisher {
            delivery_qos: if tasks.delivery_qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            scx: scx.clone(),
            from: From::from_system(Id::new(
                scx.node.id(),
                LISTENER_ID,
                None,
                None,
                DISPATCHER_CLIENT_ID.into(),
                None,
            )),
        };
        let guard = Arc::new(guard::Guard::new(access));
        let handler = hooks::TaskHooks::new(
            guard.clone(),
            engine,
            history,
            publisher.clone(),
            tasks.default_capacity,
            tasks.max_capacity,
        );
        let register = scx.extends.hook_mgr().register();
        for typ in hooks::TaskHooks::TYPES {
            register.add(typ, Box::new(handler.clone())).await;
        }
        register.start().await;

        let listener = bind(listener_builder(mqtt, "mqtt", mqtt.listen))?;
        let local_addr = bound_addr(&listener, mqtt.listen)?;
        let tls = match mqtt.tls() {
            Some((cert, key)) => {
                let mut builder = listener_builder(mqtt, "mqtts", mqtt.tls_listen)
                    .tls_cert(Some(cert.display().to_string()))
                    .tls_key(Some(key.display().to_string()));
                if let Some(ca) = &mqtt.tls_client_ca_file {
                    // A verified certificate's CN becomes the username and is
                    // handed to the access hook, which takes it as proof.
                    builder = builder
                        .tls_client_ca_certs(Some(ca.display().to_string()))
                        .tls_cross_certificate(mqtt.tls_require_client_cert)
                        .cert_cn_as_username(true)
                        .collect_cert_info(true);
                }
                let listener = bind(builder)?.tls().map_err(|e| BrokerError::Tls {
                    cert: cert.display().to_string(),
                    key: key.display().to_string(),
                    message: format!("{e:#}"),
                })?;
                let addr = bound_addr(&listener, mqtt.tls_listen)?;
                Some((listener, addr))
            }
            None => None,
        };
        Ok(EmbeddedBroker {
            guard,
            scx,
            listener,
            local_addr,
            tls,
            publisher,
            effects,
        })
    }

    /// The address the MQTT listener is bound to (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the TLS listener is bound to, when TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves MQTT and publishes the engine's effects until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        let mut server =
            MqttServer::new(self.scx.clone()).listener_by_id(self.listener, LISTENER_ID);
        if let Some((listener, _)) = self.tls {
            server = server.listener_by_id(listener, TLS_LISTENER_ID);
        }
        let server = server.build();
        let watch = tokio::spawn(self.guard.watch(self.scx.clone(), token.child_token()));
        let publisher = self.publisher;
        let mut effects = self.effects.rx;
        let publish = async {
            while let Some(batch) = effects.recv().await {
                for effect in batch {
                    publisher.send(effect).await;
                }
            }
        };
        tokio::select! {
            res = server.run() => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "MQTT server stopped");
                }
            }
            () = publish => {}
            () = token.cancelled() => {
                tracing::info!("MQTT broker stopping");
            }
        }
        watch.abort();
    }
}

/// A listener on `addr` with the broker-wide connection settings; both
/// listeners share them, so a client sees the same broker on either port.
fn listener_builder(mqtt: &MqttSettings, name: &str, addr: SocketAddr) -> Builder {
    let max_inflight = NonZeroU16::new(mqtt.max_inflight).unwrap_or(NonZeroU16::MIN);
    Builder::new()
        .name(name)
        .laddr(addr)
        .nodelay(mqtt.tcp_nodelay)
        .max_keepalive(mqtt.max_keep_alive_secs)
        .max_topic_aliases(mqtt.max_topic_aliases)
        .handshake_timeout(Duration::from_millis(mqtt.connect_timeout_ms))
        .reuseaddr(Some(true))
        // The access hook decides every connection, anonymous ones included.
        .allow_anonymous(false)
        .max_packet_size(mqtt.max_packet_size_bytes)
        .max_inflight(max_inflight)
        .max_mqueue_len(mqtt.max_mqueue_len)
        .max_mqueue_bytes(mqtt.max_mqueue_bytes)
        .max_connections(mqtt.max_connections)
        // Each handshake is a task waiting on its socket, cheap: as many may
        // wait as connections may be open, so sockets that never send CONNECT
        // (closed after mqtt.connect_timeout_ms) never queue a real client
        // behind them (rmqtt's 1,000 made the 10,001st wait for the timeouts).
        .max_handshaking_limit(mqtt.max_connections)
        .session_expiry_interval(Duration::from_secs(mqtt.session_expiry_interval_secs))
        .message_expiry_interval(Duration::from_secs(mqtt.message_expiry_interval_secs))
}

fn bind(builder: Builder) -> Result<Listener, BrokerError> {
    let addr = builder.laddr;
    builder
        .bind()
        .map_err(|source| BrokerError::Bind { addr, source })
}

fn bound_addr(listener: &Listener, asked: SocketAddr) -> Result<SocketAddr, BrokerError> {
    listener.local_addr().map_err(|source| BrokerError::Bind {
        addr: asked,
        source,
    })
}

/// Publishes [`Effect`]s into the broker on the engine's behalf.
#[derive(Clone)]
pub(crate) struct Publisher {
    scx: ServerContext,
    /// QoS of task deliveries (`tasks.delivery_qos`). Results to requesters
    /// are always QoS 1: a requester may be offline with a persistent session.
    delivery_qos: QoS,
    from: From,
}

impl Publisher {
    /// Makes the engine call `call` with its effects collected on this
    /// task, then publishes them from here, in order.
    pub(crate) async fn inline<R>(&self, call: impl FnOnce() -> R) -> R {
        let (result, effects) = INLINE.sync_scope(RefCell::new(Vec::new()), || {
            let result = call();
            (result, INLINE.with(RefCell::take))
        });
        for effect in effects {
            self.send(effect).await;
        }
        result
    }

    pub(crate) async fn send(&self, effect: Effect) {
        let (publish, what) = match effect {
            Effect::Deliver {
                worker,
                queue,
                task_id,
                reply_to,
                payload,
                user_properties,
            } => {
                let properties = PublishProperties {
                    response_topic: Some(reply_to.into()),
                    correlation_data: Some(task_id.into_bytes().into()),
                    user_properties: user_properties
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect(),
                    ..PublishProperties::default()
                };
                let p = codec_publish(
                    swarmq_worker::wire::task_topic(&queue),
                    payload,
                    properties,
                    self.delivery_qos,
                );
                (Publish::from(p).target_clientid(worker.into()), "task")
            }
            Effect::Control { worker, payload } => (
                Publish::from(codec_publish(
                    swarmq_worker::wire::control_topic(&worker),
                    payload,
                    PublishProperties::default(),
                    QoS::AtLeastOnce,
                )),
                "control notice",
            ),
            Effect::Reply {
                topic,
                correlation_data,
                payload,
            } => {
                let properties = PublishProperties {
                    correlation_data,
                    ..PublishProperties::default()
                };
                (
                    Publish::from(codec_publish(topic, payload, properties, QoS::AtLeastOnce)),
                    "result",
                )
            }
        };
        if let Err(e) =
            SessionState::forwards(&self.scx, self.from.clone(), publish, false, None).await
        {
            tracing::warn!(error = %e, what, "broker could not route a message");
        }
    }
}

fn codec_publish(
    topic: String,
    payload: bytes::Bytes,
    properties: PublishProperties,
    qos: QoS,
) -> CodecPublish {
    CodecPublish {
        dup: false,
        retain: false,
        qos,
        topic: topic.into(),
        packet_id: None,
        payload,
        properties: Some(properties),
    }
}
