//! Identities and access, against the real broker with real clients: every
//! deny path of the contract's table, in MQTT 5 and 3.1.1 where both apply.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Packet, PubAckReason, PublishProperties, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use serde_json::{Value, json};
use swarmq::access::registry::NewIdentity;
use swarmq::access::{IdentityFile, IdentityRole, TokenHash};

use crate::api::Api;
use crate::support::{TestBroker, V4Peer, V5Peer, eventually, json, reply_props, topic, within};

/// The token every test identity has: `sqt_test_<name>`, padded.
fn token(name: &str) -> String {
    format!("sqt_test_{name}_0123456789abcdef0123456789")
}

/// `[[auth.identities]]` for the standard cast, plus `extra` TOML.
fn config(extra: &str) -> String {
    let cast: [(&str, &str, &[&str]); 6] = [
        ("dev1", "device", &["mapper"]),
        ("dev2", "device", &[]),
        ("w1", "worker", &["mapper"]),
        ("w2", "worker", &["mapper"]),
        ("ops", "app", &[]),
        ("root", "admin", &[]),
    ];
    let mut toml = String::new();
    for (name, role, queues) in cast {
        let hash = TokenHash::new(&token(name)).unwrap();
        let queues: Vec<String> = queues.iter().map(|q| format!("\"{q}\"")).collect();
        toml.push_str(&format!(
            "[[auth.identities]]\nname = \"{name}\"\nrole = \"{role}\"\nqueues = [{}]\ntoken_hash = \"{}\"\n\n",
            queues.join(", "),
            hash.as_str()
        ));
    }
    toml.push_str(extra);
    toml
}

async fn secured(extra: &str) -> TestBroker {
    TestBroker::start_with_config(&config(extra), &[]).await
}

fn as_identity(name: &str) -> impl FnOnce(&mut MqttOptions) {
    let (user, pass) = (name.to_string(), token(name));
    move |o: &mut MqttOptions| {
        o.set_credentials(user, pass);
    }
}

fn as_identity_v4(name: &str) -> impl FnOnce(&mut rumqttc::MqttOptions) {
    let (user, pass) = (name.to_string(), token(name));
    move |o: &mut rumqttc::MqttOptions| {
        o.set_credentials(user, pass);
    }
}

/// Connects over MQTT 5 and returns the CONNACK code (and its properties).
async fn connack_v5(
    broker: &TestBroker,
    client_id: &str,
    tweak: impl FnOnce(&mut MqttOptions),
) -> (
    ConnectReturnCode,
    Option<rumqttc::v5::mqttbytes::v5::ConnAckProperties>,
) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", broker.port());
    opts.set_clean_start(true);
    tweak(&mut opts);
    let (_client, mut eventloop) = AsyncClient::new(opts, 10);
    within("CONNACK", async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return (ack.code, ack.properties),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return (code, None),
                Err(e) => panic!("connection failed without a CONNACK: {e:?}"),
            }
        }
    })
    .await
}

/// Connects over MQTT 3.1.1 and returns the CONNACK code.
async fn connack_v4(
    broker: &TestBroker,
    client_id: &str,
    tweak: impl FnOnce(&mut rumqttc::MqttOptions),
) -> rumqttc::ConnectReturnCode {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", broker.port());
    tweak(&mut opts);
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
    within("CONNACK", async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => return ack.code,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("connection failed without a CONNACK: {e:?}"),
            }
        }
    })
    .await
}

/// Subscribes over MQTT 5 and returns the SUBACK code and Reason String.
async fn suback_v5(peer: &mut V5Peer, filter: &str) -> (SubscribeReasonCode, Option<String>) {
    peer.client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    match peer
        .expect("suback", |p| matches!(p, Packet::SubAck(_)))
        .await
    {
        Packet::SubAck(ack) => (
            ack.return_codes[0],
            ack.properties.and_then(|p| p.reason_string),
        ),
        _ => unreachable!(),
    }
}

async fn suback_v4(peer: &mut V4Peer, filter: &str) -> rumqttc::SubscribeReasonCode {
    peer.client
        .subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    match peer
        .expect("suback", |p| matches!(p, rumqttc::Packet::SubAck(_)))
        .await
    {
        rumqttc::Packet::SubAck(ack) => ack.return_codes[0],
        _ => unreachable!(),
    }
}

async fn metric(broker: &TestBroker, line_start: &str) -> u64 {
    let (_, body) = broker.http_get("/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in /metrics"))
}

fn queued(broker: &TestBroker, queue: &str) -> usize {
    broker
        .engine
        .queues()
        .iter()
        .find(|q| q.name == queue)
        .map_or(0, |q| q.waiting + q.scheduled)
}

#[tokio::test]
async fn connections_are_refused_without_the_right_credentials_in_both_versions() {
    let broker = secured("").await;
    // MQTT 5.
    let anon = connack_v5(&broker, "someone", |_| {}).await.0;
    assert_eq!(anon, ConnectReturnCode::NotAuthorized, "anonymous");
    let bad = connack_v5(&broker, "dev1", |o| {
        o.set_credentials("dev1", "sqt_wrong");
    })
    .await
    .0;
    assert_eq!(bad, ConnectReturnCode::BadUserNamePassword, "bad token");
    let unknown = connack_v5(&broker, "nobody", |o| {
        o.set_credentials("nobody", token("nobody"));
    })
    .await
    .0;
    assert_eq!(
        unknown,
        ConnectReturnCode::BadUserNamePassword,
        "unknown name"
    );
    let other_id = connack_v5(&broker, "dev2", as_identity("dev1")).await.0;
    assert_eq!(
        other_id,
        ConnectReturnCode::ClientIdentifierNotValid,
        "another identity's client id"
    );
    let prefixed = connack_v5(&broker, "dev10:x", as_identity("dev1")).await.0;
    assert_eq!(prefixed, ConnectReturnCode::ClientIdentifierNotValid);
    assert_eq!(
        connack_v5(&broker, "dev1:sensor", as_identity("dev1"))
            .await
            .0,
        ConnectReturnCode::Success
    );
    // An empty client id is assigned one of the identity.
    let (code, props) = connack_v5(&broker, "", as_identity("dev1")).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let assigned = props
        .and_then(|p| p.assigned_client_identifier)
        .expect("an assigned client id");
    assert!(assigned.starts_with("dev1:"), "{assigned}");

    // MQTT 3.1.1.
    use rumqttc::ConnectReturnCode as V4;
    assert_eq!(
        connack_v4(&broker, "someone", |_| {}).await,
        V4::NotAuthorized
    );
    let bad = connack_v4(&broker, "dev1", |o| {
        o.set_credentials("dev1", "sqt_wrong");
    })
    .await;
    assert_eq!(bad, V4::BadUserNamePassword);
    assert_eq!(
        connack_v4(&broker, "w1", as_identity_v4("dev1")).await,
        V4::BadClientId
    );
    assert_eq!(
        connack_v4(&broker, "dev1", as_identity_v4("dev1")).await,
        V4::Success
    );

    let failures = metric(&broker, "swarmq_auth_failures_total ").await;
    assert!(failures >= 8, "{failures} refusals counted");
}

#[tokio::test]
async fn a_device_subscribes_and_publishes_only_where_its_role_lets_it() {
    let broker = secured("").await;
    let mut dev = V5Peer::connect_with(broker.mqtt, "dev1:a", as_identity("dev1")).await;
    for filter in [
        "#",
        "tasks/#",
        "replies/dev2/#",
        "replies/+/x",
        "$share/g/tasks/mapper",
    ] {
        let (code, reason) = suback_v5(&mut dev, filter).await;
        assert_eq!(code, SubscribeReasonCode::NotAuthorized, "{filter}");
        let reason = reason.expect("a Reason String");
        assert!(reason.contains(filter), "{reason}");
    }
    let (code, _) = suback_v5(&mut dev, "replies/dev1/#").await;
    assert_eq!(code, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    let denied = dev
        .publish_acked("tasks/other", "{}", PublishProperties::default())
        .await;
    assert_eq!(
        denied,
        PubAckReason::NotAuthorized,
        "a queue outside its list"
    );
    let denied = dev
        .publish_acked("devices/dev2/temp", "21", PublishProperties::default())
        .await;
    assert_eq!(
        denied,
        PubAckReason::NotAuthorized,
        "another device's space"
    );
    let ok = dev
        .publish_acked("tasks/mapper", "{}", PublishProperties::default())
        .await;
    assert_eq!(ok, PubAckReason::Success);
    assert_eq!(queued(&broker, "mapper"), 1);

    // 3.1.1: SUBACK 0x80; a denied publish is acknowledged and dropped.
    let mut dev3 = V4Peer::connect_with(broker.mqtt, "dev1:b", as_identity_v4("dev1")).await;
    assert_eq!(
        suback_v4(&mut dev3, "#").await,
        rumqttc::SubscribeReasonCode::Failure
    );
    assert_eq!(
        suback_v4(&mut dev3, "replies/dev1/#").await,
        rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)
    );
    dev3.publish("tasks/other", "{}").await;
    dev3.expect("puback", |p| matches!(p, rumqttc::Packet::PubAck(_)))
        .await;
    dev3.publish("tasks/mapper", "{}").await;
    dev3.expect("puback", |p| matches!(p, rumqttc::Packet::PubAck(_)))
        .await;
    assert_eq!(queued(&broker, "mapper"), 2);
    assert_eq!(queued(&broker, "other"), 0, "the denied task was dropped");
    assert!(!broker.engine.queues().iter().any(|q| q.name == "other"));

    assert_eq!(
        metric(&broker, "swarmq_acl_denied_total{action=\"subscribe\"} ").await,
        6
    );
    assert_eq!(
        metric(&broker, "swarmq_acl_denied_total{action=\"publish\"} ").await,
        3
    );
    // The HTTP side: an app identity's token is a viewer's, a device's is none.
    let (status, _) = Api::with_token(&broker, &token("ops"))
        .get("/identities")
        .await;
    assert_eq!(status, 403, "an app identity may not manage identities");
    let (status, _) = Api::with_token(&broker, &token("ops")).get("/queues").await;
    assert_eq!(status, 200, "an app identity views");
    let (status, _) = Api::with_token(&broker, &token("dev1"))
        .get("/queues")
        .await;
    assert_eq!(status, 401, "a device has no business on the API");
    let (status, _) = Api::new(&broker).get("/queues").await;
    assert_eq!(status, 401, "identities close the API");
    // The dashboard's recent denials.
    let api = Api::with_token(&broker, &token("root"));
    let (status, denials) = api.get("/access/denials").await;
    assert_eq!(status, 200, "{denials}");
    let list = denials["denials"].as_array().expect("a list");
    assert!(
        list.iter().any(|d| d["identity"] == "dev1"
            && d["action"] == "subscribe"
            && d["topic"] == "#"
            && d["addr"] == "127.0.0.1"),
        "{denials}"
    );
}

#[tokio::test]
async fn a_reply_topic_must_be_one_the_requester_may_publish_to() {
    let broker = secured("").await;
    let mut dev = V5Peer::connect_with(broker.mqtt, "dev1", as_identity("dev1")).await;
    let code = dev
        .publish_acked("tasks/mapper", "{}", reply_props("replies/dev2/x", "c"))
        .await;
    assert_eq!(
        code,
        PubAckReason::NotAuthorized,
        "Response Topic of another device"
    );
    let code = dev
        .publish_acked(
            "tasks/mapper",
            r#"{"reply_to": "tasks/other"}"#,
            PublishProperties::default(),
        )
        .await;
    assert_eq!(code, PubAckReason::NotAuthorized, "reply_to naming a queue");
    assert_eq!(queued(&broker, "mapper"), 0, "nothing of them stored");
    let code = dev
        .publish_acked("tasks/mapper", "{}", reply_props("replies/dev1/x", "c"))
        .await;
    assert_eq!(code, PubAckReason::Success);

    // 3.1.1: dropped, and another device listening there hears nothing.
    let mut dev2 = V5Peer::connect_with(broker.mqtt, "dev2", as_identity("dev2")).await;
    dev2.subscribe("replies/dev2/#").await;
    let dev3 = V4Peer::connect_with(broker.mqtt, "dev1:v4", as_identity_v4("dev1")).await;
    dev3.publish(
        "tasks/mapper",
        r#"{"id": "bad-reply", "reply_to": "replies/dev2/x"}"#,
    )
    .await;
    let api = Api::with_token(&broker, &token("root"));
    let record = api
        .get_until("/tasks/bad-reply", |v| v["status"] == "rejected")
        .await;
    assert!(
        record["error"]
            .as_str()
            .is_some_and(|e| e.contains("reply_topic_denied")),
        "{record}"
    );
    assert_eq!(queued(&broker, "mapper"), 1);
    // dev2 publishing to its own space reaches it; nothing came before.
    dev2.publish_acked("replies/dev2/x", "own", PublishProperties::default())
        .await;
    let first = dev2.next_publish().await;
    assert_eq!(
        &first.payload[..],
        b"own",
        "the broker published nothing there"
    );
    assert_eq!(
        metric(
            &broker,
            "swarmq_tasks_rejected_total{reason=\"reply_topic_denied\"} "
        )
        .await,
        3
    );
}

#[tokio::test]
async fn only_the_lease_holder_answers_and_the_worker_learns_the_requester() {
    let broker = secured("").await;
    let mut w1 = V5Peer::connect_with(broker.mqtt, "w1:0", as_identity("w1")).await;
    w1.subscribe("$share/g/tasks/mapper").await;
    crate::support::wait_consumers(&broker, "mapper", 1).await;
    let mut dev = V5Peer::connect_with(broker.mqtt, "dev1", as_identity("dev1")).await;
    dev.subscribe("replies/dev1/r").await;
    let code = dev
        .publish_acked(
            "tasks/mapper",
            r#"{"id": "t1", "args": [1]}"#,
            reply_props("replies/dev1/r", "c1"),
        )
        .await;
    assert_eq!(code, PubAckReason::Success);
    let delivery = w1.next_publish().await;
    let task = json(&delivery);
    assert_eq!(task["requester"], "dev1", "{task}");
    let props = delivery.properties.clone().expect("properties");
    assert!(
        props
            .user_properties
            .contains(&("swarmq-requester".to_string(), "dev1".to_string())),
        "{:?}",
        props.user_properties
    );
    let results = topic(&delivery).replace("tasks/", "swarmq/results/");
    let answer = |value: &str| {
        (
            json!({ "result": value }).to_string(),
            PublishProperties {
                correlation_data: Some(bytes::Bytes::from_static(b"t1")),
                ..PublishProperties::default()
            },
        )
    };

    // The device may not answer at all.
    let (body, p) = answer("forged by a device");
    assert_eq!(
        dev.publish_acked(&results, body, p).await,
        PubAckReason::NotAuthorized
    );
    // Another worker may publish answers, but not for a task it does not hold.
    let mut w2 = V5Peer::connect_with(broker.mqtt, "w2", as_identity("w2")).await;
    let (body, p) = answer("forged by w2");
    w2.publish_acked(&results, body, p).await;
    let w2v4 = V4Peer::connect_with(broker.mqtt, "w2:v4", as_identity_v4("w2")).await;
    w2v4.publish(
        &results,
        json!({"id": "t1", "result": "forged over 3.1.1"}).to_string(),
    )
    .await;
    let api = Api::with_token(&broker, &token("root"));
    eventually("the forged answers are counted", || async {
        metric(&broker, "swarmq_acl_denied_total{action=\"other\"} ").await >= 2
    })
    .await;
    let (_, record) = api.get("/tasks/t1").await;
    assert_eq!(record["status"], "running", "{record}");

    // Another connection of the lease holder's identity may answer (a
    // shell worker answers with mosquitto_pub).
    let mut w1_pub = V5Peer::connect_with(broker.mqtt, "w1:pub", as_identity("w1")).await;
    let (body, p) = answer("true");
    w1_pub.publish_acked(&results, body, p).await;
    let result = dev.next_publish().await;
    let result = json(&result);
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(
        result["result"], "true",
        "the one true result comes first: {result}"
    );
    assert_eq!(result["worker"], "w1:0");
    let record = api
        .get_until("/tasks/t1", |v| v["status"] == "success")
        .await;
    assert_eq!(record["requester"], "dev1");
    let (_, page) = api.get("/tasks?requester=dev1").await;
    assert_eq!(page["tasks"][0]["id"], "t1", "{page}");
    let (_, page) = api.get("/tasks?requester=dev2").await;
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(0), "{page}");
}

#[tokio::test]
async fn a_worker_takes_tasks_only_from_its_queues_and_reads_only_its_control_topic() {
    let broker = secured("").await;
    let mut w = V5Peer::connect_with(broker.mqtt, "w1:0", as_identity("w1")).await;
    for filter in [
        "$share/g/tasks/reduce",
        "$share/g/tasks/+",
        "tasks/mapper",
        "swarmq/control/w2",
    ] {
        let (code, _) = suback_v5(&mut w, filter).await;
        assert_eq!(code, SubscribeReasonCode::NotAuthorized, "{filter}");
    }
    for filter in [
        "$share/g/tasks/mapper",
        "swarmq/control/w1:0",
        "replies/w1/#",
    ] {
        let (code, _) = suback_v5(&mut w, filter).await;
        assert_eq!(
            code,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            "{filter}"
        );
    }
    let mut w3 = V4Peer::connect_with(broker.mqtt, "w1:v4", as_identity_v4("w1")).await;
    assert_eq!(
        suback_v4(&mut w3, "$share/g/tasks/reduce").await,
        rumqttc::SubscribeReasonCode::Failure
    );
    // Only the one allowed group membership made it a worker.
    crate::support::wait_consumers(&broker, "mapper", 1).await;
    assert!(!broker.engine.queues().iter().any(|q| q.name == "reduce"));
}

/// Publishes a broker request as `peer` and returns the answer on `reply`.
async fn ask(peer: &mut V5Peer, request_topic: &str, id: &str, reply: &str) -> Value {
    peer.publish_acked(
        request_topic,
        json!({ "id": id }).to_string(),
        reply_props(reply, "q"),
    )
    .await;
    json(&peer.next_publish().await)
}

#[tokio::test]
async fn devices_fetch_and_revoke_only_their_own_tasks() {
    let broker = secured("").await;
    let mut dev1 = V5Peer::connect_with(broker.mqtt, "dev1", as_identity("dev1")).await;
    dev1.subscribe("replies/dev1/#").await;
    for id in ["mine-1", "mine-2"] {
        let code = dev1
            .publish_acked(
                "tasks/mapper",
                json!({"id": id, "countdown": 600}).to_string(),
                PublishProperties::default(),
            )
            .await;
        assert_eq!(code, PubAckReason::Success);
    }
    let mut dev2 = V5Peer::connect_with(broker.mqtt, "dev2", as_identity("dev2")).await;
    dev2.subscribe("replies/dev2/#").await;
    let fetched = ask(&mut dev2, "swarmq/history/get", "mine-1", "replies/dev2/h").await;
    assert_eq!(fetched["status"], "denied", "{fetched}");
    let revoked = ask(&mut dev2, "swarmq/revoke", "mine-1", "replies/dev2/h").await;
    assert_eq!(revoked["status"], "denied", "{revoked}");
    assert_eq!(queued(&broker, "mapper"), 2, "still scheduled");

    let own = ask(&mut dev1, "swarmq/history/get", "mine-1", "replies/dev1/h").await;
    assert_eq!(own["status"], "scheduled", "{own}");
    assert_eq!(own["requester"], "dev1", "{own}");
    let own = ask(&mut dev1, "swarmq/revoke", "mine-1", "replies/dev1/h").await;
    assert_eq!(own["status"], "revoked", "{own}");
    // An app may revoke anyone's.
    let mut ops = V5Peer::connect_with(broker.mqtt, "ops", as_identity("ops")).await;
    ops.subscribe("replies/ops/#").await;
    let any = ask(&mut ops, "swarmq/revoke", "mine-2", "replies/ops/h").await;
    assert_eq!(any["status"], "revoked", "{any}");
    assert_eq!(queued(&broker, "mapper"), 0);
    // A request whose reply topic is not the requester's is not answered there.
    let mut dev1b = V5Peer::connect_with(broker.mqtt, "dev1:b", as_identity("dev1")).await;
    dev1b
        .publish_acked(
            "swarmq/history/get",
            json!({"id": "mine-1"}).to_string(),
            reply_props("replies/dev2/stolen", "q"),
        )
        .await;
    // dev2's own message is the first it gets: the PUBACK above came after
    // the request was handled, so an answer there would have come first.
    dev2.publish_acked("replies/dev2/own", "own", PublishProperties::default())
        .await;
    let first = dev2.next_publish().await;
    assert_eq!(
        &first.payload[..],
        b"own",
        "answered on another device's topic"
    );
}

#[tokio::test]
async fn identities_added_while_running_take_effect_and_revoked_ones_are_disconnected_within_a_second()
 {
    let broker = secured("").await;
    let file = IdentityFile::in_dir(&broker.data_dir.path().join("data"));
    let new = |name: &str| NewIdentity {
        name: name.into(),
        role: IdentityRole::Device,
        queues: vec![],
        password: None,
        max_connections: None,
        publish_rate: None,
    };
    let token = file.add(new("late"), 1).expect("add");
    let added = Instant::now();
    eventually("the new identity connects", || {
        let token = token.clone();
        let broker = &broker;
        async move {
            let (code, _) = connack_v5(broker, "late", |o| {
                o.set_credentials("late", token);
            })
            .await;
            code == ConnectReturnCode::Success
        }
    })
    .await;
    println!("a new identity could connect after {:?}", added.elapsed());

    let t = token.clone();
    let mut peer = V5Peer::connect_with(broker.mqtt, "late:a", move |o| {
        o.set_credentials("late", t);
    })
    .await;
    file.revoke("late", 2).expect("revoke");
    let revoked = Instant::now();
    within("the connection closes", async {
        while peer.rx.recv().await.is_some() {}
    })
    .await;
    let took = revoked.elapsed();
    println!("revoked identity disconnected after {took:?}");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    let (code, _) = connack_v5(&broker, "late", |o| {
        o.set_credentials("late", token);
    })
    .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized, "a revoked identity");

    // Rotating a token closes the old connections; the new token works.
    let old = file.add(new("rot"), 3).expect("add");
    let o2 = old.clone();
    eventually("rot connects", || {
        let o2 = o2.clone();
        let broker = &broker;
        async move {
            connack_v5(broker, "rot", |o| {
                o.set_credentials("rot", o2);
            })
            .await
            .0 == ConnectReturnCode::Success
        }
    })
    .await;
    let o3 = old.clone();
    let mut peer = V5Peer::connect_with(broker.mqtt, "rot:a", move |o| {
        o.set_credentials("rot", o3);
    })
    .await;
    let fresh = file.rotate("rot").expect("rotate");
    within("the old token's connection closes", async {
        while peer.rx.recv().await.is_some() {}
    })
    .await;
    let (code, _) = connack_v5(&broker, "rot", |o| {
        o.set_credentials("rot", old);
    })
    .await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let (code, _) = connack_v5(&broker, "rot", |o| {
        o.set_credentials("rot", fresh);
    })
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
}

#[tokio::test]
async fn response_information_names_the_identitys_reply_space_when_asked() {
    let broker = secured("").await;
    let (code, props) = connack_v5(&broker, "dev1", |o| {
        o.set_credentials("dev1", token("dev1"));
        o.set_request_response_info(Some(1));
    })
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
    assert_eq!(
        props.and_then(|p| p.response_information).as_deref(),
        Some("replies/dev1/")
    );
    let (_, props) = connack_v5(&broker, "dev1", as_identity("dev1")).await;
    assert_eq!(props.and_then(|p| p.response_information), None);
}

#[tokio::test]
async fn limits_per_identity_and_repeated_failures_are_slowed_down() {
    let hash = TokenHash::new(&token("tight")).unwrap();
    let broker = secured(&format!(
        "[[auth.identities]]\nname = \"tight\"\nrole = \"device\"\ntoken_hash = \"{}\"\nmax_connections = 1\npublish_rate = 5.0\n",
        hash.as_str()
    ))
    .await;
    let mut first = V5Peer::connect_with(broker.mqtt, "tight:1", as_identity("tight")).await;
    let (code, _) = connack_v5(&broker, "tight:2", as_identity("tight")).await;
    assert_eq!(
        code,
        ConnectReturnCode::QuotaExceeded,
        "over max_connections"
    );
    assert_eq!(
        connack_v4(&broker, "tight:3", as_identity_v4("tight")).await,
        rumqttc::ConnectReturnCode::NotAuthorized
    );
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(
            first
                .publish_acked("replies/tight/x", "m", PublishProperties::default())
                .await,
        );
    }
    let over = codes
        .iter()
        .filter(|c| **c == PubAckReason::QuotaExceeded)
        .count();
    println!("publish_rate 5/s: {over} of 20 back-to-back publishes refused");
    assert!(over >= 10, "{codes:?}");
    assert!(
        codes[0] != PubAckReason::QuotaExceeded,
        "a burst is allowed"
    );

    // Failed logins from one address: the first three are answered at
    // once, then each waits longer (100 ms, 200 ms, 400 ms, …).
    let mut last = Duration::ZERO;
    for _ in 0..6 {
        let started = Instant::now();
        let (code, _) = connack_v5(&broker, "dev1", |o| {
            o.set_credentials("dev1", "sqt_wrong");
        })
        .await;
        assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
        last = started.elapsed();
    }
    println!("sixth failed login answered after {last:?}");
    assert!(last >= Duration::from_millis(400), "{last:?}");
}

#[tokio::test]
async fn mosquitto_clients_authenticate_with_a_token_and_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (files, clients) = crate::certs::make_certs_with_clients(dir.path(), &["dev1"]);
    let (cert, key) = clients[0].clone();
    let broker = TestBroker::start_with_config(
        &config(""),
        &[
            ("mqtt.tls_listen", "127.0.0.1:0"),
            ("mqtt.tls_cert_file", &files.cert.display().to_string()),
            ("mqtt.tls_key_file", &files.key.display().to_string()),
            ("mqtt.tls_client_ca_file", &files.ca.display().to_string()),
        ],
    )
    .await;
    let (token_w1, results) = (token("w1"), std::sync::Arc::new(std::sync::Mutex::new(0)));
    let r = results.clone();
    let worker = swarmq_worker::Worker::builder(&broker.url())
        .credentials("w1", &token_w1)
        .queue("mapper")
        .handler("mapper", move |ctx| {
            let r = r.clone();
            async move {
                *r.lock().unwrap() += 1;
                let n: i64 = ctx.arg(0)?;
                Ok(json!(n * 2))
            }
        })
        .build()
        .expect("worker");
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));
    crate::support::wait_consumers(&broker, "mapper", 1).await;

    let port = broker.port().to_string();
    let dev_token = token("dev1");
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-p", &port, "-u", "dev1", "-P", &dev_token, "-i", "dev1:sub",
        ])
        .args(["-t", "replies/dev1/#", "-C", "1", "-W", "20", "-q", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub");
    eventually("mosquitto_sub subscribed", || async {
        broker.engine.metrics().connections() >= 2
    })
    .await;
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-p", &port, "-u", "dev1", "-P", &dev_token, "-q", "1"])
        .args([
            "-t",
            "tasks/mapper",
            "-m",
            r#"{"args": [21], "reply_to": "replies/dev1/m"}"#,
        ])
        .output()
        .await
        .expect("mosquitto_pub");
    assert!(out.status.success(), "{out:?}");
    let got = within("the result", sub.wait_with_output()).await.unwrap();
    let result: Value = serde_json::from_slice(&got.stdout).expect("JSON result");
    assert_eq!(result["result"], 42, "{result}");
    assert_eq!(*results.lock().unwrap(), 1);

    // A denied subscription is reported by mosquitto_sub.
    let out = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-p", &port, "-u", "dev1", "-P", &dev_token, "-t", "#", "-V", "mqttv5",
        ])
        .args(["-W", "2"])
        .output()
        .await
        .expect("mosquitto_sub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("denied"), "{stderr}");

    // The client certificate with CN dev1 authenticates dev1 with no password.
    let tls_port = broker.mqtts.expect("TLS listener").port().to_string();
    let tls = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "-h",
            "localhost",
            "-p",
            tls_port.as_str(),
            "--cafile",
            &files.ca.display().to_string(),
            "-q",
            "1",
            "-t",
            "tasks/mapper",
            "-m",
            r#"{"args": [1]}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let with_cert = tokio::process::Command::new("mosquitto_pub")
        .args(tls(&[
            "--cert",
            &cert.display().to_string(),
            "--key",
            &key.display().to_string(),
            "-u",
            "dev1",
        ]))
        .output()
        .await
        .expect("mosquitto_pub");
    assert!(with_cert.status.success(), "{with_cert:?}");
    let without = tokio::process::Command::new("mosquitto_pub")
        .args(tls(&["-u", "dev1"]))
        .output()
        .await
        .expect("mosquitto_pub");
    assert!(
        !without.status.success(),
        "no certificate, no password: refused"
    );
    // Certificates are optional on this port: a token still works.
    let token_only = tokio::process::Command::new("mosquitto_pub")
        .args(tls(&["-u", "dev1", "-P", &dev_token, "-i", "dev1:tls"]))
        .output()
        .await
        .expect("mosquitto_pub");
    assert!(token_only.status.success(), "{token_only:?}");
    eventually("the three tasks ran", || async {
        *results.lock().unwrap() == 3
    })
    .await;
    stop.cancel();
    let _ = run.await;
}

#[tokio::test]
async fn a_required_client_certificate_is_required_even_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (files, clients) = crate::certs::make_certs_with_clients(dir.path(), &["w1"]);
    let broker = TestBroker::start_with_config(
        &config(""),
        &[
            ("mqtt.tls_listen", "127.0.0.1:0"),
            ("mqtt.tls_cert_file", &files.cert.display().to_string()),
            ("mqtt.tls_key_file", &files.key.display().to_string()),
            ("mqtt.tls_client_ca_file", &files.ca.display().to_string()),
            ("mqtt.tls_require_client_cert", "true"),
        ],
    )
    .await;
    let tls_port = broker.mqtts.expect("TLS listener").port().to_string();
    let ca = files.ca.display().to_string();
    let pub_with = |extra: Vec<String>| {
        let mut c = tokio::process::Command::new("mosquitto_pub");
        c.args([
            "-h",
            "localhost",
            "-p",
            &tls_port,
            "--cafile",
            &ca,
            "-q",
            "1",
        ])
        .args(["-t", "replies/w1/x", "-m", "hi"])
        .args(extra);
        c
    };
    let t = token("w1");
    let refused = pub_with(vec!["-u".into(), "w1".into(), "-P".into(), t.clone()])
        .output()
        .await
        .unwrap();
    assert!(
        !refused.status.success(),
        "a token alone is not enough here"
    );
    let (cert, key) = &clients[0];
    let ok = pub_with(vec![
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "-u".into(),
        "w1".into(),
    ])
    .output()
    .await
    .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    // The SDK connects with the same certificate.
    let client = swarmq_worker::Client::builder(&format!("mqtts://localhost:{tls_port}"))
        .ca_file(&files.ca)
        .username("w1")
        .client_cert(cert, key)
        .connect()
        .await
        .expect("the SDK connects with a client certificate");
    assert!(client.client_id().starts_with("w1:"));
}

#[tokio::test]
async fn the_development_profile_is_open_until_the_first_identity_exists() {
    let broker = TestBroker::start().await;
    // Any name and password will do while nobody is declared.
    let mut anon = V5Peer::connect(broker.mqtt, "anyone").await;
    let (code, _) = suback_v5(&mut anon, "#").await;
    assert_eq!(code, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    let (code, _) = connack_v5(&broker, "x", |o| {
        o.set_credentials("whoever", "whatever");
    })
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
    // The first identity ends anonymous access, for new and live clients.
    let file = IdentityFile::in_dir(&broker.data_dir.path().join("data"));
    file.add(
        NewIdentity {
            name: "first".into(),
            role: IdentityRole::Admin,
            queues: vec![],
            password: None,
            max_connections: None,
            publish_rate: None,
        },
        1,
    )
    .unwrap();
    within("the anonymous connection closes", async {
        while anon.rx.recv().await.is_some() {}
    })
    .await;
    eventually("anonymous clients are refused", || async {
        connack_v5(&broker, "anyone", |_| {}).await.0 == ConnectReturnCode::NotAuthorized
    })
    .await;
}

#[tokio::test]
async fn the_shell_and_python_workers_and_submit_sh_connect_as_identities() {
    use crate::support::ChildGuard;
    use std::process::Command;
    let hash = TokenHash::new(&token("wall")).unwrap();
    let broker = secured(&format!(
        "[[auth.identities]]\nname = \"wall\"\nrole = \"worker\"\ntoken_hash = \"{}\"\n",
        hash.as_str()
    ))
    .await;
    let port = broker.port().to_string();
    let dir = env!("CARGO_MANIFEST_DIR");
    let _shell = ChildGuard::group_leader(
        Command::new("setsid")
            .args(["sh", &format!("{dir}/devices/shell/worker.sh")])
            .env("PORT", &port)
            .env("SWARMQ_USERNAME", "wall")
            .env("SWARMQ_PASSWORD", token("wall"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("shell worker"),
    );
    let _python = ChildGuard::group_leader(
        Command::new("setsid")
            .args([
                "python3",
                &format!("{dir}/devices/python-worker/worker.py"),
                "--port",
                &port,
                "--queue",
                "mapper",
            ])
            .env("SWARMQ_USERNAME", "w2")
            .env("SWARMQ_PASSWORD", token("w2"))
            .stdout(Stdio::null())
            .spawn()
            .expect("python worker"),
    );
    crate::support::wait_consumers(&broker, "word_count", 1).await;
    crate::support::wait_consumers(&broker, "mapper", 1).await;

    // submit.sh as dev2: its reply topic under replies/dev2/.
    let out = within(
        "submit.sh",
        tokio::process::Command::new("sh")
            .arg(format!("{dir}/devices/shell/submit.sh"))
            .arg("Lilliput")
            .env("PORT", &port)
            .env("SWARMQ_USERNAME", "dev2")
            .env("SWARMQ_PASSWORD", token("dev2"))
            .output(),
    )
    .await
    .expect("submit.sh runs");
    assert!(out.status.success(), "{out:?}");
    let result: Value = serde_json::from_slice(&out.stdout).expect("a JSON result");
    assert_eq!(result["result"], json!(["Lilliput", 1]), "{result}");
    assert!(
        result["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("wall:")),
        "{result}"
    );

    // The SDK client as dev1, served by the Python worker as w2.
    let client = swarmq_worker::Client::builder(&broker.url())
        .credentials("dev1", token("dev1"))
        .connect()
        .await
        .expect("dev1 connects");
    assert!(
        client.client_id().starts_with("dev1:"),
        "{}",
        client.client_id()
    );
    let req = swarmq_worker::wire::TaskRequest {
        task: Some("mapper".into()),
        args: vec![json!("Brobdingnag")],
        ..Default::default()
    };
    let r = within("python result", client.submit("mapper", req).await.unwrap())
        .await
        .unwrap();
    assert!(
        r.worker.as_deref().is_some_and(|w| w.starts_with("w2:")),
        "{r:?}"
    );
    assert_eq!(r.into_result().unwrap(), json!(["Brobdingnag", 1]));
}

#[tokio::test]
async fn a_deny_rule_refuses_its_filter_and_keeps_its_topics_from_broad_subscriptions() {
    // The rule Paho's test_subscribe_failure expects, on the open profile.
    let broker = TestBroker::start_with_config(
        "[[auth.acl]]\npermission = \"deny\"\naction = \"subscribe\"\ntopic = \"test/nosubscribe\"\n\
         [[auth.acl]]\npermission = \"deny\"\naction = \"subscribe\"\ntopic = \"test/legacy\"\nreason_code = \"unspecified_error\"\n",
        &[],
    )
    .await;
    let mut sub = V5Peer::connect(broker.mqtt, "watcher").await;
    let (code, reason) = suback_v5(&mut sub, "test/nosubscribe").await;
    assert_eq!(code, SubscribeReasonCode::NotAuthorized);
    assert!(reason.is_some_and(|r| r.contains("test/nosubscribe")));
    // A rule may answer 0x80 instead, for clients that know no other failure.
    let (code, _) = suback_v5(&mut sub, "test/legacy").await;
    assert_eq!(code, SubscribeReasonCode::Unspecified);
    let (code, _) = suback_v5(&mut sub, "#").await;
    assert_eq!(
        code,
        SubscribeReasonCode::Success(QoS::AtLeastOnce),
        "a broad filter is granted"
    );
    let mut v4 = V4Peer::connect(broker.mqtt, "watcher-v4").await;
    assert_eq!(
        suback_v4(&mut v4, "test/nosubscribe").await,
        rumqttc::SubscribeReasonCode::Failure
    );
    let mut publisher = V5Peer::connect(broker.mqtt, "pub").await;
    publisher
        .publish_acked("test/nosubscribe", "secret", PublishProperties::default())
        .await;
    publisher
        .publish_acked("test/ok", "fine", PublishProperties::default())
        .await;
    let first = sub.next_publish().await;
    assert_eq!(
        topic(&first),
        "test/ok",
        "the denied topic was not delivered"
    );
}

#[tokio::test]
async fn the_same_deny_paths_over_mqtt_3_1_1() {
    let broker = secured("").await;
    // A device's answer, and a fetch and revoke of another device's task.
    let mut w1 = V4Peer::connect_with(broker.mqtt, "w1", as_identity_v4("w1")).await;
    w1.subscribe("$share/g/tasks/mapper").await;
    crate::support::wait_consumers(&broker, "mapper", 1).await;
    let mut dev1 = V4Peer::connect_with(broker.mqtt, "dev1", as_identity_v4("dev1")).await;
    dev1.subscribe("replies/dev1/#").await;
    dev1.publish(
        "tasks/mapper",
        json!({"id": "v4-task", "reply_to": "replies/dev1/r"}).to_string(),
    )
    .await;
    let delivery = w1.next_publish().await;
    let task: Value = serde_json::from_slice(&delivery.payload).unwrap();
    assert_eq!(task["requester"], "dev1");
    let results = task["reply_to"].as_str().unwrap().to_string();
    // The device's forged answer is acknowledged and dropped.
    dev1.publish(
        &results,
        json!({"id": "v4-task", "result": "forged"}).to_string(),
    )
    .await;
    let mut dev2 = V4Peer::connect_with(broker.mqtt, "dev2", as_identity_v4("dev2")).await;
    dev2.subscribe("replies/dev2/#").await;
    for topic in ["swarmq/history/get", "swarmq/revoke"] {
        dev2.publish(
            topic,
            json!({"id": "v4-task", "reply_to": "replies/dev2/h"}).to_string(),
        )
        .await;
        let answer: Value = serde_json::from_slice(&dev2.next_publish().await.payload).unwrap();
        assert_eq!(answer["status"], "denied", "{topic}: {answer}");
    }
    // The holder's answer is the one result.
    w1.publish(
        &results,
        json!({"id": "v4-task", "result": "true"}).to_string(),
    )
    .await;
    let result: Value = serde_json::from_slice(&dev1.next_publish().await.payload).unwrap();
    assert_eq!(result["result"], "true", "{result}");

    // Revocation closes a 3.1.1 connection too.
    let file = IdentityFile::in_dir(&broker.data_dir.path().join("data"));
    let t = file
        .add(
            NewIdentity {
                name: "v4late".into(),
                role: IdentityRole::Device,
                queues: vec![],
                password: None,
                max_connections: None,
                publish_rate: None,
            },
            1,
        )
        .unwrap();
    let tok = t.clone();
    eventually("v4late connects", || {
        let tok = tok.clone();
        let broker = &broker;
        async move {
            connack_v4(broker, "v4late", |o| {
                o.set_credentials("v4late", tok);
            })
            .await
                == rumqttc::ConnectReturnCode::Success
        }
    })
    .await;
    let mut peer = V4Peer::connect_with(broker.mqtt, "v4late:a", move |o| {
        o.set_credentials("v4late", t);
    })
    .await;
    file.revoke("v4late", 2).unwrap();
    within("the 3.1.1 connection closes", async {
        while peer.rx.recv().await.is_some() {}
    })
    .await;
}
