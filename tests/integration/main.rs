#![allow(unreachable_pub, dead_code)]

//! Integration tests: the real broker in-process on ephemeral ports, driven by
//! real MQTT clients (rumqttc, the SDK, mosquitto_pub/sub, Python paho-mqtt),
//! and the real binary where a process must die.

mod access;
mod api;
mod broker;
mod certs;
mod cli;
mod contract;
mod dispatch;
mod durability;
mod fuzz;
mod hardening;
mod http;
mod interop;
mod lifecycle;
mod support;
mod tls;
mod workflows;
