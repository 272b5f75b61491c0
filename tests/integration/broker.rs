//! Everything an ordinary MQTT client expects keeps working beside the task
//! topics: wildcards, retained messages, wills, persistent sessions, QoS 2,
//! MQTT 5 request/response, shared subscriptions on ordinary topics.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};

use crate::support::*;

#[tokio::test]
async fn wildcards_route_ordinary_messages() {
    let broker = TestBroker::start().await;
    let mut plus = V5Peer::connect(broker.mqtt, "plus").await;
    plus.subscribe("sensors/+/temp").await;
    let mut hash = V4Peer::connect(broker.mqtt, "hash").await;
    hash.subscribe("sensors/#").await;
    let mut pubr = V5Peer::connect(broker.mqtt, "pub").await;
    pubr.publish_acked("sensors/kitchen/temp", "21.5", PublishProperties::default())
        .await;
    pubr.publish_acked(
        "sensors/kitchen/humidity",
        "40",
        PublishProperties::default(),
    )
    .await;
    let p = plus.next_publish().await;
    assert_eq!(
        (topic(&p).as_str(), &p.payload[..]),
        ("sensors/kitchen/temp", &b"21.5"[..])
    );
    assert_eq!(hash.next_publish().await.topic, "sensors/kitchen/temp");
    assert_eq!(hash.next_publish().await.topic, "sensors/kitchen/humidity");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), plus.rx.recv())
            .await
            .is_err(),
        "`+` matched a topic it should not"
    );
}

#[tokio::test]
async fn retained_message_reaches_later_subscribers() {
    let broker = TestBroker::start().await;
    let p = V4Peer::connect(broker.mqtt, "retainer").await;
    p.client
        .publish("config/led", rumqttc::QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    let mut late = V4Peer::connect(broker.mqtt, "late").await;
    eventually("retained delivered", || {
        let c = late.client.clone();
        async move {
            c.subscribe("config/#", rumqttc::QoS::AtLeastOnce)
                .await
                .is_ok()
        }
    })
    .await;
    let got = late.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..], got.retain),
        ("config/led", &b"on"[..], true)
    );
}

#[tokio::test]
async fn will_is_published_when_a_client_dies() {
    let broker = TestBroker::start().await;
    let mut watcher = V5Peer::connect(broker.mqtt, "watcher").await;
    watcher.subscribe("status/+").await;
    let dying = V5Peer::connect_with(broker.mqtt, "dying", |o| {
        o.set_last_will(LastWill::new(
            "status/dying",
            "offline",
            QoS::AtLeastOnce,
            false,
            None,
        ));
    })
    .await;
    dying.kill();
    let will = watcher.next_publish().await;
    assert_eq!(
        (topic(&will).as_str(), &will.payload[..]),
        ("status/dying", &b"offline"[..])
    );
}

#[tokio::test]
async fn persistent_session_receives_what_was_published_while_away() {
    let broker = TestBroker::start().await;
    let mut away = V4Peer::connect_with(broker.mqtt, "away", |o| {
        o.set_clean_session(false);
    })
    .await;
    away.subscribe("inbox/away").await;
    away.kill();
    eventually("broker saw the client leave", || async {
        broker
            .http_get("/metrics")
            .await
            .1
            .contains("swarmq_broker_connections 0\n")
    })
    .await;
    let sender = V5Peer::connect(broker.mqtt, "sender").await;
    sender
        .client
        .publish("inbox/away", QoS::AtLeastOnce, false, "while you were out")
        .await
        .unwrap();
    let mut back = V4Peer::connect_with(broker.mqtt, "away", |o| {
        o.set_clean_session(false);
    })
    .await;
    let got = back.next_publish().await;
    assert_eq!(&got.payload[..], b"while you were out");
}

#[tokio::test]
async fn qos2_is_delivered_exactly_once() {
    let broker = TestBroker::start().await;
    let mut sub = V5Peer::connect(broker.mqtt, "q2sub").await;
    sub.client
        .subscribe("q2/t", QoS::ExactlyOnce)
        .await
        .unwrap();
    sub.expect("suback", |p| matches!(p, Packet::SubAck(_)))
        .await;
    let mut pubr = V5Peer::connect(broker.mqtt, "q2pub").await;
    pubr.client
        .publish("q2/t", QoS::ExactlyOnce, false, "once")
        .await
        .unwrap();
    pubr.expect("pubcomp", |p| matches!(p, Packet::PubComp(_)))
        .await;
    let got = sub.next_publish().await;
    assert_eq!(
        (got.qos, &got.payload[..]),
        (QoS::ExactlyOnce, &b"once"[..])
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                if let Some(Packet::Publish(_)) = sub.rx.recv().await {
                    return;
                }
            }
        })
        .await
        .is_err()
    );
}

#[tokio::test]
async fn mqtt5_request_response_between_ordinary_clients() {
    let broker = TestBroker::start().await;
    let mut service = V5Peer::connect(broker.mqtt, "svc").await;
    service.subscribe("svc/echo").await;
    let mut caller = V5Peer::connect(broker.mqtt, "caller").await;
    caller.subscribe("caller/inbox").await;
    caller
        .publish_acked("svc/echo", "ping", reply_props("caller/inbox", "c-1"))
        .await;
    let req = service.next_publish().await;
    let props = req.properties.clone().unwrap_or_default();
    assert_eq!(props.response_topic.as_deref(), Some("caller/inbox"));
    service
        .publish_acked(
            props.response_topic.as_deref().unwrap(),
            "pong",
            PublishProperties {
                correlation_data: props.correlation_data.clone(),
                ..PublishProperties::default()
            },
        )
        .await;
    let resp = caller.next_publish().await;
    assert_eq!(&resp.payload[..], b"pong");
    assert_eq!(
        resp.properties
            .unwrap_or_default()
            .correlation_data
            .as_deref(),
        Some(&b"c-1"[..])
    );
}

#[tokio::test]
async fn shared_subscription_on_an_ordinary_topic_delivers_each_message_once() {
    let broker = TestBroker::start().await;
    let mut a = V5Peer::connect(broker.mqtt, "share-a").await;
    a.subscribe("$share/g/jobs/plain").await;
    let mut b = V5Peer::connect(broker.mqtt, "share-b").await;
    b.subscribe("$share/g/jobs/plain").await;
    let mut p = V5Peer::connect(broker.mqtt, "share-pub").await;
    for i in 0..10 {
        p.publish_acked("jobs/plain", format!("{i}"), PublishProperties::default())
            .await;
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        tokio::select! {
            Some(Packet::Publish(x)) = a.rx.recv() => got.push(String::from_utf8_lossy(&x.payload).to_string()),
            Some(Packet::Publish(x)) = b.rx.recv() => got.push(String::from_utf8_lossy(&x.payload).to_string()),
            () = tokio::time::sleep(WAIT) => panic!("shared messages missing: {got:?}"),
        }
    }
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
}
