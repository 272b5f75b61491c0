//! One MQTT 5 session for a client command: connect, publish a request
//! with this session's reply topic, read the PUBACK and the answer.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use serde_json::Value;
use swarmq_worker::BrokerAddr;

use super::{Failure, FailureKind, Target};

/// How long connecting may take before the broker counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected session with its reply topic subscribed.
pub(crate) struct Session {
    client: AsyncClient,
    eventloop: EventLoop,
    reply_topic: String,
    /// Answers that arrived while waiting for something else.
    early: VecDeque<(Option<String>, Value)>,
}

impl Session {
    /// Connects as `target` says and subscribes to a reply topic of its own
    /// (`replies/<name>/<client id>` for an identity).
    pub(crate) async fn connect(target: &Target) -> Result<Session, Failure> {
        let addr: BrokerAddr = target
            .url
            .parse()
            .map_err(|e: swarmq_worker::UrlError| Failure::usage(e.to_string()))?;
        if addr.tls {
            return Err(Failure::usage(format!(
                "{}: the command-line client speaks plain MQTT only (mqtt://); use the TLS port with mosquitto_pub --cafile, or the SDK",
                target.url
            )));
        }
        let suffix = format!(
            "cli-{}-{:x}",
            std::process::id(),
            ulid::Ulid::new().random() as u32
        );
        let (client_id, reply_topic) = match &target.username {
            Some(u) => (format!("{u}:{suffix}"), format!("replies/{u}/{suffix}")),
            None => (
                format!("swarmq-{suffix}"),
                format!("swarmq/replies/{suffix}"),
            ),
        };
        let mut opts = MqttOptions::new(&client_id, &addr.host, addr.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_start(true);
        opts.set_max_packet_size(Some(16 * 1024 * 1024));
        if let Some(u) = &target.username {
            opts.set_credentials(u, target.password()?.unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let where_ = addr.to_string();
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match connected {
            Ok(Ok(())) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                return Err(refused(code, &where_));
            }
            Ok(Err(e)) => {
                return Err(Failure::new(
                    FailureKind::Unreachable,
                    format!("cannot connect to the broker at {where_}: {e}"),
                ));
            }
            Err(_) => {
                return Err(Failure::new(
                    FailureKind::Unreachable,
                    format!("no answer from the broker at {where_} within {CONNECT_TIMEOUT:?}"),
                ));
            }
        }
        let mut session = Session {
            client,
            eventloop,
            reply_topic,
            early: VecDeque::new(),
        };
        session
            .client
            .subscribe(session.reply_topic.clone(), QoS::AtLeastOnce)
            .await
            .map_err(closed)?;
        loop {
            match session.next().await? {
                Packet::SubAck(ack) => {
                    if ack.return_codes.iter().any(|c| {
                        !matches!(
                            c,
                            rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                        )
                    }) {
                        return Err(Failure::new(
                            FailureKind::Denied,
                            format!("not allowed to subscribe to {}", session.reply_topic),
                        ));
                    }
                    return Ok(session);
                }
                other => session.keep(other),
            }
        }
    }

    /// Publishes `payload` to `topic` (QoS 1) asking for the answer on this
    /// session's reply topic with `correlation`, and returns once the broker
    /// has acknowledged it. A refusal is read from the PUBACK: not allowed
    /// (0x87), no such queue (0x90), anything else as the broker put it.
    pub(crate) async fn request(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        correlation: &str,
    ) -> Result<(), Failure> {
        let props = PublishProperties {
            response_topic: Some(self.reply_topic.clone()),
            correlation_data: Some(correlation.as_bytes().to_vec().into()),
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
            .await
            .map_err(closed)?;
        loop {
            match self.next().await? {
                Packet::PubAck(ack) => {
                    let reason = ack
                        .properties
                        .and_then(|p| p.reason_string)
                        .unwrap_or_else(|| format!("{:?}", ack.reason));
                    return match ack.reason {
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                        PubAckReason::NotAuthorized => Err(Failure::new(
                            FailureKind::Denied,
                            format!("refused by the broker: {reason}"),
                        )),
                        PubAckReason::TopicNameInvalid => Err(Failure::new(
                            FailureKind::NotFound,
                            format!("refused by the broker: {reason}"),
                        )),
                        _ => Err(Failure::new(
                            FailureKind::NotSucceeded,
                            format!("refused by the broker: {reason}"),
                        )),
                    };
                }
                other => self.keep(other),
            }
        }
    }

    /// Waits for the answer with `correlation`; `on_progress` sees each
    /// `progress` message before it.
    pub(crate) async fn answer(
        &mut self,
        correlation: &str,
        mut on_progress: impl FnMut(&Value),
    ) -> Result<Value, Failure> {
        loop {
            let (c, value) = match self.early.pop_front() {
                Some(early) => early,
                None => match self.next().await? {
                    Packet::Publish(p) => {
                        (correlation_of(p.properties.as_ref()), payload(&p.payload))
                    }
                    _ => continue,
                },
            };
            if c.as_deref() != Some(correlation) {
                continue;
            }
            if value.get("status").and_then(Value::as_str) == Some("progress") {
                on_progress(value.get("progress").unwrap_or(&Value::Null));
                continue;
            }
            return Ok(value);
        }
    }

    /// Disconnects cleanly.
    pub(crate) async fn close(mut self) {
        if self.client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while self.eventloop.poll().await.is_ok() {}
            })
            .await;
        }
    }

    /// The next packet from the broker.
    async fn next(&mut self) -> Result<Packet, Failure> {
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(p)) => return Ok(p),
                Ok(Event::Outgoing(_)) => {}
                Err(e) => {
                    return Err(Failure::new(
                        FailureKind::Unreachable,
                        format!("lost the connection to the broker: {e}"),
                    ));
                }
            }
        }
    }

    /// Keeps an answer that came before it was asked for.
    fn keep(&mut self, packet: Packet) {
        if let Packet::Publish(p) = packet {
            self.early
                .push_back((correlation_of(p.properties.as_ref()), payload(&p.payload)));
        }
    }
}

fn correlation_of(props: Option<&PublishProperties>) -> Option<String> {
    props
        .and_then(|p| p.correlation_data.as_ref())
        .map(|c| String::from_utf8_lossy(c).into_owned())
}

fn payload(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn closed<E: std::fmt::Display>(e: E) -> Failure {
    Failure::new(
        FailureKind::Unreachable,
        format!("the connection to the broker closed: {e}"),
    )
}

/// A CONNACK refusal, in words, with its exit code.
fn refused(code: ConnectReturnCode, addr: &str) -> Failure {
    let (kind, why) = match code {
        ConnectReturnCode::BadUserNamePassword => (
            FailureKind::Denied,
            "bad user name or password (check --username and --password)",
        ),
        ConnectReturnCode::NotAuthorized => (
            FailureKind::Denied,
            "not authorized (anonymous clients are not allowed: give --username and --password)",
        ),
        ConnectReturnCode::ClientIdentifierNotValid | ConnectReturnCode::BadClientId => {
            (FailureKind::Denied, "client id refused")
        }
        ConnectReturnCode::QuotaExceeded => (FailureKind::Denied, "too many connections"),
        _ => (FailureKind::Unreachable, "refused"),
    };
    Failure::new(
        kind,
        format!("the broker at {addr} refused the connection: {why} ({code:?})"),
    )
}
